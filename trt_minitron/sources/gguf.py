"""GGUF files as a Source, one tensor at a time.

gguf's GGUFReader parses the metadata and the tensor table; each tensor's bytes are then read with a
plain read of just that tensor (or of its row block) and dequantized on its own with gguf.quants, so
memory stays near the largest tensor in float32, not the model. The reader's memory map is dropped
after parsing: touched pages of a map count towards RSS.

Layout rules are llama.cpp's converter (convert_hf_to_gguf.py) undone, as transformers' GGUF loader
does: names through gguf's own TensorNameMap; `llama` Q/K rows permuted per head for interleaved
rope, permuted back; `nemotron` layernorm1p gammas stored as gamma + 1, read back minus 1.
The config from the metadata is gguf_config.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError, MissingDependencyError
from .base import TensorInfo
from .gguf_config import ARCHITECTURES, ROPE_FREQS, hf_config, llama3_from_rope_freqs

_HF_GLOBAL = ("model.embed_tokens", "model.norm", "lm_head")
_HF_LAYER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm",
             "self_attn.rotary_emb.inv_freq")
CHUNK_BYTES = 8 * 2**20  # float32 output per dequantization step: small enough to stay out of the heap


@dataclass(frozen=True)
class GGUFTensor:
    gguf_name: str
    qtype: int  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # torch order: GGUF dims reversed
    offset: int  # absolute byte offset in the file
    nbytes: int
    permute_heads: int = 0  # llama q/k: heads whose rows llama.cpp interleaved for rope
    minus_one: bool = False  # nemotron norm weights: stored as gamma + 1

    @property
    def rows(self) -> int:
        """Rows as read: dim 0 of a matrix; a vector is one row (quantization blocks run along the last dim)."""
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def row_bytes(self) -> int:
        return self.nbytes // self.rows

    @property
    def row_numel(self) -> int:
        return math.prod(self.shape) // self.rows


def _import_gguf():
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("reading .gguf needs the `gguf` package: pip install gguf") from None
    return gguf


class GGUFSource:
    """A .gguf file (llama or nemotron architecture) presented with HF names, dequantized per tensor."""

    def __init__(self, path: Path):
        self.path = path
        self._gguf = gguf = _import_gguf()
        meta, table = _parse(gguf, path)
        arch = meta.get("general.architecture")
        if arch not in ARCHITECTURES:
            raise ConfigError(f"{path}: GGUF architecture {arch!r} is not supported; supported: "
                              + ", ".join(f"{g} ({hf})" for g, (hf, _) in ARCHITECTURES.items()))
        self.meta = meta
        rope_freqs = table.pop(ROPE_FREQS, None)
        hf = hf_config(meta, arch, has_output="output.weight" in table, where=str(path))
        if hf["vocab_size"] is None and "token_embd.weight" in table:
            hf["vocab_size"] = table["token_embd.weight"].shape[0]
        if rope_freqs is not None:
            hf["rope_scaling"] = llama3_from_rope_freqs(self._decode(rope_freqs, 0, 1).float(), hf, str(path))
        self.config = ModelConfig.from_hf(hf, where=str(path))
        self._tensors = _hf_tensors(gguf, arch, self.config, table, str(path))
        self._check_types()
        self._infos = {name: TensorInfo(t.shape, _out_dtype(gguf, t)) for name, t in self._tensors.items()}
        self.description = f"GGUF file {path} ({arch}, dequantized per tensor)"

    def tensors(self) -> dict[str, TensorInfo]:
        return self._infos

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        t = self._tensors[name]
        if dim == 0 and len(t.shape) > 1:  # only the rows asked for are read and dequantized
            stop = t.rows if stop is None else stop
            if not t.permute_heads:
                return self._decode(t, start, stop)
            per_head = t.rows // t.permute_heads  # whole heads, un-permuted, then the rows asked for
            first, last = start // per_head * per_head, -(-stop // per_head) * per_head
            return _unpermute(self._decode(t, first, last), (last - first) // per_head)[start - first: stop - first]
        full = self._decode(t, 0, t.rows).reshape(t.shape)
        if t.permute_heads:
            full = _unpermute(full, t.permute_heads)
        if dim is None:
            return full
        stop = t.shape[dim] if stop is None else stop
        return full.narrow(dim, start, stop - start).clone()  # column blocks are strided on disk

    def write_tokenizer(self, dst: Path) -> list[str]:
        if "tokenizer.ggml.model" not in self.meta:
            return []
        from transformers import AutoTokenizer

        try:  # transformers builds the tokenizer from the GGUF metadata; no weights are read
            tokenizer = AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name)
        except (ValueError, OSError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.path}: transformers cannot build the tokenizer from this GGUF ({e})") from None
        before = {p.name for p in dst.iterdir()}
        tokenizer.save_pretrained(dst)
        return sorted({p.name for p in dst.iterdir()} - before)

    def close(self) -> None:
        self._tensors = {}

    def _decode(self, t: GGUFTensor, start: int, stop: int) -> torch.Tensor:
        """Rows [start:stop] of `t`: dequantized to float32 in row chunks, or as stored for F32/F16/BF16."""
        q = self._gguf.GGMLQuantizationType
        stored = {q.F32: torch.float32, q.F16: torch.float16, q.BF16: torch.bfloat16}.get(t.qtype)
        with open(self.path, "rb", buffering=0) as f:
            if stored is not None:
                out = self._raw(f, t, start, stop).view(stored)
            else:  # chunks bound the temporaries; blocks never span rows, so each chunk dequantizes alone
                out = torch.empty((stop - start, t.row_numel), dtype=torch.float32)
                step = max(1, CHUNK_BYTES // (t.row_numel * 4))
                for first in range(start, stop, step):
                    last = min(stop, first + step)
                    blocks = self._raw(f, t, first, last).numpy().reshape(last - first, t.row_bytes)
                    out[first - start: last - start] = torch.from_numpy(
                        self._gguf.quants.dequantize(blocks, q(t.qtype)))
        out = out.reshape((stop - start, *t.shape[1:])) if len(t.shape) > 1 else out.reshape(-1)
        if t.minus_one:  # in float32, as transformers' Nemotron processor does
            out = out.float() - 1
        return out

    def _raw(self, f, t: GGUFTensor, start: int, stop: int) -> torch.Tensor:
        """The stored bytes of rows [start:stop], read into a fresh buffer (no mmap: touched pages count as RSS)."""
        buf = torch.empty((stop - start) * t.row_bytes, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        f.seek(t.offset + start * t.row_bytes)
        got = 0
        while got < len(view):
            n = f.readinto(view[got:])
            if not n:
                raise CheckpointError(f"{self.path}: unexpected end of file reading {t.gguf_name} (truncated?)")
            got += n
        return buf

    def _check_types(self) -> None:
        """Refuse, before anything is written, a quantization type gguf.quants cannot dequantize."""
        q, seen = self._gguf.GGMLQuantizationType, {}
        for name, t in self._tensors.items():
            if t.qtype in seen or t.qtype in (q.F32, q.F16, q.BF16):
                continue
            _, type_size = self._gguf.GGML_QUANT_SIZES[q(t.qtype)]
            try:
                self._gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), q(t.qtype))
                seen[t.qtype] = True
            except (NotImplementedError, ValueError):
                raise CheckpointError(f"{self.path}: tensor {t.gguf_name} ({name}) has type {q(t.qtype).name}, "
                                      "which gguf.quants cannot dequantize") from None


def _unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's rope permutation: it wrote each head's rows as (half, 2) pairs; HF keeps (2, half)."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape).contiguous()


def _out_dtype(gguf, t: GGUFTensor) -> torch.dtype:
    q = gguf.GGMLQuantizationType
    if t.minus_one:
        return torch.float32
    return {q.F16: torch.float16, q.BF16: torch.bfloat16}.get(t.qtype, torch.float32)


def _parse(gguf, path: Path) -> tuple[dict, dict[str, GGUFTensor]]:
    """Metadata (scalars and strings; arrays as their length) and the tensor table, checked against the file size."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file, not a GGUF")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OverflowError, TypeError) as e:
        if "magic" in str(e):
            reason = "not a GGUF file (bad magic)"
        elif isinstance(e, IndexError):  # the parser ran out of bytes
            reason = f"truncated: the {size}-byte file ends inside its metadata"
        elif "cannot reshape" in str(e):  # a tensor's data view came out short
            reason = f"truncated: the {size}-byte file ends before the tensor data does"
        else:
            reason = f"corrupt GGUF ({type(e).__name__}: {e})"
        raise CheckpointError(f"{path}: {reason}") from None
    meta = {}
    for key, field in reader.fields.items():
        if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
            meta[key] = len(field.data)
        elif field.types:
            meta[key] = field.contents()
    table, allowed = {}, set(int(v) for v in gguf.GGMLQuantizationType)
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise CheckpointError(f"{path}: tensor {t.name} ends at byte {end}, past the end of the "
                                  f"{size}-byte file (truncated?)")
        if int(t.tensor_type) not in allowed or not len(t.shape):
            raise CheckpointError(f"{path}: tensor {t.name} has an unknown type or no dimensions")
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        table[t.name] = GGUFTensor(t.name, int(t.tensor_type), shape, int(t.data_offset), int(t.n_bytes))
    del reader  # closes the memory map once nothing refers to it
    return meta, table


def _hf_tensors(gguf, arch: str, cfg: ModelConfig, table: dict[str, GGUFTensor], where: str) -> dict[str, GGUFTensor]:
    """HF name -> tensor, names through gguf's TensorNameMap (the table llama.cpp's converter writes with)."""
    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    names = gguf.get_tensor_name_map(arch_enum, cfg.num_hidden_layers)
    hf_bases = [*_HF_GLOBAL, *(f"model.layers.{i}.{s}" for i in range(cfg.num_hidden_layers) for s in _HF_LAYER)]
    to_hf = {}
    for base in hf_bases:
        gguf_base = names.get_name(base)
        if gguf_base is not None:
            for suffix in (".weight", ".bias"):
                to_hf[gguf_base + suffix] = base + suffix
    unknown = sorted(n for n in table if n not in to_hf)
    if unknown:
        raise CheckpointError(f"{where}: GGUF tensors with no Hugging Face name for {arch}: {unknown[:5]}")
    out = {}
    for gguf_name, t in table.items():
        hf = to_hf[gguf_name]
        heads = 0
        if arch == "llama" and hf.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_attention_heads if "q_proj" in hf else cfg.num_key_value_heads
        minus_one = arch == "nemotron" and hf.endswith("norm.weight")
        out[hf] = GGUFTensor(t.gguf_name, t.qtype, t.shape, t.offset, t.nbytes, heads, minus_one)
    return out

"""GGUF files as a Source, one tensor at a time.

format.py parses the metadata and the tensor table (every length checked); dequant.py reads
each tensor, or just the row block asked for, with plain reads and dequantizes it on its own, so memory
stays near the largest tensor in float32, not the model.

Layout rules are llama.cpp's converter (convert_hf_to_gguf.py) undone, as transformers' GGUF loader
does: names through gguf's own TensorNameMap; what the converter did per architecture is asked from the Arch
(Llama's Q/K rows permuted per head for interleaved rope, permuted back; Nemotron's layernorm1p gammas stored
as gamma + 1, read back minus 1).
The config from the metadata is config.py's, the tokenizer tokenizer.py's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ...archs import arch_for_gguf
from ...archs.config import ModelConfig
from ...errors import CheckpointError
from ...tensors.claims import check_layer_count, layer_indices
from ..base import TensorInfo
from .config import ROPE_FREQS, check_architecture, hf_config, llama3_from_rope_freqs
from .dequant import read_rows
from .format import GGUFTensor, import_gguf, read_header
from .tokenizer import save_tokenizer

_HF_GLOBAL = ("model.embed_tokens", "model.norm", "lm_head")
_HF_LAYER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm",
             "self_attn.rotary_emb.inv_freq")


class GGUFSource:
    """A .gguf file (llama or nemotron architecture) presented with HF names, dequantized per tensor."""

    def __init__(self, path: Path):
        self.path = path
        self._gguf = gguf = import_gguf()
        header = read_header(path)
        meta, table = header.metadata, dict(header.tensors)
        arch = meta.get("general.architecture")
        check_architecture(arch, str(path))
        self.meta = meta
        rope_freqs = table.pop(ROPE_FREQS, None)
        hf = hf_config(meta, arch, has_output="output.weight" in table, where=str(path))
        if hf["vocab_size"] is None and "token_embd.weight" in table:
            hf["vocab_size"] = table["token_embd.weight"].shape[0]
        if rope_freqs is not None:
            hf["rope_scaling"] = llama3_from_rope_freqs(self._decode(rope_freqs, 0, 1).float(), hf, str(path))
        self.config = ModelConfig.from_hf(hf, where=str(path))
        check_layer_count(f"{path}: GGUF metadata says {arch}.block_count", self.config.num_hidden_layers,
                          layer_indices(table, r"blk\.(\d+)\."), "its tensors", "blk.{}")  # before any loop over it
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
        return _copy(full.narrow(dim, start, stop - start))  # column blocks are strided on disk

    def write_tokenizer(self, dst: Path) -> list[str]:
        if "tokenizer.ggml.model" not in self.meta:
            return []
        return save_tokenizer(self.meta, self.path, dst)

    def close(self) -> None:
        self._tensors = {}

    def _decode(self, t: GGUFTensor, start: int, stop: int) -> torch.Tensor:
        """Rows [start:stop] of `t`: dequantized to float32, or as stored for F32/F16/BF16."""
        q = self._gguf.GGMLQuantizationType
        stored = {q.F32: torch.float32, q.F16: torch.float16, q.BF16: torch.bfloat16}.get(t.qtype)
        out = read_rows(self.path, t, start, stop, stored)
        out = out.reshape((stop - start, *t.shape[1:])) if len(t.shape) > 1 else out.reshape(-1)
        if t.norm_offset:  # in float32, as transformers' Nemotron processor does
            out = out.float() - t.norm_offset
        return out

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
    return _copy(w.reshape(heads, half, 2, *w.shape[1:]).transpose(1, 2)).reshape(w.shape)


_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _copy(view: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of a strided view, made by numpy (via a same-size integer view, so bf16 works too).

    torch would wake its intra-op threads for each copy: on a busy 2-core machine that made the q/k
    un-permutes of SmolLM2 8x slower (0.33 s against 0.04 s).
    """
    ints = view.view(_SAME_SIZE_INT[view.element_size()]).numpy()
    return torch.from_numpy(np.ascontiguousarray(ints)).view(view.dtype)


def _out_dtype(gguf, t: GGUFTensor) -> torch.dtype:
    q = gguf.GGMLQuantizationType
    if t.norm_offset:
        return torch.float32
    return {q.F16: torch.float16, q.BF16: torch.bfloat16}.get(t.qtype, torch.float32)


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
    rules = arch_for_gguf(arch)
    permuted = {"self_attn.q_proj.weight": cfg.num_attention_heads,
                "self_attn.k_proj.weight": cfg.num_key_value_heads} if rules.gguf_permuted_qk else {}
    out = {}
    for gguf_name, t in table.items():
        hf = to_hf[gguf_name]
        short = hf.split(".", 3)[3] if hf.startswith("model.layers.") else hf  # name under model.layers.{i}.
        offset = rules.gguf_norm_offset if short in rules.hf_norm_weights else 0.0
        out[hf] = dataclasses.replace(t, permute_heads=permuted.get(short, 0), norm_offset=offset)
    return out

"""Reading a quantized TensorRT-LLM checkpoint: config.json's `quantization` block, then per rank the
dequantized linear layers (`QuantLinear`) and FP8 KV-cache scales (`KVQuant`).

This is the interface the reference model uses: `QuantSpec.from_config(config)` is None for an
unquantized checkpoint; otherwise `spec.linear(rank_tensors, "transformer.layers.0.attention.qkv")`
gives one rank's layer, `cat_rows` / `cat_cols` (quant_formats.py) merge ranks the way tensor-parallel
execution combines them, and `spec.kv_quant(rank_tensors, "transformer.layers.0.attention")`
the KV-cache rounding. The float32 pre-quant scales quantize keeps beside the checkpoint (which stores them
rounded to its dtype) are the sidecar PQS_SIDECAR.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterator, Mapping

import torch

from ..archs.base import COLUMN_LINEARS, LINEARS  # noqa: F401 - the linears (one home), re-exported for readers here
from ..errors import CheckpointError
from ..tensors.dtypes import BY_SAFETENSORS, torch_dtype
from ..tensors.info import TensorInfo
from ..tensors.stheader import read_header
from ..tensors.stwriter import write_safetensors
from .quant_formats import ASF, KV_SCALE, PQS, WEIGHT, WSF, WSF2, KVQuant, QuantFormat, QuantLinear, format_for_algo

KV_CACHE_ALGOS = ("FP8",)
QUANT_CHECKPOINT_DTYPES = ("bfloat16", "float16")  # what ModelOpt's exporters write beside the quantized weights
# ModelOpt 0.47 also writes the K and V scales apart; TensorRT-LLM's preprocess_weights replaces
# kv_cache_scaling_factor by max(k, v) when they are present (models/modeling_utils.py, file id 1189552800).
K_SCALE, V_SCALE = "k_cache_scaling_factor", "v_cache_scaling_factor"
SCALES = (WSF, WSF2, ASF, PQS, KV_SCALE, K_SCALE, V_SCALE)  # every scale tensor's last name component
# The modules TensorRT-LLM leaves unquantized when config.json lists no exclude_modules (quantize_layers in
# tensorrt_llm/quantization/quantize.py, code-index file id 2456403896); a non-empty list replaces it.
TRTLLM_DEFAULT_EXCLUDE = ("*lm_head", "*router", "*vocab_embedding", "*position_embedding", "*block_embedding",
                          "*shared_expert_gate")


def is_scale(name: str) -> bool:
    """Whether rank-file tensor `name` is a quantization scale (every one must be finite and > 0)."""
    return name.rsplit(".", 1)[-1] in SCALES


PQS_SIDECAR = "trt_minitron_quantize.safetensors"
# The same sidecar in a Hugging Face folder: not named *.safetensors, which vLLM and TensorRT-LLM's PyTorch backend
# would load as weights (they read every *.safetensors of a folder without an index).
PQS_SIDECAR_HF = "trt_minitron_quantize.scales"
PQS_KEY = "pre_quant_scale"  # sidecar name: "<HF module>.pre_quant_scale", float32 [in]


@dataclass(frozen=True)
class QuantSpec:
    """config.json `quantization` of a checkpoint ModelOpt quantized."""

    format: QuantFormat
    kv_cache_quant_algo: str | None
    dtype: torch.dtype  # config.json `dtype`: unquantized tensors and pre-quant scales are stored in it
    exclude_modules: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: dict, where: str = "config.json") -> QuantSpec | None:
        """None when the checkpoint's weights are not quantized (quant_algo null or absent)."""
        q = config.get("quantization") or {}
        algo, kv = q.get("quant_algo"), q.get("kv_cache_quant_algo")
        if kv is not None and kv not in KV_CACHE_ALGOS:
            raise CheckpointError(f"unsupported kv_cache_quant_algo {kv!r} in {where}; supported: "
                                  f"{', '.join(KV_CACHE_ALGOS)}")
        if algo is None:
            if kv is not None:
                raise CheckpointError(f"{where}: an FP8 KV cache without quantized weights is not supported here")
            return None
        fmt = format_for_algo(algo, where)
        group = q.get("group_size")
        if fmt.group_sizes and group is not None:
            if int(group) not in fmt.group_sizes:
                raise CheckpointError(f"{where}: {algo} with group_size {group} is not supported; "
                                      f"supported: {', '.join(map(str, fmt.group_sizes))}")
            fmt = type(fmt)(int(group))
        if q.get("has_zero_point"):
            raise CheckpointError(f"{where}: {algo} with has_zero_point=true is not supported")
        name = config.get("dtype", "bfloat16")
        if name not in QUANT_CHECKPOINT_DTYPES:
            raise CheckpointError(f"{where}: dtype {name!r} is not one a quantized checkpoint uses "
                                  f"({', '.join(QUANT_CHECKPOINT_DTYPES)})")
        exclude = q.get("exclude_modules") or []
        if not isinstance(exclude, list) or not all(isinstance(p, str) for p in exclude):
            raise CheckpointError(f"{where}: exclude_modules must be a list of module name patterns, got {exclude!r}")
        spec = cls(fmt, kv, torch_dtype(name), tuple(exclude))
        if spec.quantizes("lm_head"):
            raise CheckpointError(f"{where}: exclude_modules {exclude} does not exclude lm_head, so TensorRT-LLM would "
                                  f"load lm_head.weight as a {algo} layer with scales; checkpoints here keep lm_head "
                                  "unquantized (ModelOpt's exporters exclude it): add \"lm_head\"")
        return spec

    @property
    def quant_algo(self) -> str:
        return self.format.quant_algo

    def quantizes(self, prefix: str) -> bool:
        """Whether the linear `prefix` (e.g. transformer.layers.0.mlp.fc) is quantized: not in exclude_modules
        (fnmatch patterns, as TensorRT-LLM's quantize_layers matches them; its default list when there are none)."""
        return not any(fnmatchcase(prefix, p) for p in self.exclude_modules or TRTLLM_DEFAULT_EXCLUDE)

    def linear_tensors(self, tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under `prefix.` (weight, scales), keyed by suffix."""
        start = prefix + "."
        return {n[len(start):]: t for n, t in tensors.items() if n.startswith(start) and "." not in n[len(start):]}

    def linear(self, tensors: Mapping[str, torch.Tensor], prefix: str) -> QuantLinear:
        """One rank's linear layer `prefix` (e.g. transformer.layers.0.mlp.fc), checked and dequantized."""
        t = self.linear_tensors(tensors, prefix)
        self.format.check(t, prefix, self.dtype)
        return self.format.dequantize(t)

    def kv_quant(self, tensors: Mapping[str, torch.Tensor], attention_prefix: str) -> KVQuant | None:
        """The FP8 KV-cache rounding of one layer (None without an FP8 KV cache).

        The scale TensorRT-LLM uses: kv_cache_scaling_factor, or max(k, v) where the K and V scales are
        stored apart (its preprocess_weights); both present and different is refused."""
        if self.kv_cache_quant_algo is None:
            return None
        names = {s: f"{attention_prefix}.{s}" for s in (KV_SCALE, K_SCALE, V_SCALE)}
        have = {s: _scale_1(tensors[n], n) for s, n in names.items() if n in tensors}
        if K_SCALE in have and V_SCALE in have:
            scale = torch.maximum(have[K_SCALE], have[V_SCALE])
            if KV_SCALE in have and not torch.equal(have[KV_SCALE], scale):
                raise CheckpointError(f"{names[KV_SCALE]} is {float(have[KV_SCALE]):g}, but max({names[K_SCALE]}, "
                                      f"{names[V_SCALE]}) = {float(scale):g}, which TensorRT-LLM would use instead")
        elif KV_SCALE in have:
            scale = have[KV_SCALE]
        else:
            raise CheckpointError(f"missing {names[KV_SCALE]} (kv_cache_quant_algo {self.kv_cache_quant_algo})")
        return KVQuant(scale)

    def expected_tensors(self, plain: Mapping[str, TensorInfo]) -> dict[str, TensorInfo]:
        """One rank file's tensors from the unquantized export's (`plain`): each quantized linear's weight
        becomes the format's tensors (weight and scales, this rank's shapes) and every attention gets its
        KV-cache scale; everything else is as `export` writes it."""
        out = {}
        for name, info in plain.items():
            prefix = linear_prefix(name)
            if prefix is not None and self.quantizes(prefix):
                out.update({f"{prefix}.{s}": t for s, t in self.format.linear_tensors(*info.shape, self.dtype).items()})
            else:
                out[name] = info
            if self.kv_cache_quant_algo and name.endswith(".attention.dense.weight"):
                out[name.replace("dense.weight", KV_SCALE)] = TensorInfo((1,), torch.float32)
        return out


    def optional_tensors(self, plain: Mapping[str, tuple[int, ...]]) -> dict[str, TensorInfo]:
        """Tensors a rank file may hold besides `expected_tensors`: the K and V scales ModelOpt also writes (read
        as TensorRT-LLM reads them, kv_quant), under every attention of an FP8 KV cache."""
        if not self.kv_cache_quant_algo:
            return {}
        return {n.replace("dense.weight", s): TensorInfo((1,), torch.float32) for n in plain
                if n.endswith(".attention.dense.weight") for s in (K_SCALE, V_SCALE)}


def _scale_1(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.numel() != 1 or t.dtype != torch.float32:
        raise CheckpointError(f"{name} is {str(t.dtype).removeprefix('torch.')}{list(t.shape)}, expected float32 [1]")
    return t.float().reshape(())


def linear_prefix(name: str) -> str | None:
    """`transformer.layers.3.mlp.fc` for `transformer.layers.3.mlp.fc.weight`, None for any other tensor."""
    if not name.startswith("transformer.layers.") or not name.endswith(f".{WEIGHT}"):
        return None
    prefix = name.removesuffix(f".{WEIGHT}")
    parts = prefix.split(".", 3)
    return prefix if len(parts) == 4 and parts[3] in LINEARS else None



class RankTensors(Mapping[str, torch.Tensor]):
    """One rank file's tensors, each read when asked for (a layer at a time, never the whole file)."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        try:
            self._file = safe_open(str(path), "pt")
        except Exception as e:  # safetensors raises its own error types for missing or corrupt files
            raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None
        self.path = path
        self._names = list(self._file.keys())

    def info(self, name: str) -> TensorInfo:
        """Shape and dtype from the header, without reading data."""
        sl = self._file.get_slice(name)
        dtype = BY_SAFETENSORS.get(sl.get_dtype())
        if dtype is None:
            raise CheckpointError(f"{self.path}: tensor {name} has unsupported dtype {sl.get_dtype()}")
        return TensorInfo(tuple(sl.get_shape()), dtype.torch)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        return self._file.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def write_prequant_scales(path: Path, scales: Mapping[str, torch.Tensor]) -> int:
    """The sidecar: float32 pre-quant scales by Hugging Face module name, sorted (the same bytes whatever order a path
    found them in; empty for formats without them), written as every other output file is (mode 0644 under the usual
    umask). Returns how many."""
    entries = [(f"{name}.{PQS_KEY}", TensorInfo((t.numel(),), torch.float32),
                lambda t=t: t.detach().float().cpu().reshape(-1).contiguous()) for name, t in sorted(scales.items())]
    write_safetensors(path, entries)
    return len(entries)


def load_prequant_scales(ckpt_dir: Path, name: str = PQS_SIDECAR) -> dict[str, torch.Tensor]:
    """The float32 pre-quant scales `quantize` saved beside the checkpoint, by Hugging Face module name."""
    path = ckpt_dir / name
    if not path.is_file():
        return {}
    t = RankTensors(path)
    return {n.removesuffix(f".{PQS_KEY}"): t[n].float() for n in t}


def check_sidecar(spec: QuantSpec, scales: Mapping[str, torch.Tensor], where: Path, name: str = PQS_SIDECAR) -> None:
    """A format with pre-quant scales needs quantize's float32 sidecar (the checkpoint keeps them rounded), every
    scale in it a positive number (ModelOpt divides by them)."""
    if spec.format.linear_tensors(2, spec.format.group_size or 2, spec.dtype).get(PQS) is not None and not scales:
        raise CheckpointError(f"{where}: no {name} (the float32 pre-quant scales `trt-minitron quantize` "
                              f"saves); verify cannot rebuild ModelOpt's {spec.quant_algo} weights without it")
    for module in sorted(scales):
        require_positive_scale(where / name, f"{module}.{PQS_KEY}", scales[module])


def require_positive_scale(path: Path, name: str, t: torch.Tensor) -> None:
    """Refuse scale tensor `name` of file `path` unless every value is finite and > 0."""
    t = t.float()
    bad = ~(t.isfinite() & (t > 0))
    if bool(bad.any()):
        first = float(t[bad].flatten()[0])
        raise CheckpointError(f"{path}: scale {name} holds {int(bad.sum())} value(s) that are not finite "
                              f"and > 0 (first: {first:g}) among its {t.numel()}; every scale of a quantized "
                              "checkpoint is a positive number")


class PlainRankFile:
    """A rank file of a quantized checkpoint read with plain reads (no mmap), one tensor or row block at a time.

    The same interface as tensors.stfile.SafetensorsFile (`infos`, `read`), which refuses float8 on purpose
    (a float8 *source* tensor cast to bfloat16 without its scale would be silently wrong); here float8 is a
    quantized checkpoint's own storage type. The header is validated by the safetensors library first."""

    def __init__(self, path: Path):
        header = read_header(path)  # validated in full: dtypes, shapes, offsets inside the file
        self.path, self._data_start = path, header.data_start
        self.infos: dict[str, TensorInfo] = {}
        self._offsets: dict[str, int] = {}
        for name, entry in header.entries.items():
            self.infos[name] = TensorInfo(entry.shape, entry.dtype.torch)
            self._offsets[name] = header.data_start + entry.begin

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The tensor, or rows [start, stop) of it (dim 0); a column block (dim 1) reads the whole tensor."""
        info = self.infos[name]
        shape = list(info.shape) or [1]
        if dim not in (None, 0):
            full = self.read(name)
            stop = full.shape[dim] if stop is None else stop
            return full.narrow(dim, start, stop - start).clone()
        stop = shape[0] if dim is None or stop is None else stop
        start = 0 if dim is None else start
        row_bytes = info.nbytes // shape[0] if shape[0] else 0
        buf = bytearray((stop - start) * row_bytes)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._offsets[name] + start * row_bytes)
            view, got = memoryview(buf), 0
            while got < len(buf):
                n = f.readinto(view[got:])
                if not n:
                    raise CheckpointError(f"{self.path}: unexpected end of file reading {name}")
                got += n
        t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
        t = t.view(info.dtype).reshape([stop - start] + shape[1:])
        return t.reshape(info.shape) if dim is None else t

"""Reading a quantized TensorRT-LLM checkpoint: config.json's `quantization` block, then per rank the
dequantized linear layers (`QuantLinear`) and FP8 KV-cache scales (`KVQuant`).

This is the interface the reference model uses: `QuantSpec.from_config(config)` is None for an
unquantized checkpoint; otherwise `spec.linear(rank_tensors, "transformer.layers.0.attention.qkv")`
gives one rank's layer, `cat_rows` / `cat_cols` (formats.py) merge ranks the way tensor-parallel
execution combines them, and `spec.kv_quant(rank_tensors, "transformer.layers.0.attention")`
the KV-cache rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch

from ..errors import CheckpointError
from ..sources.base import TensorInfo
from .formats import KV_SCALE, KVQuant, QuantFormat, QuantLinear, format_for_algo

# TensorRT-LLM linear layers under transformer.layers.{i}.; column-parallel ones split output rows.
COLUMN_LINEARS = ("attention.qkv", "mlp.fc", "mlp.gate")
ROW_LINEARS = ("attention.dense", "mlp.proj")
LINEARS = COLUMN_LINEARS + ROW_LINEARS
KV_CACHE_ALGOS = ("FP8",)
CHECKPOINT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I8": torch.int8,
                      "U8": torch.uint8, "I32": torch.int32, "I64": torch.int64, "F8_E4M3": torch.float8_e4m3fn}


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
        dtype = CHECKPOINT_DTYPES.get(config.get("dtype", "bfloat16"))
        if dtype is None:
            raise CheckpointError(f"{where}: dtype {config.get('dtype')!r} is not one a quantized checkpoint uses "
                                  f"({', '.join(CHECKPOINT_DTYPES)})")
        return cls(fmt, kv, dtype, tuple(q.get("exclude_modules") or ()))

    @property
    def quant_algo(self) -> str:
        return self.format.quant_algo

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
        """The FP8 KV-cache rounding of one layer (None without an FP8 KV cache)."""
        if self.kv_cache_quant_algo is None:
            return None
        name = f"{attention_prefix}.{KV_SCALE}"
        if name not in tensors:
            raise CheckpointError(f"missing {name} (kv_cache_quant_algo {self.kv_cache_quant_algo})")
        scale = tensors[name]
        if scale.numel() != 1 or scale.dtype != torch.float32:
            raise CheckpointError(f"{name} is {scale.dtype}{list(scale.shape)}, expected float32 [1]")
        return KVQuant(scale.float().reshape(()))



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
        dtype = SAFETENSORS_DTYPES.get(sl.get_dtype())
        if dtype is None:
            raise CheckpointError(f"{self.path}: tensor {name} has unsupported dtype {sl.get_dtype()}")
        return TensorInfo(tuple(sl.get_shape()), dtype)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        return self._file.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

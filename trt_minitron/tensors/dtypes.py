"""The one dtype table: names as configs and flags spell them, safetensors codes, sizes, and torch's dtype
(looked up only when asked, so planning and headers need no torch).

Metadata (TensorInfo, Layout) may hold either a table entry or torch's dtype: an export that only moves
bytes plans on entries and never imports torch. `dtype_name`, `of_torch` and `as_torch` accept both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DType:
    name: str  # torch's and the configs' spelling: "bfloat16"
    safetensors: str  # the safetensors header code: "BF16"
    itemsize: int

    @property
    def torch(self) -> torch.dtype:
        import torch

        return getattr(torch, self.name)

    @property
    def is_floating_point(self) -> bool:
        return self.name.startswith(("float", "bfloat"))


TABLE = (DType("float32", "F32", 4), DType("float16", "F16", 2), DType("bfloat16", "BF16", 2),
         DType("float64", "F64", 8), DType("int64", "I64", 8), DType("int32", "I32", 4), DType("int16", "I16", 2),
         DType("int8", "I8", 1), DType("uint8", "U8", 1), DType("bool", "BOOL", 1),
         DType("float8_e4m3fn", "F8_E4M3", 1))  # FP8 weights and activations of quantized checkpoints
BY_NAME = {d.name: d for d in TABLE}
BY_SAFETENSORS = {d.safetensors: d for d in TABLE}
CHECKPOINT_DTYPES = ("bfloat16", "float16", "float32")  # what export writes and a TensorRT-LLM checkpoint holds


def torch_dtype(name: str) -> torch.dtype:
    """torch's dtype for a name of the table ("bfloat16" -> torch.bfloat16)."""
    return BY_NAME[name].torch


def of_torch(dtype: torch.dtype | DType) -> DType:
    """The table's entry for a torch dtype (an entry is returned as it is)."""
    return dtype if isinstance(dtype, DType) else BY_NAME[str(dtype).removeprefix("torch.")]


def as_torch(dtype: torch.dtype | DType) -> torch.dtype:
    """torch's dtype for a table entry (a torch dtype is returned as it is; imports torch for an entry)."""
    return dtype.torch if isinstance(dtype, DType) else dtype


def dtype_name(dtype: torch.dtype | DType) -> str:
    """"bfloat16" for torch.bfloat16 and for the table's entry alike, without importing torch."""
    return dtype.name if isinstance(dtype, DType) else str(dtype).removeprefix("torch.")

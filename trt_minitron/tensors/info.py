"""Tensor descriptions shared by readers (sources/), rules (archs/) and writers: what a tensor is, not where.

Neutral ground, so that architectures and checkpoint readers need not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

if TYPE_CHECKING:
    import torch

    from .dtypes import DType


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype | DType  # a dtypes.DType where torch is not needed (planning an export by arithmetic)

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * self.dtype.itemsize


@dataclass(frozen=True)
class RowStream:
    """Rows of a stored tensor as byte chunks of one reused buffer (each chunk must be consumed before the
    next); `file_range` says where they lie in a file, so the export writer (transfer.py) can copy them
    file to file or read them in row blocks without asking the source again."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    chunks: Callable[[], Iterator[memoryview]]
    # (file, byte offset) only when these rows lie in that file contiguous, row-major, in `dtype`, byte for
    # byte what read() returns (no permutation, no quantization): export then copies them file to file.
    file_range: tuple[Path, int] | None = None


class MetaReader:
    """Reads nothing: returns meta tensors, so a plan can be dry-run for shapes and dtypes."""

    def __init__(self, infos: dict[str, TensorInfo]):
        self.infos = infos

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        import torch

        from .dtypes import as_torch

        info = self.infos[name]
        return narrow(torch.empty(info.shape, dtype=as_torch(info.dtype), device="meta"), dim, start, stop)


def narrow(t: torch.Tensor, dim: int | None, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """What a reader's `read(name, dim, start, stop)` returns from the whole tensor `t`: all of it (dim None),
    or indices [start, stop) of dimension `dim` (stop None: to the end)."""
    if dim is None:
        return t
    stop = t.shape[dim] if stop is None else stop
    return t.narrow(dim, start, stop - start)


def infos_without_torch(source) -> Mapping[str, TensorInfo]:
    """`source.tensors()`, with dtypes.DType dtypes where the source knows them without torch (HF safetensors
    headers: `tensors_without_torch`); other sources' torch dtypes as they are."""
    plain = getattr(source, "tensors_without_torch", None)
    return plain() if plain is not None else source.tensors()

"""What every checkpoint reader provides: Hugging Face tensor names, read lazily, one slice at a time.

Architecture code (archs/) only ever sees this view, so a new container format (.nemo, GGUF, ...)
is one new reader, and a new architecture is one new arch file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch

from ..config import ModelConfig


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype

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


class Source(Protocol):
    """A model checkpoint presented with Hugging Face names (`model.layers.0.self_attn.q_proj.weight`)."""

    config: ModelConfig
    description: str  # for messages, e.g. "HF folder /ckpt" or ".nemo /x.nemo (zarr)"

    def tensors(self) -> dict[str, TensorInfo]:
        """Every tensor name with its shape and dtype, known without reading data."""
        ...

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Tensor `name`, or only `[start:stop]` along `dim`; reads no more than that slice where it can."""
        ...

    def write_tokenizer(self, dst: Path) -> list[str]:
        """Write the tokenizer files a runner needs into `dst`; return the file names written."""
        ...

    def close(self) -> None: ...


class MetaReader:
    """Reads nothing: returns meta tensors, so a plan can be dry-run for shapes and dtypes."""

    def __init__(self, infos: dict[str, TensorInfo]):
        self.infos = infos

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        info = self.infos[name]
        t = torch.empty(info.shape, dtype=info.dtype, device="meta")
        if dim is None:
            return t
        stop = info.shape[dim] if stop is None else stop
        return t.narrow(dim, start, stop - start)

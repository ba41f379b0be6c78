"""What every checkpoint reader provides: Hugging Face tensor names, read lazily, one slice at a time.

Architecture code (archs/) only ever sees this view, so a new container format (.nemo, GGUF, ...)
is one new reader, and a new architecture is one new arch file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..tensors.info import MetaReader, RowStream, TensorInfo

if TYPE_CHECKING:
    import torch

    from ..archs.config import ModelConfig

__all__ = ["MetaReader", "RowStream", "Source", "TensorInfo"]


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

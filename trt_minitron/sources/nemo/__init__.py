"""`.nemo` checkpoints (NeMo 1.x, Megatron-core GPT) read without NeMo, Megatron or zarr."""

from __future__ import annotations

import tarfile
from pathlib import Path

from .source import ExpectedTensors, NemoSource


def is_nemo(path: Path) -> bool:
    """A `.nemo` file, a tar holding one, or an extracted `.nemo` folder (model_config.yaml at its top)."""
    path = Path(path)
    if path.is_dir():
        return (path / "model_config.yaml").is_file()
    if path.suffix == ".nemo":
        return True
    return path.is_file() and tarfile.is_tarfile(path)


def open_nemo(path: Path, expected: ExpectedTensors) -> NemoSource:
    """Open a `.nemo` as a Source with Hugging Face tensor names, those `expected` lists (see source.py)."""
    return NemoSource(Path(path), expected)


__all__ = ["NemoSource", "is_nemo", "open_nemo"]

"""Open any supported checkpoint as a Source with Hugging Face tensor names."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import MetaReader, Source, TensorInfo
from .hf import HUB_ID, HFSource, download_hub

__all__ = ["MetaReader", "Source", "TensorInfo", "open_source", "source_paths"]


def open_source(src: str | Path) -> Source:
    """A local HF folder, a .gguf file, a .nemo file or folder, or a hub id `org/name`."""
    path = Path(src)
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            from .gguf.source import GGUFSource

            return GGUFSource(path)
        if path.is_dir() and (path / "config.json").is_file() and not (path / "model_config.yaml").is_file():
            return HFSource(path)  # before importing the .nemo reader, which imports torch
        from .nemo import is_nemo, open_nemo

        if is_nemo(path):  # .nemo file, any tar holding one, or an extracted .nemo folder
            from ..archs import hf_tensor_shapes

            return open_nemo(path, hf_tensor_shapes)
        if path.is_dir() and (path / "config.json").is_file():
            return HFSource(path)
        if path.is_dir():
            raise ConfigError(f"{path} has neither config.json (Hugging Face) nor model_config.yaml (.nemo)")
        raise ConfigError(f"{path}: unsupported file; expected a folder, a .nemo (tar) or a .gguf file")
    if HUB_ID.match(str(src)) and not str(src).startswith((".", "/")):
        return HFSource(download_hub(str(src)))
    raise ConfigError(f"{src}: no such file or folder")


def source_paths(source: Source) -> list[Path]:
    """Where a source's files live (a hub download's cache folder, a .nemo file), to keep outputs off them."""
    return [Path(p) for p in (getattr(source, "folder", None), getattr(source, "path", None)) if p is not None]

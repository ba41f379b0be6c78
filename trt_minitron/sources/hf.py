"""Hugging Face checkpoints: a local folder (safetensors, sharded or not; pytorch_model*.bin), a GGUF file
(dequantized through transformers), or a hub id (downloaded with huggingface_hub)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError, MissingDependencyError
from .base import TensorInfo
from .stfile import SafetensorsFile

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _narrow(t: torch.Tensor, dim: int | None, start: int, stop: int | None) -> torch.Tensor:
    if dim is None:
        return t
    stop = t.shape[dim] if stop is None else stop
    return t.narrow(dim, start, stop - start)


class HFSource:
    """A local HF folder. Safetensors are read tensor by tensor (stfile.py); .bin files are mmapped."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.config = ModelConfig.from_hf_file(folder / "config.json")
        self.description = f"Hugging Face folder {folder}"
        self._files: dict[str, Path] = {}  # tensor name -> file
        self._infos: dict[str, TensorInfo] = {}
        self._handles: dict[Path, object] = {}
        self._index_files()

    def _index_files(self) -> None:
        st_files = _weight_files(self.folder, "model.safetensors", "model.safetensors.index.json", ".safetensors")
        if st_files:
            for f in st_files:
                h = SafetensorsFile(f)
                self._handles[f] = h
                for name, info in h.infos.items():
                    self._infos[name] = info
                    self._files[name] = f
        else:
            bin_files = _weight_files(self.folder, "pytorch_model.bin", "pytorch_model.bin.index.json", ".bin")
            if not bin_files:
                raise CheckpointError(f"no weights in {self.folder}: expected model.safetensors, "
                                      "model.safetensors.index.json, or pytorch_model*.bin")
            for f in bin_files:
                try:
                    sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
                except Exception as e:
                    raise CheckpointError(f"{f}: cannot load with weights_only=True ({e})") from None
                self._handles[f] = sd
                for name, t in sd.items():
                    self._infos[name] = TensorInfo(tuple(t.shape), t.dtype)
                    self._files[name] = f
        self._check_index()

    def _check_index(self) -> None:
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index = self.folder / index_name
            if index.is_file():
                weight_map = json.loads(index.read_text()).get("weight_map", {})
                missing = sorted(n for n in weight_map if n not in self._infos)
                if missing:
                    raise CheckpointError(f"{index}: tensors listed but not found in their shards: {missing[:5]}")

    def tensors(self) -> dict[str, TensorInfo]:
        return self._infos

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        f = self._files[name]
        h = self._handles[f]
        if isinstance(h, dict):
            return _narrow(h[name], dim, start, stop)
        return h.read(name, dim, start, stop)

    def stream_rows(self, name: str, start: int = 0, stop: int | None = None):
        """Rows passed through unchanged, file to file (safetensors only; None where not possible)."""
        h = self._handles[self._files[name]]
        return None if isinstance(h, dict) else h.stream_rows(name, start, stop)

    def write_tokenizer(self, dst: Path) -> list[str]:
        written = []
        for name in TOKENIZER_FILES:
            if (self.folder / name).is_file():
                shutil.copy2(self.folder / name, dst / name)
                written.append(name)
        return written

    def close(self) -> None:
        self._handles.clear()


def _weight_files(folder: Path, single: str, index: str, suffix: str) -> list[Path]:
    if (folder / index).is_file():
        try:
            weight_map = json.loads((folder / index).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{folder / index}: malformed index ({e})") from None
        files = sorted({folder / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder / index} names shards that do not exist: {missing}")
        return files
    if (folder / single).is_file():
        return [folder / single]
    return sorted(p for p in folder.glob(f"*{suffix}") if p.is_file() and not p.name.startswith("."))


class InMemorySource:
    """A state dict already in memory (GGUF dequantized by transformers). Memory = the model."""

    def __init__(self, config: ModelConfig, state: dict[str, torch.Tensor], description: str, tokenizer):
        self.config, self.description, self._state, self._tokenizer = config, description, state, tokenizer

    def tensors(self) -> dict[str, TensorInfo]:
        return {n: TensorInfo(tuple(t.shape), t.dtype) for n, t in self._state.items()}

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return _narrow(self._state[name], dim, start, stop)

    def write_tokenizer(self, dst: Path) -> list[str]:
        before = {p.name for p in dst.iterdir()}
        self._tokenizer.save_pretrained(dst)
        return sorted({p.name for p in dst.iterdir()} - before)

    def close(self) -> None:
        self._state = {}


def open_gguf(path: Path) -> InMemorySource:
    """GGUF is block-quantized; transformers dequantizes it to float32 (needs `gguf`, `accelerate`)."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise MissingDependencyError("reading .gguf needs the `gguf` package: pip install 'trt-minitron[gguf]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, OSError, KeyError) as e:
        raise CheckpointError(f"{path}: transformers cannot load this GGUF file ({e})") from None
    hf = model.config.to_dict()
    hf["architectures"] = [type(model).__name__]  # GGUF-derived configs carry architectures=None
    config = ModelConfig.from_hf(hf, where=str(path))
    state = {n: t for n, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # an alias of embed_tokens
    return InMemorySource(config, state, f"GGUF file {path} (dequantized to float32)", tokenizer)


def download_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingDependencyError("downloading from the hub needs huggingface_hub: pip install huggingface_hub") \
            from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "tokenizer.model",
                                                               "*.txt", "*.jinja"]))
    except Exception as e:  # offline, 404, gated: huggingface_hub raises many types
        raise ConfigError(f"cannot download {repo_id!r} from the Hugging Face hub ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'no detail'}); pass a local folder instead") \
            from None

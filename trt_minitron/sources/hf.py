"""Hugging Face checkpoints: a local folder (safetensors, sharded or not; pytorch_model*.bin), a GGUF file
(dequantized through transformers), or a hub id (downloaded with huggingface_hub)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..archs.config import ModelConfig
from ..errors import CheckpointError, ConfigError, MissingDependencyError, torch_load_reason
from ..outputs import TOKENIZER_FILES
from ..tensors.dtypes import as_torch
from ..tensors.info import narrow
from ..tensors.stfile import SafetensorsFile
from .base import TensorInfo

if TYPE_CHECKING:
    import torch

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class HFSource:
    """A local HF folder. Safetensors are read tensor by tensor (tensors/stfile.py); .bin files are mmapped.
    Safetensors headers are parsed without torch: torch is imported when a tensor is read or `tensors()`
    is asked for (`tensors_without_torch()` is the same list with the headers' dtypes.DType).

    `root`: the folder index entries must stay inside (default: the folder itself, or for a hub cache
    snapshot `models--org--name/snapshots/REV` its repo folder, since its files are links into `blobs/`).
    """

    def __init__(self, folder: Path, root: Path | None = None):
        self.folder = folder
        self.root = root or _hub_repo_folder(folder) or folder
        self.config = ModelConfig.from_hf_file(folder / "config.json")
        self.description = f"Hugging Face folder {folder}"
        self._files: dict[str, Path] = {}  # tensor name -> file
        self._stored: dict[str, str] = {}  # tensor name -> name in its file (differs only for a tied alias)
        self._infos: dict[str, TensorInfo] = {}  # safetensors: dtypes.DType; .bin: torch's (tensors(): torch's)
        self._torch_infos: dict[str, TensorInfo] | None = None
        self._handles: dict[Path, object] = {}
        self._index_files()
        self._resolve_tied_head()

    def _index_files(self) -> None:
        st_files, weight_map = _weight_files(self.folder, self.root, "model.safetensors",
                                             "model.safetensors.index.json", ".safetensors")
        if not st_files:
            st_files, weight_map = _weight_files(self.folder, self.root, "pytorch_model.bin",
                                                 "pytorch_model.bin.index.json", ".bin")
            if not st_files:
                raise CheckpointError(f"no weights in {self.folder}: expected model.safetensors, "
                                      "model.safetensors.index.json, or pytorch_model*.bin")
        for f in st_files:
            if f.suffix == ".safetensors":
                h = SafetensorsFile(f)
                infos = h.header_infos
            else:
                h = _load_bin(f)
                infos = {name: TensorInfo(tuple(t.shape), t.dtype) for name, t in h.items()}
            self._handles[f] = h
            for name, info in infos.items():
                if name in self._files:
                    raise CheckpointError(f"{self.folder}: tensor {name!r} is stored in both {self._files[name].name} "
                                          f"and {f.name}; refusing to guess which one is meant")
                listed = weight_map.get(name) if weight_map else None
                if listed is not None and listed != f:
                    raise CheckpointError(f"{self.folder}: the index puts {name!r} in {listed.name}, but it is in "
                                          f"{f.name}")
                self._infos[name] = info
                self._files[name] = f
                self._stored[name] = name
        missing = sorted(n for n in (weight_map or {}) if n not in self._infos)
        if missing:
            raise CheckpointError(f"{self.folder}: tensors listed in the index but not found in their shards: "
                                  f"{missing[:5]}")

    def _resolve_tied_head(self) -> None:
        """tie_word_embeddings with lm_head.weight stored too: do what transformers 5.x does when loading."""
        emb, head = "model.embed_tokens.weight", "lm_head.weight"
        if not self.config.tie_word_embeddings or head not in self._infos:
            return
        if emb not in self._infos:  # transformers ties the embedding to the stored head instead
            self._alias(emb, head)
            del self._infos[head], self._files[head], self._stored[head]
            return
        if self._same_values(emb, head):  # the same matrix stored twice (every .bin of a tied model)
            del self._infos[head], self._files[head], self._stored[head]
            return
        # transformers: "both are present in the checkpoints with different values, so we will NOT tie them".
        self.config = dataclasses.replace(self.config, tie_word_embeddings=False)
        print(f"trt-minitron: note: {self.folder}/config.json says tie_word_embeddings=true, but lm_head.weight "
              "is stored and differs from the embedding; using the stored lm_head.weight, as transformers does",
              file=sys.stderr)

    def _alias(self, name: str, stored: str) -> None:
        self._infos[name], self._files[name], self._stored[name] = self._infos[stored], self._files[stored], stored

    def _same_values(self, a: str, b: str) -> bool:
        import torch

        if self._infos[a].shape != self._infos[b].shape:
            return False
        rows = self._infos[a].shape[0] if self._infos[a].shape else 1
        step = max(1, (64 << 20) // max(1, self._infos[a].nbytes // max(rows, 1)))
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            if not torch.equal(self.read(a, 0, start, stop).float(), self.read(b, 0, start, stop).float()):
                return False
        return True

    def tensors(self) -> dict[str, TensorInfo]:
        """Every tensor with torch's dtype (imports torch)."""
        if self._torch_infos is None:
            self._torch_infos = {n: TensorInfo(i.shape, as_torch(i.dtype)) for n, i in self._infos.items()}
        return self._torch_infos

    def tensors_without_torch(self) -> dict[str, TensorInfo]:
        """Every tensor, safetensors ones with their dtypes.DType as the headers say: no torch needed."""
        return self._infos

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        f = self._files[name]
        h = self._handles[f]
        if isinstance(h, dict):
            return narrow(h[self._stored[name]], dim, start, stop)
        return h.read(self._stored[name], dim, start, stop)

    def file_range(self, name: str) -> tuple[Path, int] | None:
        """(file, byte offset) where tensor `name` is stored as-is (safetensors only; None for a .bin)."""
        h = self._handles[self._files[name]]
        return None if isinstance(h, dict) else h.file_range(self._stored[name])

    def stream_rows(self, name: str, start: int = 0, stop: int | None = None):
        """Rows passed through unchanged, file to file (safetensors only; None where not possible)."""
        h = self._handles[self._files[name]]
        return None if isinstance(h, dict) else h.stream_rows(self._stored[name], start, stop)

    def write_tokenizer(self, dst: Path) -> list[str]:
        written = []
        for name in TOKENIZER_FILES:
            if (self.folder / name).is_file():
                shutil.copy2(self.folder / name, dst / name)
                written.append(name)
        return written

    def close(self) -> None:
        self._handles.clear()


def _load_bin(f: Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} state dict from a pytorch_model*.bin, loaded with weights_only=True, or one line why not."""
    import torch

    try:
        sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise CheckpointError(f"{f}: cannot load with weights_only=True ({torch_load_reason(e)})") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{f} holds a {type(sd).__name__}, not a state dict of named tensors")
    for name, t in sd.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            found = "a nested dict" if isinstance(t, dict) else f"a {type(t).__name__}"
            raise CheckpointError(f"{f} holds {found} under {name!r}; expected a flat state dict of named tensors")
    return sd


def _weight_files(folder: Path, root: Path, single: str, index: str,
                  suffix: str) -> tuple[list[Path], dict[str, Path] | None]:
    """The weight files of one kind, and the index's tensor -> file map when there is an index."""
    if (folder / index).is_file():
        where = folder / index
        try:
            doc = json.loads(where.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{where}: malformed index ({e})") from None
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in weight_map.items()):
            found = type(doc).__name__ if not isinstance(doc, dict) else f"weight_map {type(weight_map).__name__}"
            raise CheckpointError(f"{where}: expected {{\"weight_map\": {{tensor name: file name}}}}, found a {found}")
        files = {name: _inside(folder, root, name, where) for name in set(weight_map.values())}
        missing = sorted(name for name, p in files.items() if not p.is_file())
        if missing:
            raise CheckpointError(f"{where} names shards that do not exist: {missing}")
        return sorted(set(files.values())), {t: files[name] for t, name in weight_map.items()}
    if (folder / single).is_file():
        return [folder / single], None
    return sorted(p for p in folder.glob(f"*{suffix}") if p.is_file() and not p.name.startswith(".")), None


def _hub_repo_folder(folder: Path) -> Path | None:
    repo = folder.resolve().parent.parent
    if folder.resolve().parent.name == "snapshots" and (repo / "blobs").is_dir():
        return repo
    return None


def _inside(folder: Path, root: Path, name: str, where: Path) -> Path:
    """`folder / name` for an index entry, refused when it could read a file outside `root`."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or PurePosixPath(name).is_absolute() or name.startswith("\\") or ".." in parts \
            or (len(name) > 1 and name[1] == ":"):
        raise CheckpointError(f"{where}: shard {name!r} is not a plain file name inside {folder}")
    path = folder / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise CheckpointError(f"{where}: shard {name!r} is a link to {path.resolve()}, outside {root}")
    return path


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

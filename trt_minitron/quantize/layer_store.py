"""Finished layers of a layer-by-layer `quantize`, kept on disk beside the output until the checkpoint is written.

A folder of per-layer safetensors files (each layer's exported tensors), the activations entering the next
layer, and manifest.json, which commits them: a layer counts as finished only once the manifest says so, and
every file is written under a temporary name and renamed, so an interruption at any point leaves the last
committed state intact (at most the layer in progress is lost).

Two lifetimes. A plain run keeps it in `.NAME.work-PID` (removed at the end whatever happens; swept by a later
run if the process was killed). `--resume` keeps it in `.NAME.quantize-resume`, which an interrupted or failed
run leaves in place and a later `--resume` run continues, provided it quantizes the same source with the same
settings (the manifest's `identity`, compared field by field; a mismatch is refused in one line).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Mapping

import torch

from ..errors import CheckpointError, ConfigError, OutputError
from ..outputs import write_file
from ..sources.base import TensorInfo
from ..tensors.stheader import read_header
from ..tensors.stwriter import write_safetensors

MANIFEST = "manifest.json"
RESUME_SUFFIX = "quantize-resume"
VERSION = 1


def resume_folder(output: Path) -> Path:
    """Where `quantize --resume` keeps the finished layers of `output`."""
    return output.parent / f".{output.name}.{RESUME_SUFFIX}"


def _layer_file(i: int) -> str:
    return f"layer_{i:05d}.safetensors"


def _inputs_file(i: int) -> str:
    return f"inputs_{i:05d}.safetensors"


def _diff(old, new, path: str = "") -> str | None:
    """The first field where two identities differ, as `path: old then, new now`."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _diff(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if old == new else f"{path}: {old!r} then, {new!r} now"


class LayerStore:
    """Committed layers of one quantize run; `done` of them are finished."""

    def __init__(self, folder: Path, identity: dict, num_layers: int, keep: bool):
        identity = json.loads(json.dumps(identity))  # as the manifest will hold it (tuples become lists)
        self.folder, self.identity, self.num_layers, self.keep = folder, identity, num_layers, keep
        self.done = 0
        self.layers: list[dict] = []  # per finished layer: what save_layer was given as `meta`
        self._lock = None

    @classmethod
    def open(cls, folder: Path, identity: dict, num_layers: int, keep: bool) -> LayerStore:
        """The store in `folder`: continued when its manifest matches `identity`, else new. `keep`: a --resume
        store (`resume_folder`), left in place by an unfinished run; otherwise a private folder, always removed."""
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        store = cls(folder, identity, num_layers, keep)
        folder.mkdir(exist_ok=True)
        store._take_lock()
        try:
            store._load()
        except BaseException:
            store._release_lock()
            raise
        return store

    def _take_lock(self) -> None:
        self._lock = open(self.folder / "lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._release_lock()
            raise OutputError(f"{self.folder} is in use by another quantize run; wait for it or stop it") from None

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _load(self) -> None:
        path = self.folder / MANIFEST
        if path.is_file():
            try:
                manifest = json.loads(path.read_text())
                done, layers = int(manifest["layers_done"]), list(manifest["layers"])
                old = manifest["identity"]
            except (OSError, ValueError, KeyError, TypeError):
                raise ConfigError(f"{path} is unreadable (not written by this version of trt-minitron?); remove "
                                  f"{self.folder} to start afresh") from None
            if manifest.get("version") != VERSION or manifest.get("num_layers") != self.num_layers:
                raise ConfigError(f"{self.folder} was written by another trt-minitron version or for another "
                                  "model; remove it to start afresh")
            why = _diff(old, self.identity)
            if why:
                raise ConfigError(f"--resume: {self.folder} holds layers of a run with other settings ({why}); "
                                  "rerun with the settings it was started with, or remove it to start afresh")
            needed = [_layer_file(i) for i in range(done)] + ([_inputs_file(done)] if 0 < done < self.num_layers else [])
            if not 0 <= done <= self.num_layers or len(layers) != done or \
                    not all((self.folder / n).is_file() for n in needed):
                raise ConfigError(f"{path} is inconsistent (a file it lists is missing?); remove {self.folder} to "
                                  "start afresh")
            for name in needed:  # headers validated in full (offsets inside the file): a truncated file is refused
                try:
                    read_header(self.folder / name)
                except CheckpointError as e:
                    raise ConfigError(f"{e}; remove {self.folder} to start afresh") from None
            self.done, self.layers = done, layers
        keep = {MANIFEST, "lock", *(_layer_file(i) for i in range(self.done)), _inputs_file(self.done)}
        for p in self.folder.iterdir():  # uncommitted files of an interrupted layer, scratch folders
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if not path.is_file():
            self._write_manifest()

    def _write_manifest(self) -> None:
        doc = {"version": VERSION, "num_layers": self.num_layers, "layers_done": self.done,
               "identity": self.identity, "layers": self.layers}
        write_file(self.folder / MANIFEST, (json.dumps(doc, indent=1) + "\n").encode(), overwrite=True)

    @staticmethod
    def _write(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        write_safetensors(tmp, [(n, TensorInfo(tuple(t.shape), t.dtype), lambda t=t: t) for n, t in tensors.items()])
        os.replace(tmp, path)

    def save_layer(self, index: int, tensors: Mapping[str, torch.Tensor], meta: dict,
                   next_hidden: list[torch.Tensor]) -> None:
        """Commit layer `index` (the next unfinished one): its tensors, what the next layer receives, `meta`."""
        if index != self.done:
            raise ValueError(f"layer {index} saved while {self.done} layers are finished")
        self._write(self.folder / _layer_file(index), tensors)
        if index + 1 < self.num_layers:
            self._write(self.folder / _inputs_file(index + 1), {f"batch{j}": h for j, h in enumerate(next_hidden)})
        self.done, self.layers = index + 1, [*self.layers, meta]
        self._write_manifest()
        (self.folder / _inputs_file(index)).unlink(missing_ok=True)

    def hidden(self) -> list[torch.Tensor]:
        """What layer `done` receives, batch by batch (saved with the last finished layer)."""
        from safetensors import safe_open

        with safe_open(str(self.folder / _inputs_file(self.done)), "pt") as f:
            return [f.get_tensor(f"batch{j}") for j in range(len(f.keys()))]

    def layer_files(self) -> Iterator[tuple[int, Path]]:
        for i in range(self.done):
            yield i, self.folder / _layer_file(i)

    def scratch(self) -> Path:
        """A folder for per-layer scratch files, removed when the store is opened again or closed."""
        path = self.folder / "scratch"
        path.mkdir(exist_ok=True)
        return path

    def close(self, finished: bool) -> bool:
        """Remove the folder unless it is a `--resume` store of an unfinished run; returns whether it was kept."""
        self._release_lock()
        if self.keep and not finished and self.done > 0:
            shutil.rmtree(self.folder / "scratch", ignore_errors=True)
            return True
        shutil.rmtree(self.folder, ignore_errors=True)
        return False

"""Megatron `torch_dist` dist-checkpoints (PyTorch DCP) read on CPU with no process group.

`.metadata` is a pickle of torch's DCP `Metadata`; newer Megatron pickles its own subclass
(`megatron.core.dist_checkpointing.strategies.torch.MCoreMetadata`), which is not installed here,
so it is unpickled with an allow-list that turns any `megatron.*` class into an inert stand-in
and refuses everything else outside torch's DCP metadata classes. Each tensor chunk in a
`__<rank>_<n>.distcp` file is its own `torch.save` blob: only the chunks that overlap the
requested rows are read (Megatron stores one chunk per layer per TP rank), each with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import pathlib
import pickle

import torch

from ...errors import CheckpointError, torch_load_reason
from ..base import TensorInfo
from .archive import Container


class _Stub:
    """Stand-in for a class of a package that is not installed (megatron.*): keeps its state, does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


def _stub(module: str, name: str) -> type:
    return type(name, (_Stub,), {"__module__": module})


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "megatron" or module.startswith("megatron."):
            return _stub(module, name)
        if module.startswith("torch.distributed.checkpoint"):
            return super().find_class(module, name)
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None),
                                                                (torch.dtype, torch.layout, torch.memory_format))):
            return getattr(torch, name)
        if (module, name) in {("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
                              ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice")}:
            return super().find_class(module, name)
        if module == "pathlib" and name in ("Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"):
            return getattr(pathlib, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in DCP metadata")


def load_metadata(raw: bytes, where: str):
    try:
        return _MetadataUnpickler(io.BytesIO(raw)).load()
    except Exception as e:  # any failure here means a file we cannot trust or read
        raise CheckpointError(f"cannot read torch_dist metadata {where}: {e}") from None


class TorchDistStore:
    def __init__(self, c: Container, root: str):
        self.c, self.root = c, root
        where = f"{c.path}:{root}/.metadata"
        if not c.has(f"{root}/.metadata"):
            raise CheckpointError(f"{where} is missing (a torch_dist checkpoint needs it)")
        md = load_metadata(c.read_bytes(f"{root}/.metadata"), where)
        sd_md = getattr(md, "state_dict_metadata", None)
        storage = getattr(md, "storage_data", None)
        if not isinstance(sd_md, dict) or not isinstance(storage, dict):
            raise CheckpointError(f"{where} has no state_dict_metadata/storage_data")
        self.tensors: dict[str, object] = {}
        for key, m in sd_md.items():
            if "_extra_state" in key or not hasattr(m, "chunks"):  # BytesStorageMetadata = extra states
                continue
            self.tensors[key] = m
            # The size is held to the chunks listed before anything loops over it (a layer-stacked key's rows).
            covered, size = sum(_prod(tuple(ch.sizes)) for ch in m.chunks), _prod(tuple(m.size))
            if covered != size:
                raise CheckpointError(f"torch_dist tensor {key} in {c.path}: its chunks cover {covered} of the "
                                      f"{size} values of its size {list(m.size)} in .metadata")
        # (fqn, chunk offsets) -> storage info; torch's MetadataIndex also carries an index hint.
        self.storage = {(idx.fqn, tuple(idx.offset or ())): info for idx, info in storage.items()}

    def infos(self) -> dict[str, TensorInfo]:
        return {k: TensorInfo(tuple(m.size), m.properties.dtype) for k, m in self.tensors.items()}

    def read_rows(self, key: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        m = self.tensors[key]
        shape = tuple(m.size)
        stop = shape[0] if stop is None else stop
        out = torch.empty((stop - start, *shape[1:]), dtype=m.properties.dtype)
        covered = 0
        for ch in m.chunks:
            off, size = tuple(ch.offsets), tuple(ch.sizes)
            lo, hi = max(start, off[0]), min(stop, off[0] + size[0])
            if lo >= hi:
                continue
            t = self._load_chunk(key, off, size, m.properties.dtype)
            dst = [slice(lo - start, hi - start)] + [slice(o, o + s) for o, s in zip(off[1:], size[1:])]
            out[tuple(dst)] = t[lo - off[0]:hi - off[0]]
            covered += (hi - lo) * _prod(size[1:])
            del t
        if covered != out.numel():
            raise CheckpointError(f"torch_dist tensor {key} in {self.c.path}: chunks cover {covered} of "
                                  f"{out.numel()} values of rows [{start}, {stop})")
        return out

    def _load_chunk(self, key: str, off: tuple, size: tuple, dtype: torch.dtype) -> torch.Tensor:
        info = self.storage.get((key, off))
        if info is None:
            raise CheckpointError(f"torch_dist tensor {key} in {self.c.path}: no storage entry for chunk at {list(off)}")
        if getattr(info, "transform_descriptors", None):
            raise CheckpointError(f"torch_dist tensor {key}: storage transforms {info.transform_descriptors} "
                                  "(compression/extensions) are not supported")
        member = f"{self.root}/{info.relative_path}"
        blob = self.c.read_bytes(member, info.offset, info.length)
        try:
            t = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"torch_dist tensor {key}: cannot load chunk from {member}: "
                                  f"{torch_load_reason(e)}") from None
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != size or t.dtype != dtype:
            found = f"{t.dtype}{list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise CheckpointError(f"torch_dist tensor {key}: chunk at {list(off)} in {member} holds {found}, "
                                  f"metadata says {dtype}{list(size)}")
        return t


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n

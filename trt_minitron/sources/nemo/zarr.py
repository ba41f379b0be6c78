"""Megatron `zarr` dist-checkpoint arrays read without the zarr package.

One sub-folder per tensor key with a zarr-v2 `.zarray` and raw, uncompressed, C-order chunk files
named by grid coordinates (`0.0.0`). Megatron writes bf16 as dtype "bfloat16" (numpy has none).
Reading rows [a, b) of dim 0 touches only the chunks that hold those rows, so one layer of a
layer-stacked array costs one layer.
"""

from __future__ import annotations

import itertools
import json
import math

import torch

from ...errors import CheckpointError
from ..base import TensorInfo
from .archive import Container

ZARR_DTYPES = {
    "bfloat16": torch.bfloat16,
    "<V2": torch.bfloat16, "|V2": torch.bfloat16,  # bf16 written before Megatron renamed the dtype string
    "<f2": torch.float16, "<f4": torch.float32, "<f8": torch.float64,
    "|u1": torch.uint8, "|i1": torch.int8, "<i4": torch.int32, "<i8": torch.int64, "|b1": torch.bool,
}


class ZarrStore:
    def __init__(self, c: Container, root: str):
        self.c, self.root = c, root
        self.arrays: dict[str, dict] = {}
        prefix = root + "/"
        for name in c.names():
            if name.startswith(prefix) and name.endswith("/.zarray"):
                key = name[len(prefix):-len("/.zarray")]
                if "/" in key or "_extra_state" in key:
                    continue
                self.arrays[key] = self._parse(key, name)
        self._check_chunk_files(prefix)

    def _check_chunk_files(self, prefix: str) -> None:
        """Every array's chunk grid present as files of the chunk size, counted against the members listed, so a
        shape in .zarray is held to the bytes there before anything loops over it."""
        files: dict[str, list[str]] = {}
        for name in self.c.names():
            key, _, leaf = name[len(prefix):].partition("/")  # leaf "0.1", or "0/1" with dimension_separator "/"
            if name.startswith(prefix) and key in self.arrays and leaf and not leaf.startswith("."):
                files.setdefault(key, []).append(name)
        for key, a in self.arrays.items():
            grid = math.prod(math.ceil(s / c) for s, c in zip(a["shape"], a["chunks"])) if a["shape"] else 1
            have = files.get(key, [])
            if len(have) != grid:
                raise CheckpointError(f"zarr array {key} in {self.c.path}: shape {list(a['shape'])} in chunks of "
                                      f"{list(a['chunks'])} needs {grid} chunk files, the folder holds {len(have)}")
            n = math.prod(a["chunks"]) * a["dtype"].itemsize
            wrong = next((m for m in have if self.c.size(m) != n), None)
            if wrong is not None:
                raise CheckpointError(f"zarr chunk {wrong} in {self.c.path} has {self.c.size(wrong)} bytes, expected {n}")

    def _parse(self, key: str, member: str) -> dict:
        where = f"{self.c.path}:{member}"
        try:
            meta = json.loads(self.c.read_bytes(member))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{where} is not valid JSON: {e}") from None
        if meta.get("zarr_format", 2) != 2:
            raise CheckpointError(f"{where}: zarr_format {meta.get('zarr_format')} not supported (expected 2)")
        dtype = ZARR_DTYPES.get(meta.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{where}: dtype {meta.get('dtype')!r} not supported; "
                                  f"supported: {', '.join(ZARR_DTYPES)}")
        if meta.get("compressor") is not None or meta.get("filters"):
            raise CheckpointError(f"{where}: compressed/filtered chunks ({meta.get('compressor')}) are not supported; "
                                  "Megatron writes compressor=None")
        if meta.get("order", "C") != "C":
            raise CheckpointError(f"{where}: order {meta.get('order')!r} not supported (expected 'C')")
        shape, chunks = tuple(meta["shape"]), tuple(meta["chunks"])
        if len(shape) != len(chunks) or any(c <= 0 for c in chunks):
            raise CheckpointError(f"{where}: chunks {list(chunks)} do not fit shape {list(shape)}")
        return {"shape": shape, "chunks": chunks, "dtype": dtype, "sep": meta.get("dimension_separator", ".")}

    def infos(self) -> dict[str, TensorInfo]:
        return {k: TensorInfo(a["shape"], a["dtype"]) for k, a in self.arrays.items()}

    def read_rows(self, key: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows [start, stop) of dim 0 (the whole array if it has no dims)."""
        a = self.arrays[key]
        shape, chunks, dtype = a["shape"], a["chunks"], a["dtype"]
        if not shape:
            return self._chunk(key, a, ()).reshape(())
        stop = shape[0] if stop is None else stop
        out = torch.empty((stop - start, *shape[1:]), dtype=dtype)
        grids = [range(math.ceil(s / c)) for s, c in zip(shape[1:], chunks[1:])]
        for c0 in range(start // chunks[0], (stop - 1) // chunks[0] + 1 if stop > start else 0):
            lo0 = c0 * chunks[0]
            for rest in itertools.product(*grids):
                coord = (c0, *rest)
                t = self._chunk(key, a, coord)
                # Crop the chunk to the array edge and to the requested rows, then place it.
                src, dst = [], []
                a0, b0 = max(start, lo0), min(stop, lo0 + chunks[0], shape[0])
                src.append(slice(a0 - lo0, b0 - lo0))
                dst.append(slice(a0 - start, b0 - start))
                for i, ci in enumerate(rest, start=1):
                    lo = ci * chunks[i]
                    hi = min(lo + chunks[i], shape[i])
                    src.append(slice(0, hi - lo))
                    dst.append(slice(lo, hi))
                out[tuple(dst)] = t[tuple(src)]
                del t
        return out

    def _chunk(self, key: str, a: dict, coord: tuple[int, ...]) -> torch.Tensor:
        name = f"{self.root}/{key}/" + (a["sep"].join(map(str, coord)) if coord else "0")
        n = math.prod(a["chunks"]) * a["dtype"].itemsize
        if not self.c.has(name):
            raise CheckpointError(f"missing zarr chunk {name} in {self.c.path}")
        if self.c.size(name) != n:
            raise CheckpointError(f"zarr chunk {name} in {self.c.path} has {self.c.size(name)} bytes, "
                                  f"expected {n} (chunks {list(a['chunks'])}, {a['dtype']})")
        raw = bytearray(self.c.read_bytes(name))
        return torch.frombuffer(raw, dtype=a["dtype"]).reshape(a["chunks"])

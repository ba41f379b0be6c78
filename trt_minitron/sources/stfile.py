"""Reading safetensors files with plain reads instead of mmap.

Pages of a memory-mapped file that a conversion touches stay resident and count towards RSS, so a
streaming export through mmap looks (and, under pressure, is) as large as the model. Here every read
copies just the bytes of one tensor, or of one row block of it, into a fresh buffer.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

import torch

from ..errors import CheckpointError
from .base import RowStream, TensorInfo

CHUNK_BYTES = 64 * 2**20
MAX_HEADER_BYTES = 100 * 2**20

ST_TO_TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
               "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
               "BOOL": torch.bool}


class SafetensorsFile:
    """One safetensors file; the header is validated in full before any tensor is read."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw_len)
            if n < 2 or n > size - 8 or n > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n} for a {size}-byte file)")
            try:
                header = json.loads(f.read(n), object_pairs_hook=_no_duplicate_keys)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
            except _DuplicateKey as e:
                raise CheckpointError(f"{path}: the safetensors header has the key {e.key!r} twice") from None
        self.data_start = 8 + n
        self.infos, self._offsets = parse_header(header, size - self.data_start, str(path))
        for name, begin in self._offsets.items():
            self._offsets[name] = self.data_start + begin

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        info = self.infos[name]
        shape = list(info.shape)
        if dim is None or not shape:
            return self._read_rows(name, 0, shape[0] if shape else 1).reshape(info.shape)
        stop = shape[dim] if stop is None else stop
        if dim == 0:
            return self._read_rows(name, start, stop)
        # A column block is strided on disk: read the whole tensor (bounded by the largest tensor), keep the block.
        full = self._read_rows(name, 0, shape[0])
        return full.narrow(dim, start, stop - start).clone()

    def stream_rows(self, name: str, start: int = 0, stop: int | None = None) -> RowStream:
        """Rows [start:stop] of `name` as chunks read into one reused 64 MiB buffer."""
        info = self.infos[name]
        shape = list(info.shape) or [1]
        stop = shape[0] if stop is None else stop
        row_bytes = info.nbytes // shape[0] if shape[0] else 0
        first, total = self._offsets[name] + start * row_bytes, (stop - start) * row_bytes

        def chunks() -> Iterator[memoryview]:
            buf = memoryview(bytearray(min(CHUNK_BYTES, max(total, 1))))
            with open(self.path, "rb", buffering=0) as f:
                f.seek(first)
                left = total
                while left:
                    n = f.readinto(buf[: min(left, len(buf))])
                    if not n:
                        raise CheckpointError(f"{self.path}: unexpected end of file reading {name}")
                    left -= n
                    yield buf[:n]

        return RowStream(tuple([stop - start] + shape[1:]) if info.shape else (), info.dtype, chunks,
                         file_range=(self.path, first))

    def _read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        info = self.infos[name]
        shape = list(info.shape) or [1]
        row_bytes = info.nbytes // shape[0] if shape[0] else 0
        buf = torch.empty((stop - start) * row_bytes, dtype=torch.uint8)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._offsets[name] + start * row_bytes)
            view = memoryview(buf.numpy())
            got = 0
            while got < len(view):
                n = f.readinto(view[got:])
                if not n:
                    raise CheckpointError(f"{self.path}: unexpected end of file reading {name}")
                got += n
        return buf.view(info.dtype).reshape([stop - start] + shape[1:])


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def parse_header(header: object, data_bytes: int, where: str) -> tuple[dict[str, TensorInfo], dict[str, int]]:
    """Infos and data offsets (relative to the data section) of a safetensors header, or a CheckpointError.

    Entries are objects with a known dtype, a shape of non-negative integers and two data_offsets
    [begin, end) with end - begin = prod(shape) x itemsize, inside the data section, not overlapping.
    """
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: the safetensors header must be a JSON object, found a {type(header).__name__}")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise CheckpointError(f"{where}: __metadata__ must map strings to strings")
    infos: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        bad = f"{where}: tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise CheckpointError(f"{bad} must be an object with dtype, shape and data_offsets, found {entry!r:.80}")
        dtype = ST_TO_TORCH.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        if dtype is None:
            raise CheckpointError(f"{bad} has unsupported dtype {entry['dtype']!r}; supported: {', '.join(ST_TO_TORCH)}")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            raise CheckpointError(f"{bad} has shape {shape!r}; expected a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise CheckpointError(f"{bad} has data_offsets {offsets!r}; expected [begin, end] with 0 <= begin <= end")
        info = TensorInfo(tuple(shape), dtype)
        begin, end = offsets
        if end - begin != info.nbytes:
            raise CheckpointError(f"{bad} spans {end - begin} bytes, but {entry['dtype']}{shape} needs {info.nbytes}")
        if end > data_bytes:
            raise CheckpointError(f"{bad} runs past the end of the file ({end} > {data_bytes} data bytes; truncated?)")
        infos[name] = info
        spans.append((begin, end, name))
    spans.sort()
    reach, holder = 0, ""  # furthest end so far, and whose it is; empty tensors occupy nothing
    for begin, end, name in spans:
        if begin == end:
            continue
        if begin < reach:
            raise CheckpointError(f"{where}: tensors {holder!r} and {name!r} overlap in the file "
                                  f"(data bytes {begin}-{min(end, reach)})")
        reach, holder = end, name
    return infos, {name: b for b, _e, name in spans}


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0

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

ST_TO_TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
               "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
               "BOOL": torch.bool}


class SafetensorsFile:
    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw_len)
            if n > size - 8 or n > 100 * 2**20:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n} for a {size}-byte file)")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
        self.data_start = 8 + n
        self.infos: dict[str, TensorInfo] = {}
        self._offsets: dict[str, int] = {}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            dtype = ST_TO_TORCH.get(meta.get("dtype"))
            if dtype is None:
                raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {meta.get('dtype')!r}")
            info = TensorInfo(tuple(meta["shape"]), dtype)
            begin, end = meta["data_offsets"]
            if end - begin != info.nbytes or self.data_start + end > size:
                raise CheckpointError(f"{path}: tensor {name} runs past the end of the file (truncated?)")
            self.infos[name] = info
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

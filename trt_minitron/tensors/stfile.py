"""Reading safetensors files with plain reads instead of mmap.

Pages of a memory-mapped file that a conversion touches stay resident and count towards RSS, so a
streaming export through mmap looks (and, under pressure, is) as large as the model. Here every read
copies just the bytes of one tensor, or of one row block of it, into a fresh buffer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import CheckpointError
from .info import RowStream, TensorInfo
from .stheader import read_header

if TYPE_CHECKING:
    import torch

CHUNK_BYTES = 64 * 2**20
READABLE = ("F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL")  # dtypes a source may hold


class SafetensorsFile:
    """One safetensors file; the header is validated in full before any tensor is read."""

    def __init__(self, path: Path):
        self.path = path
        header = read_header(path, READABLE)
        self.data_start = header.data_start
        self.header_infos = {n: TensorInfo(e.shape, e.dtype) for n, e in header.entries.items()}  # dtypes.DType
        self._offsets = {n: header.data_start + e.begin for n, e in header.entries.items()}
        self._torch_infos: dict[str, TensorInfo] | None = None

    @property
    def infos(self) -> dict[str, TensorInfo]:
        """Every tensor with torch's dtype (imports torch; `header_infos` says the same without it)."""
        if self._torch_infos is None:
            self._torch_infos = {n: TensorInfo(i.shape, i.dtype.torch) for n, i in self.header_infos.items()}
        return self._torch_infos

    def file_range(self, name: str) -> tuple[Path, int]:
        """(this file, byte offset of the tensor's first row): its bytes lie there as stored."""
        return self.path, self._offsets[name]

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
        import torch

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

"""Streaming safetensors writer: header first, then one tensor at a time, so peak memory is one tensor.
(Exports write through transfer.py, which uses `header_bytes` and moves bytes without materialising tensors.)

File format (safetensors): 8-byte little-endian header length, JSON header (offsets relative to the
end of the header, padded with spaces to a multiple of 8), then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from .dtypes import of_torch
from .info import RowStream, TensorInfo

if TYPE_CHECKING:
    import torch

PAGE = 4096  # copy_file_range runs at full speed only between page-congruent offsets
Entry = tuple[str, TensorInfo, Callable[[], "torch.Tensor | RowStream"]]


def header_bytes(entries: Iterable[tuple[str, TensorInfo]], metadata: dict | None = None,
                 start_residue: int | None = None) -> bytes:
    """Length prefix + JSON header, tensors contiguous in `entries` order, padded with spaces to a multiple
    of 8; with `start_residue` (a multiple of 8), padded further so the data starts at that offset mod PAGE."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, info in entries:
        header[name] = {"dtype": of_torch(info.dtype).safetensors, "shape": list(info.shape),
                        "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    if start_residue is not None:
        raw += b" " * ((start_residue - 8 - len(raw)) % PAGE)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(path: Path, entries: list[Entry], on_tensor: Callable[[str, int], None] | None = None,
                      metadata: dict | None = None) -> int:
    """Write `entries` to `path` in order; each producer is called once, its result written and dropped.

    Returns the number of bytes written. A producer whose tensor disagrees with its planned
    shape/dtype is a bug in the plan, so it raises RuntimeError rather than writing a wrong file.
    """
    head = header_bytes(((n, i) for n, i, _ in entries), metadata)
    written = len(head)
    with open(path, "wb") as f:
        f.write(head)
        for name, info, produce in entries:
            t = produce()
            if tuple(t.shape) != info.shape or t.dtype != info.dtype:
                raise RuntimeError(f"{name}: produced {t.dtype}{list(t.shape)}, planned {info.dtype}{list(info.shape)}")
            if isinstance(t, RowStream):  # unchanged rows, chunk by chunk
                n = 0
                for chunk in t.chunks():
                    f.write(chunk)
                    n += len(chunk)
            else:
                import torch

                data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                f.write(memoryview(data))
                n = data.nbytes
                del data
            if n != info.nbytes:
                raise RuntimeError(f"{name}: wrote {n} bytes, planned {info.nbytes}")
            written += n
            if on_tensor:
                on_tensor(name, n)
            del t
    return written

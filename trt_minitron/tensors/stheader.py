"""The one safetensors header parser: length prefix, JSON header, every entry validated; no torch.

Readers (stfile.py), checkpoint checks (checkpoints/trtllm.py) and the build plan read headers here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

from ..errors import CheckpointError
from .dtypes import BY_SAFETENSORS, DType

MAX_HEADER_BYTES = 100 * 2**20


@dataclass(frozen=True)
class HeaderEntry:
    dtype: DType
    shape: tuple[int, ...]
    begin: int  # data offsets, relative to the data section
    end: int


@dataclass(frozen=True)
class Header:
    entries: dict[str, HeaderEntry]
    data_start: int  # file offset of the data section

    @property
    def data_bytes(self) -> int:
        """Bytes of tensor data the header accounts for (the largest end offset)."""
        return max((e.end for e in self.entries.values()), default=0)


def read_header(path: Path, dtypes: Collection[str] = tuple(BY_SAFETENSORS)) -> Header:
    """A safetensors file's header, validated in full (tensors only of `dtypes`, safetensors codes), or a
    CheckpointError naming what is wrong."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw_len)
        if n < 2 or n > size - 8 or n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: not a safetensors file (header length {n} for a {size}-byte file)")
        try:
            header = json.loads(f.read(n), object_pairs_hook=unique_keys)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
        except DuplicateKey as e:
            raise CheckpointError(f"{path}: the safetensors header has the key {e.key!r} twice") from None
    return Header(parse_header(header, size - 8 - n, str(path), dtypes), 8 + n)


class DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json.loads' object_pairs_hook that refuses a key given twice (json keeps the last silently): for every JSON we read."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        out[k] = v
    return out


def parse_header(header: object, data_bytes: int, where: str,
                 dtypes: Collection[str] = tuple(BY_SAFETENSORS)) -> dict[str, HeaderEntry]:
    """The entries of a safetensors header (data offsets relative to the data section), or a CheckpointError.

    Entries are objects with a known dtype, a shape of non-negative integers and two data_offsets
    [begin, end) with end - begin = prod(shape) x itemsize, inside the data section, not overlapping.
    """
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: the safetensors header must be a JSON object, found a {type(header).__name__}")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise CheckpointError(f"{where}: __metadata__ must map strings to strings")
    entries: dict[str, HeaderEntry] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        bad = f"{where}: tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise CheckpointError(f"{bad} must be an object with dtype, shape and data_offsets, found {entry!r:.80}")
        dtype = BY_SAFETENSORS.get(entry["dtype"]) if entry["dtype"] in dtypes else None
        if dtype is None:
            raise CheckpointError(f"{bad} has unsupported dtype {entry['dtype']!r}; supported: {', '.join(dtypes)}")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            raise CheckpointError(f"{bad} has shape {shape!r}; expected a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise CheckpointError(f"{bad} has data_offsets {offsets!r}; expected [begin, end] with 0 <= begin <= end")
        begin, end = offsets
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= d
        if end - begin != nbytes:
            raise CheckpointError(f"{bad} spans {end - begin} bytes, but {entry['dtype']}{shape} needs {nbytes}")
        if end > data_bytes:
            raise CheckpointError(f"{bad} runs past the end of the file ({end} > {data_bytes} data bytes; truncated?)")
        entries[name] = HeaderEntry(dtype, tuple(shape), begin, end)
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
    return entries


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0

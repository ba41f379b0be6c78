"""A GGUF file's header, metadata and tensor table, every length checked before it is trusted.

Layout (GGUF v2/v3, little-endian; gguf-py's gguf_reader.py and ggml's gguf.cpp read the same): magic
"GGUF", u32 version, u64 tensor count, u64 metadata count; metadata as (string key, u32 value type,
value); the tensor table as (string name, u32 n_dims, u64 dims[n_dims] fastest first, u32 ggml type,
u64 offset from the data start); zero padding to `general.alignment` (default 32); the tensor data.
A string is a u64 byte length and UTF-8 bytes; an array a u32 element type, a u64 count, the elements.

gguf's GGUFReader trusts every count (an absurd array length makes it loop for ever). Here each count
and length is checked against the bytes left in the file, and against HEADER_LIMIT, before anything is
allocated or looped over, so a crafted file is one CheckpointError at once. The header is read with
plain reads into one growing buffer (no mmap); arrays of numbers are one numpy.frombuffer each.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CheckpointError, MissingDependencyError

HEADER_LIMIT = 64 * 2**20  # header + metadata + tensor table; a 256k-token vocabulary with its merges is ~10-20 MB
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 4  # arrays of arrays (no model writes deeper; the bound keeps recursion finite)
VERSIONS = (2, 3)  # v1 counted in 32 bits and predates every file in use
_FIRST_READ = 1 << 20


def import_gguf():
    """The gguf package (constants and quants), or a one-line error naming how to install it."""
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("reading .gguf needs the `gguf` package: pip install gguf") from None
    return gguf


@functools.cache
def _value_types() -> tuple[dict[int, str], dict[int, tuple[int, int]]]:
    """GGUF value type -> struct format of its scalars; ggml type -> (block elements, block bytes)."""
    gguf = import_gguf()
    v = gguf.GGUFValueType
    formats = {v.UINT8: "<B", v.INT8: "<b", v.UINT16: "<H", v.INT16: "<h", v.UINT32: "<I", v.INT32: "<i",
               v.FLOAT32: "<f", v.BOOL: "<?", v.UINT64: "<Q", v.INT64: "<q", v.FLOAT64: "<d"}
    return ({int(k): f for k, f in formats.items()},
            {int(k): (int(b), int(s)) for k, (b, s) in gguf.GGML_QUANT_SIZES.items()})


_STRING, _ARRAY, _U32, _U64 = 8, 9, "<I", "<Q"


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor table entry; the last two fields are layout rules a source sets (see gguf.py)."""

    gguf_name: str
    qtype: int  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # torch order: GGUF dims reversed
    offset: int  # absolute byte offset in the file
    nbytes: int
    permute_heads: int = 0  # q/k: heads whose rows llama.cpp interleaved for rope (Arch.gguf_permuted_qk)
    norm_offset: float = 0.0  # norm weights: stored as gamma + offset (Arch.gguf_norm_offset)

    @property
    def rows(self) -> int:
        """Rows as read: dim 0 of a matrix; a vector is one row (quantization blocks run along the last dim)."""
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def row_bytes(self) -> int:
        return self.nbytes // self.rows

    @property
    def row_numel(self) -> int:
        return math.prod(self.shape) // self.rows


@dataclass(frozen=True)
class GGUFHeader:
    """Metadata (scalars as Python values, string arrays as lists, number arrays as numpy) and the tensor table."""

    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    data_start: int


class _Cursor:
    """Reads the file's head on demand into one buffer; no read goes past the file or HEADER_LIMIT."""

    def __init__(self, f, size: int, where: str):
        self.f, self.size, self.where = f, size, where
        self.buf = bytearray()  # the file's bytes [0, len(buf))
        self.pos = 0

    def take(self, n: int, what: str) -> int:
        """Claim the next n bytes (read in if needed); returns where they start in the buffer."""
        start, end = self.pos, self.pos + n
        if end > self.size:
            raise CheckpointError(f"{self.where}: truncated or corrupt: {what} at byte {start} needs {n} bytes, "
                                  f"but the {self.size}-byte file has {self.size - start} left")
        if end > HEADER_LIMIT:
            raise CheckpointError(f"{self.where}: {what} at byte {start} would take the GGUF header past "
                                  f"{HEADER_LIMIT >> 20} MiB; not supported")
        if end > len(self.buf):
            want = min(max(end, 2 * len(self.buf), _FIRST_READ), self.size, HEADER_LIMIT)
            self.f.seek(len(self.buf))
            self.buf.extend(self.f.read(want - len(self.buf)))  # in place: callers may hold self.buf
            if len(self.buf) < end:  # the file shrank under us
                raise CheckpointError(f"{self.where}: truncated: the file ends at byte {len(self.buf)} inside its header")
        self.pos = end
        return start

    def scalar(self, fmt: str, what: str):
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def count(self, n: int, min_bytes: int, what: str) -> int:
        """A count read from the file, refused unless n items of at least min_bytes each fit in what is left."""
        if n * min_bytes > self.size - self.pos:
            raise CheckpointError(f"{self.where}: truncated or corrupt: {what} at byte {self.pos} counts {n} items of "
                                  f">= {min_bytes} bytes, but the {self.size}-byte file has {self.size - self.pos} left")
        if n * min_bytes > HEADER_LIMIT - self.pos:
            raise CheckpointError(f"{self.where}: {what} at byte {self.pos} counts {n} items, which would take the GGUF "
                                  f"header past {HEADER_LIMIT >> 20} MiB; not supported")
        return n

    def string(self, what: str) -> str:
        n = self.scalar(_U64, f"the length of {what}")
        start = self.take(n, what)
        return self._decode(start, n, what)

    def strings(self, n: int, what: str) -> list[str]:
        """n strings in one tight loop: the vocabulary (49k-256k entries) and the merges."""
        self.count(n, 8, what)
        out, unpack = [], struct.Struct(_U64).unpack_from
        buf, pos, have = self.buf, self.pos, len(self.buf)  # take() runs only when buf must grow: it checks bounds
        for i in range(n):
            if pos + 8 > have:
                self.pos = pos
                self.take(8, f"the length of item {i} of {what}")
                have = len(buf)
            (length,) = unpack(buf, pos)
            pos += 8
            if pos + length > have:
                self.pos = pos
                self.take(length, f"item {i} of {what}")
                have = len(buf)
            try:
                out.append(buf[pos: pos + length].decode("utf-8"))
            except UnicodeDecodeError:
                raise CheckpointError(f"{self.where}: item {i} of {what} at byte {pos} is not UTF-8") from None
            pos += length
        self.pos = pos
        return out

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        formats, _ = _value_types()
        if vtype in formats:
            return self.scalar(formats[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype != _ARRAY:
            raise CheckpointError(f"{self.where}: {what} has unknown value type {vtype}")
        etype = self.scalar(_U32, f"the element type of {what}")
        n = self.scalar(_U64, f"the length of {what}")
        if etype in formats:
            dtype = np.dtype(formats[etype])
            self.count(n, dtype.itemsize, what)
            return np.frombuffer(self.buf, dtype, n, self.take(n * dtype.itemsize, what)).copy()
        if etype == _STRING:
            return self.strings(n, what)
        if etype != _ARRAY:
            raise CheckpointError(f"{self.where}: {what} is an array of unknown value type {etype}")
        if depth + 1 >= MAX_NESTING:
            raise CheckpointError(f"{self.where}: {what} nests arrays deeper than {MAX_NESTING}")
        self.count(n, 12, what)  # each element: u32 type + u64 count at least
        return [self.value(_ARRAY, f"item {i} of {what}", depth + 1) for i in range(n)]

    def _decode(self, start: int, n: int, what: str) -> str:
        try:
            return self.buf[start: start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.where}: {what} at byte {start} is not UTF-8") from None


def read_header(path: Path) -> GGUFHeader:
    """Parse and check a GGUF file's header, metadata and tensor table (no tensor data is read)."""
    where, size = str(path), path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file, not a GGUF")
    with open(path, "rb") as f:
        c = _Cursor(f, size, where)
        c.take(4, "the magic")
        if c.buf[:4] != b"GGUF":
            raise CheckpointError(f"{path}: not a GGUF file (bad magic)")
        version = c.scalar(_U32, "the GGUF version")
        if version not in VERSIONS:
            endian = " (a big-endian file? only little-endian GGUF is read)" if version & 0xFFFF == 0 else ""
            raise CheckpointError(f"{path}: GGUF version {version} is not supported{endian}; supported: "
                                  + ", ".join(map(str, VERSIONS)))
        n_tensors = c.scalar(_U64, "the tensor count")
        n_keys = c.count(c.scalar(_U64, "the metadata count"), 8 + 4 + 1, "the metadata")
        meta: dict[str, Any] = {}
        for _ in range(n_keys):
            key = c.string("a metadata key")
            vtype = c.scalar(_U32, f"the value type of {key!r}")
            if key in meta:
                raise CheckpointError(f"{path}: metadata key {key!r} appears twice")
            meta[key] = c.value(vtype, f"metadata {key!r}")
        alignment = _alignment(meta, where)
        c.count(n_tensors, 8 + 4 + 8 + 4 + 8, "the tensor table")
        entries = [_table_entry(c) for _ in range(n_tensors)]
        data_start = -(-c.pos // alignment) * alignment
    return GGUFHeader(meta, _tensors(entries, data_start, alignment, size, where), data_start)


def _alignment(meta: dict, where: str) -> int:
    value = meta.get("general.alignment", 32)
    if type(value) is not int or value <= 0 or value & (value - 1):
        raise CheckpointError(f"{where}: general.alignment {value!r} is not a power of two (u32)")
    return value


def _table_entry(c: _Cursor) -> tuple[str, list[int], int, int, int]:
    at = c.pos
    name = c.string("a tensor name")
    n_dims = c.scalar(_U32, f"the dimension count of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise CheckpointError(f"{c.where}: tensor {name!r} has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}")
    dims = np.frombuffer(c.buf, "<u8", n_dims, c.take(8 * n_dims, f"the dimensions of tensor {name!r}")).tolist()
    qtype = c.scalar(_U32, f"the type of tensor {name!r}")
    offset = c.scalar(_U64, f"the offset of tensor {name!r}")
    return name, dims, qtype, offset, at


def _tensors(entries: list, data_start: int, alignment: int, size: int, where: str) -> dict[str, GGUFTensor]:
    """Table entries as GGUFTensors: known type, whole blocks, aligned, inside the file, not overlapping."""
    _, block_sizes = _value_types()
    table: dict[str, GGUFTensor] = {}
    for name, dims, qtype, offset, at in entries:
        if name in table:
            raise CheckpointError(f"{where}: tensor {name!r} appears twice in the tensor table")
        if qtype not in block_sizes:
            raise CheckpointError(f"{where}: tensor {name!r} (table entry at byte {at}) has unknown ggml type {qtype}")
        block, block_bytes = block_sizes[qtype]
        if min(dims) < 1 or dims[0] % block:
            raise CheckpointError(f"{where}: tensor {name!r} has dimensions {dims}: each must be >= 1 and the first "
                                  f"a multiple of its type's {block}-element block")
        nbytes = math.prod(dims) // block * block_bytes
        start = data_start + offset
        if offset % alignment:
            raise CheckpointError(f"{where}: tensor {name!r} starts at data offset {offset}, not a multiple of "
                                  f"the alignment {alignment}")
        if start + nbytes > size:
            raise CheckpointError(f"{where}: tensor {name} ends at byte {start + nbytes}, past the end of the "
                                  f"{size}-byte file (truncated?)")
        table[name] = GGUFTensor(name, qtype, tuple(reversed(dims)), start, nbytes)
    ordered = sorted(table.values(), key=lambda t: t.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.nbytes > b.offset:
            raise CheckpointError(f"{where}: tensors {a.gguf_name!r} and {b.gguf_name!r} overlap in the file")
    return table

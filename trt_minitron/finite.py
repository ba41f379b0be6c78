"""Non-finite weights, found by their exponent bits, and the one-line refusals that name them.

A float is NaN or Inf exactly when all its exponent bits are set (float8_e4m3fn: NaN when its 7 low bits are; it
has no Inf). Little-endian, those bits sit in an element's top byte (float16, float8) or top two bytes (bfloat16,
float32, float64), so bytes are checked with the standard library alone: the top bytes of a chunk small enough to
stay in the L2 cache are sliced out (a C copy) and searched for the few values that can start a non-finite number
(`in`, memchr), about 6 GB/s of data here on bytes already in hand, without importing numpy (0.15 s) or torch. A
top byte that only the byte below can settle (a bfloat16 or float32 of |w| >= 2**127, never a real weight) is
settled exactly, chunk-wide, by translating both byte columns to 0/1 and AND-ing them as integers.
The refusals count NaN and Inf with torch, on the failure path only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .dtypes import BY_NAME, dtype_name
from .errors import CheckpointError

if TYPE_CHECKING:
    import torch

CHUNK_BYTES = 256 << 10  # stays in the L2 cache: 3.7 GB/s read and checked here, 2.5 GB/s with 1 MiB chunks


class _Exponent:
    """A dtype's exponent in its top bytes: the top byte values (either sign) that start a non-finite element, and
    the bits of the byte below that must all be set too when the exponent reaches into it (0: the top byte decides)."""

    def __init__(self, top: tuple[int, ...], below: int = 0):
        self.needles = tuple(bytes((b,)) for b in top)
        self.below = below
        self.is_top = bytes(int(b in top) for b in range(256))
        self.is_below = bytes(int(b & below == below) for b in range(256))


_SEVEN_SET = (0x7F, 0xFF)
EXPONENTS = {
    "float16": _Exponent(tuple(b for b in range(256) if b & 0x7C == 0x7C)),  # 5 exponent bits, all in the top byte
    "bfloat16": _Exponent(_SEVEN_SET, 0x80),
    "float32": _Exponent(_SEVEN_SET, 0x80),
    "float64": _Exponent(_SEVEN_SET, 0xF0),
    "float8_e4m3fn": _Exponent(_SEVEN_SET),
}


class NonFinite(Exception):
    """Raised where bytes of source tensor `name` were found to hold a NaN or an Inf; the caller turns it into a
    CheckpointError with `refusal` (counting them needs torch)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def scannable(dtype) -> bool:
    """Whether `dtype` (torch's, a dtypes.DType or a name) is a float type whose values can be NaN or Inf."""
    return (dtype if isinstance(dtype, str) else dtype_name(dtype)) in EXPONENTS


def chunk_has_nonfinite(data: bytes | bytearray, dtype: str) -> bool:
    """Whether `data` (whole little-endian elements of `dtype`; bytes or a bytearray, whose strided slices are C
    copies, unlike a memoryview's) holds a NaN or an Inf."""
    exp, size = EXPONENTS[dtype], BY_NAME[dtype].itemsize
    top = data[size - 1::size]
    if not any(n in top for n in exp.needles):
        return False
    if not exp.below:
        return True
    below = data[size - 2::size]
    return int.from_bytes(top.translate(exp.is_top), "little") & int.from_bytes(below.translate(exp.is_below),
                                                                                 "little") != 0


def view_has_nonfinite(view: memoryview, dtype: str) -> bool:
    """`chunk_has_nonfinite` over any buffer of whole elements (a mapping, say), one L2-sized copy at a time."""
    step = CHUNK_BYTES - CHUNK_BYTES % BY_NAME[dtype].itemsize
    return any(chunk_has_nonfinite(view[i:i + step].tobytes(), dtype) for i in range(0, len(view), step))


def range_has_nonfinite(path: Path, offset: int, nbytes: int, dtype: str) -> bool:
    """Whether bytes [offset, offset + nbytes) of `path`, elements of `dtype`, hold a NaN or an Inf (plain reads
    into one small buffer: no mapping, so a file shorter than its header says is an error, not a SIGBUS)."""
    size = BY_NAME[dtype].itemsize
    buf = bytearray(CHUNK_BYTES - CHUNK_BYTES % size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        done = 0
        while done < nbytes:
            got = os.preadv(f.fileno(), [view[:min(len(buf), nbytes - done)]], offset + done)
            got -= got % size  # a read ending inside an element: the rest of it comes with the next one
            if got == 0:  # a regular file reads short only at its end
                raise CheckpointError(f"{path}: unexpected end of file at byte {offset + done}")
            if chunk_has_nonfinite(buf if got == len(buf) else buf[:got], dtype):
                return True
            done += got
    return False


# --- refusals (torch, on the failure path only) --------------------------------------------------------

def nonfinite_text(where: str, name: str, nan: int, inf: int, numel: int) -> str:
    return f"{where}: tensor {name} holds {nan} NaN and {inf} Inf among its {numel} values; a weight must be finite"


def refusal(where: str, name: str, reader, shape: tuple[int, ...], target=None) -> str:
    """Why tensor `name` (read from `reader` in row blocks) cannot be written: its NaN/Inf counted, or, when it has
    none, its largest |w| that overflows the `target` dtype of a cast, with a dtype that holds it."""
    import torch

    nan = inf = 0
    biggest = 0.0
    for block in _row_blocks(reader, name, shape):
        nan += int(block.isnan().sum())
        inf += int(block.isinf().sum())
        finite = block[block.isfinite()]
        biggest = max(biggest, float(finite.abs().max()) if finite.numel() else 0.0)
    if nan + inf or target is None:
        return nonfinite_text(where, name, nan, inf, math.prod(shape))
    to = dtype_name(target)
    fits = [d for d in ("bfloat16", "float32") if d != to and torch.finfo(getattr(torch, d)).max >= biggest]
    return (f"{where}: tensor {name} has max |w| {biggest:g}, which overflows {to} (largest finite "
            f"{torch.finfo(getattr(torch, to)).max:g}) and would be written as inf"
            + (f"; export with --dtype {fits[0]}" if fits else ""))


def require_finite_source_tensor(source, name: str) -> None:
    """Refuse source tensor `name` if it holds NaN/Inf: its bytes scanned in place where the source says where they
    lie (safetensors), else read in row blocks."""
    info = source.tensors()[name]
    at = getattr(source, "file_range", lambda _n: None)(name)
    if at is not None and scannable(info.dtype):
        if not range_has_nonfinite(at[0], at[1], info.nbytes, dtype_name(info.dtype)):
            return
    elif not any(not bool(b.isfinite().all()) for b in _row_blocks(source, name, info.shape)):
        return
    raise CheckpointError(refusal(source.description, name, source, info.shape))


def require_finite_source(source) -> None:
    """Refuse a source any of whose tensors holds NaN/Inf (for callers that hand the files to another loader)."""
    for name in source.tensors():
        require_finite_source_tensor(source, name)


def require_finite(t: torch.Tensor, where: str, name: str) -> None:
    """Refuse a tensor in memory that holds NaN/Inf, naming it with the counts."""
    if t.is_floating_point() and not bool(t.isfinite().all()):
        raise CheckpointError(nonfinite_text(where, name, int(t.isnan().sum()), int(t.isinf().sum()), t.numel()))


def _row_blocks(reader, name: str, shape: tuple[int, ...], block_bytes: int = 64 << 20):
    """Tensor `name` as float32 row blocks of about `block_bytes` (the whole of a 0-d or 1-d tensor at once)."""
    if len(shape) < 2:
        yield reader.read(name).float()
        return
    step = max(1, block_bytes // max(1, math.prod(shape[1:]) * 4))
    for start in range(0, shape[0], step):
        yield reader.read(name, 0, start, min(shape[0], start + step)).float()

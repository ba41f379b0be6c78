"""Non-finite weights, found by their exponent bits, and the one-line refusals that name them.

A float is NaN or Inf exactly when all its exponent bits are set (float8_e4m3fn: NaN when its 7 low bits are; it
has no Inf). Read as an unsigned integer of its width with the sign bit cleared, such a value is at least the
exponent mask, so one `&` and one `max` over a buffer say whether it holds any: numpy over bytes read into an
L2-sized buffer, ~5-8 GB/s here, releasing the GIL so that export's copy threads check side by side. numpy is
imported at the first check (0.15 s: the cost of checking an export that only moves bytes, with the pass itself,
measured in benchmarks/README.md); a pure-Python test of the top bytes ran at half the speed and held the GIL.
The refusals count NaN and Inf with torch, on the failure path only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError
from .dtypes import BY_NAME, dtype_name

if TYPE_CHECKING:
    import torch

CHUNK_BYTES = 256 << 10  # read and checked while it stays in the L2 cache: larger chunks measured slower here
EXPONENT_MASK = {"float16": 0x7C00, "bfloat16": 0x7F80, "float32": 0x7F800000, "float64": 0x7FF0000000000000,
                 "float8_e4m3fn": 0x7F}


class NonFinite(Exception):
    """Raised where bytes of source tensor `name` were found to hold a NaN or an Inf; the caller turns it into a
    CheckpointError with `refusal` (counting them needs torch)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def scannable(dtype) -> bool:
    """Whether `dtype` (torch's, a dtypes.DType or a name) is a float type whose values can be NaN or Inf."""
    return (dtype if isinstance(dtype, str) else dtype_name(dtype)) in EXPONENT_MASK


class Checker:
    """Says whether a buffer of whole little-endian elements of `dtype` holds a NaN or an Inf, in chunks of
    CHUNK_BYTES through one scratch array (no allocation per call)."""

    def __init__(self, dtype: str):
        import numpy as np

        size = BY_NAME[dtype].itemsize
        self.np, self.uint = np, {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[size]
        self.magnitude, self.exponent = self.uint((1 << (8 * size - 1)) - 1), self.uint(EXPONENT_MASK[dtype])
        self.scratch = np.empty(CHUNK_BYTES // size, self.uint)

    def __call__(self, data) -> bool:
        values, np, step = self.np.frombuffer(data, self.uint), self.np, self.scratch.size
        for i in range(0, values.size, step):
            part = values[i:i + step]
            out = self.scratch[:part.size]
            np.bitwise_and(part, self.magnitude, out=out)
            if out.max() >= self.exponent:
                return True
        return False


def tensor_has_nonfinite(t: torch.Tensor) -> bool:
    """Whether a tensor in memory holds a NaN or an Inf: its bytes through a Checker, so no temporary as large as the
    tensor (torch's isfinite makes an abs() copy and three bool tensors of its size)."""
    name = dtype_name(t.dtype)
    if name not in EXPONENT_MASK or not t.numel():
        return False
    import torch

    return Checker(name)(memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()))


def range_has_nonfinite(path: Path, offset: int, nbytes: int, dtype: str) -> bool:
    """Whether bytes [offset, offset + nbytes) of `path`, elements of `dtype`, hold a NaN or an Inf (plain reads
    into one small buffer: no mapping, so a file shorter than its header says is an error, not a SIGBUS)."""
    size, check = BY_NAME[dtype].itemsize, Checker(dtype)
    buf = bytearray(CHUNK_BYTES - CHUNK_BYTES % size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        done = 0
        while done < nbytes:
            got = os.preadv(f.fileno(), [view[:min(len(buf), nbytes - done)]], offset + done)
            got -= got % size  # a read ending inside an element: the rest of it comes with the next one
            if got == 0:  # a regular file reads short only at its end
                raise CheckpointError(f"{path}: unexpected end of file at byte {offset + done}")
            if check(view[:got]):
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
    elif not any(tensor_has_nonfinite(b) for b in _row_blocks(source, name, info.shape)):
        return
    raise CheckpointError(refusal(source.description, name, source, info.shape))


def require_finite_source(source) -> None:
    """Refuse a source any of whose tensors holds NaN/Inf (for callers that hand the files to another loader)."""
    for name in source.tensors():
        require_finite_source_tensor(source, name)


def require_finite(t: torch.Tensor, where: str, name: str) -> None:
    """Refuse a tensor in memory that holds NaN/Inf, naming it with the counts."""
    if tensor_has_nonfinite(t):
        raise CheckpointError(nonfinite_text(where, name, int(t.isnan().sum()), int(t.isinf().sum()), t.numel()))


def _row_blocks(reader, name: str, shape: tuple[int, ...], block_bytes: int = 64 << 20):
    """Tensor `name` as float32 row blocks of about `block_bytes` (the whole of a 0-d or 1-d tensor at once)."""
    if len(shape) < 2:
        yield reader.read(name).float()
        return
    step = max(1, block_bytes // max(1, math.prod(shape[1:]) * 4))
    for start in range(0, shape[0], step):
        yield reader.read(name, 0, start, min(shape[0], start + step)).float()

"""Rows of one GGUF tensor read with plain reads and dequantized to float32 chunk by chunk.

Each chunk is read into its own buffer (os.preadv at its offset; no mmap, whose touched pages count towards
RSS) and dequantized straight into its rows of the output, so the temporaries are about one chunk.
gguf.quants does the arithmetic, except for Q8_0 (llama.cpp's usual embedding and output type) and Q4_1
(SmolLM2's layers), done here as numpy ufuncs writing into the output: the same float32 operations
as gguf.quants', bit for bit (tests/test_gguf_dequant.py), without its per-16-row groups, splits and
copies.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ...errors import CheckpointError
from .format import GGUFTensor, import_gguf

CHUNK_BYTES = 8 * 2**20  # float32 output per chunk: small enough to keep the temporaries out of the heap


def read_rows(path: Path, t: GGUFTensor, start: int, stop: int, stored: torch.dtype | None) -> torch.Tensor:
    """Rows [start:stop] of `t` as (rows, row elements): as stored when `stored` is its dtype, else float32."""
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        if stored is not None:
            return _read(fd, path, t, start, stop).view(stored).reshape(stop - start, t.row_numel)
        out = torch.empty((stop - start, t.row_numel), dtype=torch.float32)
        step = max(1, CHUNK_BYTES // (t.row_numel * 4))  # blocks never span rows: each chunk dequantizes alone
        for first in range(start, stop, step):
            last = min(stop, first + step)
            blocks = _read(fd, path, t, first, last).numpy().reshape(last - first, t.row_bytes)
            dequantize_into(blocks, t.qtype, out[first - start: last - start].numpy())
    return out


def dequantize_into(blocks: np.ndarray, qtype: int, out: np.ndarray) -> None:
    """Dequantize `blocks` (rows of one ggml type's blocks, uint8) into the float32 array `out`."""
    direct = _DIRECT.get(qtype)
    if direct is not None:
        direct(blocks, out)
        return
    gguf = import_gguf()
    out[...] = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(qtype))


def _half(b: np.ndarray, at: int) -> np.ndarray:
    """The float16 at byte `at` of every block, as a (blocks, 1) float32 column."""
    return b[:, at: at + 2].copy().view(np.float16).astype(np.float32)


def _q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    """Block: f16 d, 32 x int8 q; x = q * d (gguf.quants: x.astype(f32) * d)."""
    b = blocks.reshape(-1, 34)
    np.multiply(b[:, 2:].view(np.int8), _half(b, 0), out=out.reshape(-1, 32), dtype=np.float32)


def _q4_1(blocks: np.ndarray, out: np.ndarray) -> None:
    """Block: f16 d, f16 m, 16 bytes of nibbles (low nibbles are x[0:16], high x[16:32]); x = d * q + m."""
    b = blocks.reshape(-1, 20)
    d, m, qs, o = _half(b, 0), _half(b, 2), b[:, 4:], out.reshape(-1, 2, 16)
    np.multiply(qs & 0x0F, d, out=o[:, 0], dtype=np.float32)
    np.multiply(qs >> 4, d, out=o[:, 1], dtype=np.float32)
    np.add(o, m[:, :, None], out=o)


_DIRECT = {8: _q8_0, 3: _q4_1}  # ggml type ids of Q8_0 and Q4_1


def _read(fd: int, path: Path, t: GGUFTensor, start: int, stop: int) -> torch.Tensor:
    """The stored bytes of rows [start:stop], read into a fresh buffer."""
    buf = torch.empty((stop - start) * t.row_bytes, dtype=torch.uint8)
    view, at, got = memoryview(buf.numpy()), t.offset + start * t.row_bytes, 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], at + got)
        if not n:
            raise CheckpointError(f"{path}: unexpected end of file reading {t.gguf_name} (truncated?)")
        got += n
    return buf

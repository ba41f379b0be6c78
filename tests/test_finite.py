"""finite.py's exponent-bit test against torch.isfinite: every 16-bit and 8-bit pattern, random and edge 32/64-bit
patterns, at several positions of a buffer spanning many chunks and across chunk boundaries of a file."""

import pytest
import torch

from trt_minitron.errors import CheckpointError
from trt_minitron.tensors import finite

SIGNED = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def _all_patterns(dtype: torch.dtype) -> torch.Tensor:
    bits = 8 * dtype.itemsize
    return torch.arange(2**bits, dtype=torch.int32).to(SIGNED[dtype.itemsize]).view(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_every_pattern_alone_agrees_with_torch(dtype):
    values = _all_patterns(dtype)
    finite_ = values.float().isfinite()
    name = str(dtype).removeprefix("torch.")
    check = finite.Checker(name)
    got = [check(_bytes(values[i:i + 1])) for i in range(values.numel())]
    assert got == (~finite_).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_and_edge_patterns_agree_with_torch(dtype):
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-2**31, 2**31 - 1, (20000,), generator=g, dtype=torch.int64)
    values = (bits.to(torch.int32) if dtype == torch.float32 else bits * 2**32 + bits).view(dtype)
    fi = torch.finfo(dtype)
    edges = torch.tensor([fi.max, -fi.max, fi.tiny, 0.0, -0.0, float("inf"), float("-inf"), float("nan"), 2.0**127,
                          -(2.0**127), 1.7e38], dtype=dtype)
    check = finite.Checker(str(dtype).removeprefix("torch."))
    for v in torch.cat([values, edges]):
        assert check(_bytes(v.reshape(1))) == (not bool(v.isfinite())), v


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_one_bad_value_anywhere_in_a_buffer_of_many_chunks(dtype, monkeypatch):
    """Huge finite values (one exponent bit short of all ones) around the bad one; a read-only memoryview too."""
    monkeypatch.setattr(finite, "CHUNK_BYTES", 256)
    check = finite.Checker(str(dtype).removeprefix("torch."))
    base = torch.full((4096,), torch.finfo(dtype).max, dtype=dtype)
    base[::3] = -3.0e38
    assert not check(_bytes(base))
    for at in (0, 1, 63, 64, 2047, 4095):
        for bad in (float("nan"), float("inf")):
            t = base.clone()
            t[at] = bad
            assert check(_bytes(t)) and check(memoryview(_bytes(t)))


def test_file_ranges_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(finite, "CHUNK_BYTES", 64)
    data = torch.randn(1000).to(torch.bfloat16)
    for at in (0, 31, 32, 999):
        t = data.clone()
        t[at] = float("nan")
        f = tmp_path / f"x{at}"
        f.write_bytes(b"head" + _bytes(t))
        assert finite.range_has_nonfinite(f, 4, 2000, "bfloat16")
        assert finite.range_has_nonfinite(f, 4 + 2 * at, 2, "bfloat16")
        assert not finite.range_has_nonfinite(f, 4 + 2 * (at + 1), 2000 - 2 * (at + 1), "bfloat16")
    (tmp_path / "clean").write_bytes(_bytes(data))
    with pytest.raises(CheckpointError, match="unexpected end of file"):  # a header promising more than is there
        finite.range_has_nonfinite(tmp_path / "clean", 0, 2002, "bfloat16")

"""sources/gguf/dequant.py: its direct Q8_0 / Q4_1 numpy paths and its chunked reads against gguf.quants, bit for bit."""

import gguf
import numpy as np
import pytest

from trt_minitron.sources.gguf import dequant as gguf_dequant
from trt_minitron.sources.gguf.dequant import dequantize_into, read_rows
from trt_minitron.sources.gguf.format import read_header

Q = gguf.GGMLQuantizationType


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_1])
def test_direct_paths_equal_gguf_quants_bit_for_bit(qtype):
    assert int(qtype) in gguf_dequant._DIRECT  # the direct path, not gguf.quants, is what runs below
    rng = np.random.default_rng(int(qtype))
    weights = rng.standard_normal((96, 256)).astype(np.float32) * np.logspace(-6, 2, 96, dtype=np.float32)[:, None]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    for blocks in (gguf.quants.quantize(weights, qtype),  # what converters write
                   rng.integers(0, 256, (96, 256 // block * size), dtype=np.uint8)):  # any bytes: NaN, inf, subnormal scales
        with np.errstate(invalid="ignore", over="ignore"):
            want = gguf.quants.dequantize(blocks, qtype)
            got = np.full(want.shape, 7.0, dtype=np.float32)
            dequantize_into(blocks, int(qtype), got)
        assert np.array_equal(_bits(got), _bits(want))


@pytest.mark.parametrize("chunk_rows", [1, 3, 1000])
def test_chunked_row_reads_equal_whole_tensor_dequantization(tmp_path, monkeypatch, chunk_rows):
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((10, 64)).astype(np.float32)
    w = gguf.GGUFWriter(tmp_path / "m.gguf", "llama")
    for qtype in (Q.Q8_0, Q.Q4_1, Q.Q5_1):  # Q5_1 has no direct path: gguf.quants does it
        w.add_tensor(f"t{qtype.name}", gguf.quants.quantize(weights, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    monkeypatch.setattr(gguf_dequant, "CHUNK_BYTES", chunk_rows * 64 * 4)
    header, reader = read_header(tmp_path / "m.gguf"), gguf.GGUFReader(tmp_path / "m.gguf")
    for t in reader.tensors:
        want = gguf.quants.dequantize(np.array(t.data), t.tensor_type)
        ours = header.tensors[t.name]
        assert np.array_equal(_bits(read_rows(tmp_path / "m.gguf", ours, 0, 10, None).numpy()), _bits(want))
        assert np.array_equal(_bits(read_rows(tmp_path / "m.gguf", ours, 4, 9, None).numpy()), _bits(want[4:9]))

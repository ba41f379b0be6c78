"""The GGUF header parser (sources/gguf/format.py) on files written byte by byte: valid ones agree with gguf's
GGUFReader; crafted ones (absurd counts and lengths, bad tables) are one CheckpointError line at once.

The time bounds are hang guards (gguf's GGUFReader loops for ever on an absurd array length), not benchmarks.
"""

import signal
import struct
import time
from contextlib import contextmanager

import gguf
import numpy as np
import pytest
from test_gguf_tiny import write_gguf
from tiny import make_tiny_llama

from trt_minitron.cli import main
from trt_minitron.errors import CheckpointError, TrtMinitronError
from trt_minitron.sources.gguf.format import HEADER_LIMIT, read_header
from trt_minitron.sources.gguf.source import GGUFSource

V = gguf.GGUFValueType
U64_MAX = 2**64 - 1


@contextmanager
def hang_guard(seconds=5):
    """Fail (instead of hanging the suite) if the block runs longer than `seconds`."""
    def fail(*_):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert time.perf_counter() - start < seconds


def string(text) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def kv(key, vtype, payload: bytes) -> bytes:
    return string(key) + struct.pack("<I", vtype) + payload


def tensor(name, dims, qtype=0, offset=0, n_dims=None) -> bytes:
    n = len(dims) if n_dims is None else n_dims
    return string(name) + struct.pack("<I", n) + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", qtype, offset)


ARCH = kv("general.architecture", V.STRING, string("llama"))
EMBD = tensor("token_embd.weight", [32, 4])  # F32, 4 rows of 32: 512 bytes


def gguf_file(path, kvs=(ARCH,), tensors=(EMBD,), data=bytes(512), n_kv=None, n_tensors=None, version=3,
              align=32, magic=b"GGUF"):
    """A GGUF written field by field; counts default to what is there, and can be set to anything."""
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    path.write_bytes(body + bytes(-len(body) % align) + data)
    return path


def refused(path) -> str:
    with hang_guard(), pytest.raises(CheckpointError) as e:
        read_header(path)
    return str(e.value)


def test_a_hand_written_file_reads_as_gguf_reads_it(tmp_path):
    empty = kv("e", V.ARRAY, struct.pack("<IQ", V.UINT32, 0))
    path = gguf_file(tmp_path / "ok.gguf", kvs=(ARCH, empty))
    header = read_header(path)
    theirs = gguf.GGUFReader(path)
    assert header.metadata.keys() == {"general.architecture", "e"} and header.metadata["e"].tolist() == []
    (t,) = header.tensors.values()
    assert (t.gguf_name, t.shape, t.offset, t.nbytes) == ("token_embd.weight", (4, 32), theirs.data_offset, 512)
    assert t.offset == theirs.tensors[0].data_offset and header.data_start == theirs.data_offset


def test_every_value_type_and_nested_arrays_read_as_gguf_reads_them(tmp_path):
    w = gguf.GGUFWriter(tmp_path / "v.gguf", "llama")
    values = {"u8": (200, V.UINT8), "i8": (-100, V.INT8), "u16": (60000, V.UINT16), "i16": (-30000, V.INT16),
              "u32": (4_000_000_000, V.UINT32), "i32": (-2_000_000_000, V.INT32), "f32": (0.1, V.FLOAT32),
              "b": (True, V.BOOL), "s": ("héllo", V.STRING), "u64": (2**63 + 5, V.UINT64), "i64": (-(2**62), V.INT64),
              "f64": (0.1, V.FLOAT64), "floats": ([0.5, -1.25, 3.0], V.ARRAY),
              "ints": ([1, -2, 3], V.ARRAY), "strs": (["a", "", "ü" * 300], V.ARRAY),
              "nested": ([[1, 2], [3]], V.ARRAY)}
    for key, (value, vtype) in values.items():
        w.add_key_value(f"t.{key}", value, vtype)
    w.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    header = read_header(tmp_path / "v.gguf")
    reader = gguf.GGUFReader(tmp_path / "v.gguf")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "t.nested":  # GGUFReader flattens nested arrays
            continue
        ours = header.metadata[key]
        assert (ours.tolist() if isinstance(ours, np.ndarray) else ours) == field.contents(), key
    assert [a.tolist() for a in header.metadata["t.nested"]] == [[1, 2], [3]]
    assert header.metadata["t.u64"] == 2**63 + 5 and header.metadata["t.strs"][2] == "ü" * 300
    for t in reader.tensors:
        ours = header.tensors[t.name]
        assert (ours.qtype, ours.shape, ours.offset, ours.nbytes) == (
            int(t.tensor_type), tuple(reversed(t.shape.tolist())), t.data_offset, t.n_bytes)


ABSURD = [
    # (case, file fields, what the message says)
    ("array length", dict(kvs=(ARCH, kv("x", V.ARRAY, struct.pack("<IQ", V.UINT32, 2**62)))),
     "metadata 'x' at byte 94 counts 4611686018427387904 items of >= 4 bytes, but the 672-byte file has 578 left"),
    ("string array length", dict(kvs=(ARCH, kv("x", V.ARRAY, struct.pack("<IQ", V.STRING, U64_MAX)))),
     f"metadata 'x' at byte 94 counts {U64_MAX} items of >= 8 bytes"),
    ("array of arrays length", dict(kvs=(ARCH, kv("x", V.ARRAY, struct.pack("<IQ", V.ARRAY, 2**40)))),
     "counts 1099511627776 items of >= 12 bytes"),
    ("string length", dict(kvs=(ARCH, kv("x", V.STRING, struct.pack("<Q", 2**63) + b"abc"))),
     "metadata 'x' at byte 90 needs 9223372036854775808 bytes, but the 672-byte file has 582 left"),
    ("key length", dict(kvs=(struct.pack("<Q", U64_MAX) + b"general.architecture",)),
     "a metadata key at byte 32 needs 18446744073709551615 bytes"),
    ("metadata count", dict(n_kv=2**50), "the metadata at byte 24 counts 1125899906842624 items"),
    ("tensor count", dict(n_tensors=U64_MAX), f"the tensor table at byte 69 counts {U64_MAX} items"),
    ("tensor name length", dict(tensors=(struct.pack("<Q", 2**60),)), "a tensor name at byte 77 needs 1152921504606846976 bytes"),
]


@pytest.mark.parametrize("case, fields, says", ABSURD, ids=[c[0] for c in ABSURD])
def test_absurd_counts_and_lengths_are_refused_before_use(tmp_path, case, fields, says):
    message = refused(gguf_file(tmp_path / "bad.gguf", **fields))
    assert "truncated or corrupt" in message and says in message, message


def test_counts_that_fit_the_file_but_not_the_header_limit_are_refused(tmp_path):
    path = gguf_file(tmp_path / "big.gguf", kvs=(ARCH, kv("x", V.ARRAY, struct.pack("<IQ", V.STRING, 2**24))))
    with open(path, "r+b") as f:  # a sparse file: large, with nothing in it
        f.truncate(4 * HEADER_LIMIT)
    assert "would take the GGUF header past 64 MiB" in refused(path)


TABLES = [
    ("n_dims 5", dict(tensors=(tensor("t", [32, 1, 1, 1, 4]),)), "tensor 't' has 5 dimensions; GGUF allows 1 to 4"),
    ("n_dims huge", dict(tensors=(tensor("t", [32], n_dims=2**31),)), "has 2147483648 dimensions"),
    ("n_dims 0", dict(tensors=(tensor("t", []),)), "has 0 dimensions"),
    ("dim 0", dict(tensors=(tensor("t", [32, 0]),)), "dimensions [32, 0]: each must be >= 1"),
    ("partial block", dict(tensors=(tensor("t", [40, 4], qtype=gguf.GGMLQuantizationType.Q8_0),)),
     "the first a multiple of its type's 32-element block"),
    ("past the end", dict(tensors=(tensor("t", [32, 5]),)), "tensor t ends at byte 768, past the end of the 640-byte file"),
    ("offset past the end", dict(tensors=(tensor("t", [32, 4], offset=2**63),)), "past the end"),
    ("offset u64 max", dict(tensors=(tensor("t", [32, 4], offset=U64_MAX),)), "not a multiple of the alignment 32"),
    ("dims overflow int64", dict(tensors=(tensor("t", [2**63, 2**63]),)), "past the end"),
    ("dims u64 max", dict(tensors=(tensor("t", [U64_MAX - 31, 2]),)), "past the end"),
    ("misaligned", dict(tensors=(tensor("t", [8]), tensor("u", [8], offset=8))), "data offset 8, not a multiple"),
    ("overlap", dict(tensors=(tensor("t", [32, 4]), tensor("u", [32], offset=64))), "tensors 't' and 'u' overlap"),
    ("duplicate tensor", dict(tensors=(tensor("t", [32]), tensor("t", [32], offset=128))), "'t' appears twice"),
    ("unknown ggml type", dict(tensors=(tensor("t", [32], qtype=4),)), "has unknown ggml type 4"),
    ("duplicate key", dict(kvs=(ARCH, ARCH)), "metadata key 'general.architecture' appears twice"),
    ("unknown value type", dict(kvs=(ARCH, kv("x", 13, b""))), "metadata 'x' has unknown value type 13"),
    ("unknown element type", dict(kvs=(ARCH, kv("x", V.ARRAY, struct.pack("<IQ", 99, 1)))),
     "metadata 'x' is an array of unknown value type 99"),
    ("deep nesting", dict(kvs=(ARCH, kv("x", V.ARRAY, struct.pack("<IQ", V.ARRAY, 1) * 6 + bytes(64)))),
     "nests arrays deeper than 4"),
    ("key not utf-8", dict(kvs=(kv(b"\xff\xfe", V.UINT8, b"\x01"),)), "a metadata key at byte 32 is not UTF-8"),
    ("token not utf-8", dict(kvs=(ARCH, kv("x", V.ARRAY, struct.pack("<IQ", V.STRING, 2) + string("a") + string(b"\xc3")))),
     "item 1 of metadata 'x' at byte 111 is not UTF-8"),
    ("alignment 3", dict(kvs=(ARCH, kv("general.alignment", V.UINT32, struct.pack("<I", 3)))),
     "general.alignment 3 is not a power of two"),
    ("alignment string", dict(kvs=(ARCH, kv("general.alignment", V.STRING, string("32")))), "general.alignment '32'"),
    ("version 1", dict(version=1), "GGUF version 1 is not supported; supported: 2, 3"),
    ("big-endian", dict(version=3 << 24), "(a big-endian file? only little-endian GGUF is read)"),
    ("bad magic", dict(magic=b"GGML"), "not a GGUF file (bad magic)"),
]


@pytest.mark.parametrize("case, fields, says", TABLES, ids=[c[0] for c in TABLES])
def test_bad_tables_and_fields_are_refused(tmp_path, case, fields, says):
    message = refused(gguf_file(tmp_path / "bad.gguf", **fields))
    assert says in message, message


@pytest.mark.parametrize("case", ["array length", "tensor count", "n_dims 5", "dims overflow int64"])
def test_cli_export_of_a_crafted_file_is_one_line_exit_2(tmp_path, capsys, case):
    fields = next(f for c, f, _ in ABSURD + TABLES if c == case)
    path = gguf_file(tmp_path / "bad.gguf", **fields)
    capsys.readouterr()
    with hang_guard():
        assert main(["export", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trt-minitron: error: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]


def _llama_kvs(**overrides) -> tuple:
    values = {"llama.embedding_length": (V.UINT32, 32), "llama.attention.head_count": (V.UINT32, 2),
              "llama.block_count": (V.UINT32, 1), "llama.feed_forward_length": (V.UINT32, 64),
              "llama.attention.layer_norm_rms_epsilon": (V.FLOAT32, 1e-5), **overrides}
    fmt = {V.UINT32: "<I", V.FLOAT32: "<f"}
    return (ARCH, *(kv(k, t, string(v) if t == V.STRING else struct.pack(fmt[t], v)) for k, (t, v) in values.items()))


@pytest.mark.parametrize("override, says", [
    ({"llama.embedding_length": (V.STRING, "576")}, "'llama.embedding_length' holds str '576'; expected a number"),
    ({"llama.attention.head_count": (V.UINT32, 0)}, "embedding_length 32, head_count 0"),
    ({"llama.rope.scaling.type": (V.UINT32, 1)}, "'llama.rope.scaling.type' holds int 1; expected a string"),
])
def test_metadata_of_the_wrong_type_is_one_line(tmp_path, override, says):
    path = gguf_file(tmp_path / "m.gguf", kvs=_llama_kvs(**override))
    with pytest.raises(TrtMinitronError) as e:
        GGUFSource(path)
    assert says in str(e.value)


@pytest.mark.parametrize("value, shown", [(kv("general.architecture", V.ARRAY, struct.pack("<IQ", V.STRING, 1) + string("llama")),
                                           "['llama']"),
                                          (kv("general.architecture", V.ARRAY, struct.pack("<IQ", V.UINT8, 1) + b"\x01"),
                                           "array([1], dtype=uint8)"),
                                          (kv("general.architecture", V.UINT32, struct.pack("<I", 7)), "7")])
def test_an_architecture_that_is_not_a_string_is_one_line(tmp_path, value, shown):
    with pytest.raises(TrtMinitronError) as e:
        GGUFSource(gguf_file(tmp_path / "m.gguf", kvs=(value,)))
    assert f"GGUF architecture {shown} is not supported" in str(e.value)


def test_a_special_token_id_outside_the_vocabulary_is_one_line(tmp_path, capsys):
    hf_dir = make_tiny_llama(tmp_path / "hf", seed=1, tie_word_embeddings=True, rope_scaling=None)
    from test_gguf_tiny import TOKENIZER
    path = write_gguf(hf_dir, tmp_path / "m.gguf", extra={**TOKENIZER, "add_eos_token_id": 10**6})
    capsys.readouterr()
    assert main(["export", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.ggml.eos_token_id = 1000000 is not a token id (the vocabulary has" in err and err.count("\n") == 1


def test_mutated_headers_are_read_or_refused_never_crash(tmp_path):
    """Random byte changes in a real (tiny) header: each file opens (tokenizer included), or is refused with one
    TrtMinitronError; none raises anything else."""
    hf_dir = make_tiny_llama(tmp_path / "hf", seed=1, tie_word_embeddings=True, rope_scaling=None)
    good = write_gguf(hf_dir, tmp_path / "m.gguf").read_bytes()
    header_end = read_header(tmp_path / "m.gguf").data_start
    rng = np.random.default_rng(0)
    outcomes = {"opened": 0, "refused": 0}
    with hang_guard(60):
        for i in range(300):
            data = bytearray(good)
            for at in rng.integers(0, header_end, size=rng.integers(1, 4)):
                data[at] = rng.integers(0, 256) if rng.random() < 0.7 else 0xFF
            path = tmp_path / f"f{i}.gguf"
            path.write_bytes(bytes(data))
            try:
                src = GGUFSource(path)
                for name in src.tensors():
                    src.read(name)
                (tmp_path / f"tok{i}").mkdir()
                src.write_tokenizer(tmp_path / f"tok{i}")
                outcomes["opened"] += 1
            except TrtMinitronError:
                outcomes["refused"] += 1
            path.unlink()
    assert outcomes["opened"] > 20 and outcomes["refused"] > 20, outcomes

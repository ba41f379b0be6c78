"""The fast write paths give the same files as a naive load-cast-save export, byte for byte.

The fast paths: copy_file_range between page-congruent offsets, unchanged rows through a buffer
otherwise, row blocks read once for every rank (column splits, casts, +1), zero rows for the padded
vocab. The reference loads every source tensor whole (safetensors load_file), builds each output
tensor in memory (slice, concatenate, cast) and lays the file out tensor after tensor.
"""

import errno
import json
import os
import re
import struct
import subprocess
import sys

import pytest
import torch
from gguf_transformers import InMemorySource
from plant import function_rule
from safetensors.torch import load_file, save_file
from synthetic import write_synthetic_hf

import trt_minitron.export.run as export_mod
from trt_minitron.archs.llama import Llama
from trt_minitron.export import transfer
from trt_minitron.export.run import ExportOptions, _progress, plan_export, run_export
from trt_minitron.sources import open_source
from trt_minitron.sources.base import TensorInfo
from trt_minitron.tensors.mapping import Mapping
from trt_minitron.tensors.stwriter import header_bytes

# 8 query heads, 2 KV heads (repeated at tp 4), head_dim 24 != 64 / 8, vocab 250 (padded at tp 4).
LLAMA = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
         "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 24, "hidden_act": "silu",
         "rms_norm_eps": 1e-5, "vocab_size": 250, "max_position_embeddings": 256, "tie_word_embeddings": False}
NEMOTRON = {"architectures": ["NemotronForCausalLM"], "hidden_size": 48, "intermediate_size": 80,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "hidden_act": "relu2", "norm_eps": 1e-5, "vocab_size": 250, "max_position_embeddings": 256,
            "partial_rotary_factor": 0.5, "tie_word_embeddings": False}
MODELS = {"llama": LLAMA, "llama_tied": {**LLAMA, "tie_word_embeddings": True}, "nemotron": NEMOTRON}
CASTS = [("bfloat16", "bfloat16"), ("bfloat16", "float16"), ("bfloat16", "float32"), ("float32", "bfloat16")]
DT = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Each model in bf16 and fp32, stored in the synthetic order and (resaved) in save_file's sorted order."""
    root = tmp_path_factory.mktemp("speed-src")
    out = {}
    for name, cfg in MODELS.items():
        for dt in ("bfloat16", "float32"):
            folder = write_synthetic_hf(root / f"{name}-{dt}", cfg, dtype=DT[dt], seed=len(out))
            out[name, dt, "synthetic"] = folder
            sorted_folder = root / f"{name}-{dt}-sorted"
            sorted_folder.mkdir()
            (sorted_folder / "config.json").write_text((folder / "config.json").read_text())
            save_file(load_file(folder / "model.safetensors"), sorted_folder / "model.safetensors")
            out[name, dt, "sorted"] = sorted_folder
    return out


class _DictReader:
    def __init__(self, state):
        self.state = state
        self.infos = {n: TensorInfo(tuple(t.shape), t.dtype) for n, t in state.items()}

    def read(self, name, dim=None, start=0, stop=None):
        t = self.state[name]
        return t if dim is None else t.narrow(dim, start, (t.shape[dim] if stop is None else stop) - start)


def naive_tensors(src, tp, dtype) -> dict[int, dict[str, torch.Tensor]]:
    """Every output tensor built in memory from whole source tensors: slice, concatenate, cast."""
    source = open_source(src)
    try:
        _, _, planned = plan_export(source, Mapping(tp, 1), dtype)
    finally:
        source.close()
    reader = _DictReader(load_file(src / "model.safetensors"))
    out: dict[int, dict[str, torch.Tensor]] = {r: {} for r in range(tp)}
    for p in planned:
        out[p.rank][p.name] = p.out.produce(reader)
    return out


def assert_files_are_naive_save(folder, tensors, tp):
    """Each rank file == header (same names, dtypes, shapes, offsets, padding) + the naive tensors' bytes."""
    for r in range(tp):
        raw = (folder / f"rank{r}.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        order = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
        assert sorted(order) == sorted(tensors[r])
        entries = [(k, TensorInfo(tuple(tensors[r][k].shape), tensors[r][k].dtype)) for k in order]
        want = header_bytes(entries, start_residue=(8 + n) % 4096)
        want += b"".join(tensors[r][k].contiguous().view(torch.uint8).numpy().tobytes() for k in order)
        assert raw == want, f"rank{r}.safetensors differs from the naive load-cast-save file"


@pytest.fixture
def stats(monkeypatch):
    """The Written summaries of the exports run in a test."""
    seen = []

    def recording(*a, **k):
        seen.append(transfer.write_rank_files(*a, **k))
        return seen[-1]

    monkeypatch.setattr(export_mod, "write_rank_files", recording)
    return seen


def kernel_copy_works(folder) -> bool:
    a, b = folder / "probe-a", folder / "probe-b"
    a.write_bytes(b"x" * 4096)
    try:
        with open(a, "rb") as fa, open(b, "wb") as fb:
            return os.copy_file_range(fa.fileno(), fb.fileno(), 4096) == 4096
    except (OSError, AttributeError):
        return False
    finally:
        a.unlink()
        b.unlink(missing_ok=True)


@pytest.mark.parametrize("src_dtype, dtype", CASTS)
@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_fast_paths_write_the_naive_files(sources, tmp_path, monkeypatch, stats, model, tp, src_dtype, dtype):
    # Small blocks and copy steps: every tensor spans several row blocks and copy_file_range calls.
    monkeypatch.setattr(transfer, "BLOCK_BYTES", 700)
    monkeypatch.setattr(transfer, "COPY_BYTES", 4096)
    for order in ("synthetic", "sorted"):
        src = sources[model, src_dtype, order]
        out = tmp_path / order
        run_export(ExportOptions(src=str(src), output=out, dtype=dtype, tp=tp))
        assert_files_are_naive_save(out, naive_tensors(src, tp, dtype), tp)
    if src_dtype == dtype and kernel_copy_works(tmp_path):
        assert all(w.copied_bytes + w.kernel_bytes > 0 for w in stats)  # the file-to-file path was taken
        if tp == 1 and model == "llama":  # nothing changes (no +1, no tied copy): every byte goes file to file
            assert stats[0].buffered_bytes == 0, stats  # when the rank file repeats the source sequence
            assert stats[0].kernel_bytes == 0, stats  # each row is written once, so checked on its way
        if tp > 1 and model != "llama_tied":  # norms and embedding, once checked, go to the other ranks in the kernel
            assert all(w.kernel_bytes > 0 for w in stats), stats
    if src_dtype != dtype:
        assert all(w.kernel_bytes == 0 and w.copied_bytes == 0 for w in stats)


@pytest.mark.parametrize("tp", [1, 2])
def test_default_block_sizes_write_the_naive_files(sources, tmp_path, tp):
    src = sources["nemotron", "bfloat16", "sorted"]
    run_export(ExportOptions(src=str(src), output=tmp_path / "c", dtype="float32", tp=tp))
    assert_files_are_naive_save(tmp_path / "c", naive_tensors(src, tp, "float32"), tp)


def test_without_kernel_copy_the_buffered_path_writes_the_same_files(sources, tmp_path, monkeypatch, stats):
    def no_kernel_copy(*_a, **_k):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", no_kernel_copy)
    src = sources["llama", "bfloat16", "sorted"]
    run_export(ExportOptions(src=str(src), output=tmp_path / "c", dtype="bfloat16", tp=2))
    assert_files_are_naive_save(tmp_path / "c", naive_tensors(src, 2, "bfloat16"), 2)
    assert stats[0].kernel_bytes == 0 and stats[0].buffered_bytes > 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_in_memory_source_takes_the_read_path(sources, tmp_path, dtype):
    """A source without file positions (GGUF via transformers, .nemo) is read once per tensor, then blocked."""
    src = sources["llama_tied", "bfloat16", "synthetic"]
    hf = open_source(src)
    memory = InMemorySource(hf.config, load_file(src / "model.safetensors"), "in memory", tokenizer=None)
    _, _, planned = plan_export(memory, Mapping(2, 1), dtype)
    files = {tmp_path / f"rank{r}.safetensors": [transfer.OutTensor(p.name, p.info, p.layout)
                                                 for p in planned if p.rank == r] for r in range(2)}
    written = transfer.write_rank_files(memory, files)
    assert written.kernel_bytes == 0
    assert_files_are_naive_save(tmp_path, naive_tensors(src, 2, dtype), 2)


def test_a_rule_without_a_layout_is_made_in_memory(sources, tmp_path, monkeypatch):
    """Arch rules may be plain functions of a reader; they are planned on meta tensors and written whole."""
    src = sources["llama", "bfloat16", "sorted"]
    run_export(ExportOptions(src=str(src), output=tmp_path / "ref", dtype="float16", tp=2))
    plain = lambda ctx, pre: lambda r: r.read(pre + "mlp.down_proj.weight", 1, ctx.tp_rank * 48,
                                              (ctx.tp_rank + 1) * 48).to(ctx.dtype)
    monkeypatch.setitem(Llama.per_layer, "mlp.proj.weight", function_rule(plain, ("mlp.down_proj.weight",)))
    run_export(ExportOptions(src=str(src), output=tmp_path / "plain", dtype="float16", tp=2))
    for r in range(2):
        a, b = (load_file(tmp_path / d / f"rank{r}.safetensors") for d in ("ref", "plain"))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k].view(torch.int16), b[k].view(torch.int16)) for k in a)


PLAN_CHILD = r"""
import sys
from trt_minitron.cli import main
for args in (["export", sys.argv[1], "--output", sys.argv[2], "--tp", "2", "--dry-run"],
             ["export", sys.argv[1], "--output", sys.argv[2], "--tp", "2", "--dtype", "float32"],
             ["build", sys.argv[2], "--dry-run"]):
    assert main(args) == 0, args
    assert "torch._dynamo" not in sys.modules, args
print("ok")
"""


def test_planning_does_not_import_torch_dynamo(sources, tmp_path):
    """A meta-tensor cat imports torch._dynamo (~2 s); shapes come from arithmetic instead."""
    proc = subprocess.run([sys.executable, "-c", PLAN_CHILD, str(sources["nemotron", "bfloat16", "sorted"]),
                           str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_progress_bar_shows_bytes_tensors_rate_and_eta():
    from io import StringIO

    from rich.console import Console

    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=150)
    with _progress(3_000_000, 4, console=console) as advance:
        advance(1_000_000, 1)
        advance(2_000_000, 3)
    text = screen.getvalue()  # the last frame is drawn when the bar stops, then erased (transient)
    assert "4/4 tensors" in text and "3.0/3.0 MB" in text and "0:00:00" in text  # tensors, bytes, ETA
    assert re.search(r"\d B/s|\d [kMG]B/s", text), text  # rate


def test_progress_bar_only_on_a_terminal(sources, tmp_path):
    """On a terminal (a pty here) stderr gets the bar; the closing line stays. Piped: only the closing line."""
    import pty
    import select

    args = [sys.executable, "-m", "trt_minitron", "export", str(sources["llama", "bfloat16", "sorted"]), "--output"]
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([*args, str(tmp_path / "tty")], stderr=child_fd, stdout=subprocess.DEVNULL)
    os.close(child_fd)
    seen = b""
    while select.select([main_fd], [], [], 120)[0]:
        try:
            chunk = os.read(main_fd, 1 << 16)
        except OSError:  # the child closed the pty
            break
        if not chunk:
            break
        seen += chunk
    os.close(main_fd)
    assert proc.wait(timeout=120) == 0
    text = seen.decode(errors="replace")
    assert "tensors" in text and "/s" in text, text
    assert "exported 17 tensors" in text.splitlines()[-1]

    piped = subprocess.run([*args, str(tmp_path / "pipe")], capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr.startswith("exported 17 tensors"), piped.stderr
    assert len(piped.stderr.splitlines()) == 1


@pytest.mark.parametrize("block", [700, transfer.BLOCK_BYTES])  # one row per block; every row in one block
@pytest.mark.parametrize("tp", [2, 4])
def test_narrow_columns_without_torch_are_gathered_by_slices(sources, tmp_path, monkeypatch, tp, block):
    # As in a process that has not imported torch: o_proj's 96-192-byte column blocks are gathered by
    # a slice per row (few rows per block) or a strided copy per byte column (down_proj at tp 4: 48 bytes).
    monkeypatch.setattr(transfer, "_torch_loaded", lambda: False)
    monkeypatch.setattr(transfer, "BLOCK_BYTES", block)
    src = sources["llama", "bfloat16", "sorted"]
    run_export(ExportOptions(src=str(src), output=tmp_path / "c", dtype="bfloat16", tp=tp))
    assert_files_are_naive_save(tmp_path / "c", naive_tensors(src, tp, "bfloat16"), tp)


@pytest.mark.parametrize("rows, src_row, c0, width", [(5, 16, 4, 6), (9, 16, 4, 6), (3, 40, 8, 24), (40, 40, 8, 24),
                                                     (7, 8, 0, 8), (8, 8, 0, 8), (1, 10, 9, 1)])
def test_gather_columns_packs_each_rows_slice(rows, src_row, c0, width):  # a slice per row, or per byte column
    data = bytes(range(251)) * 8
    out = bytearray(rows * width)
    transfer._gather_columns(memoryview(data), rows, src_row, c0, width, memoryview(out))
    assert bytes(out) == b"".join(data[i * src_row + c0:i * src_row + c0 + width] for i in range(rows))

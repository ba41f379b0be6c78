"""Sources that lie, and weights that cannot be written, refused by export (and verify, quantize, serve) with one
line naming the tensor: NaN/Inf on every write path, casts that overflow, layer counts held to the tensors before
anything loops over them, .nemo members that leave the folder. Each case asserts exit 2, one line, nothing left
behind, and the user's files byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys

import gguf
import pytest
import torch
from cli_checks import names, tree_digest, user_error
from nemo_fixtures import build_nemo
from safetensors.torch import load_file, save_file
from test_gguf_tiny import write_gguf
from tiny import make_tiny_llama, make_tiny_nemotron

from trt_minitron.cli import main

UP = "model.layers.1.mlp.up_proj.weight"
O_PROJ = "model.layers.0.self_attn.o_proj.weight"
EMB = "model.embed_tokens.weight"
NORM = "model.layers.1.input_layernorm.weight"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return {"llama": make_tiny_llama(root / "llama"), "nemotron": make_tiny_nemotron(root / "nemotron")}


def _copy(models, tmp_path, kind="llama", dtype=None, edit=None) -> "os.PathLike":
    """A copy of a tiny model under tmp_path/src, its weights cast to `dtype` and changed by `edit(state)`."""
    src = tmp_path / "src"
    shutil.copytree(models[kind], src)
    if dtype is not None or edit is not None:
        sd = load_file(src / "model.safetensors")
        sd = {k: v.to(dtype) if dtype is not None else v.clone() for k, v in sd.items()}
        if edit is not None:
            edit(sd)
        save_file(sd, src / "model.safetensors")
    return src


def _put(name, value, index=(3, 5)):
    def edit(sd):
        sd[name][index if sd[name].dim() == 2 else index[-1]] = value
    return edit


def refused(capsys, tmp_path, src, *args) -> str:
    """The CLI with `args`: one line, exit 2, nothing new under tmp_path, `src` byte-identical; the message."""
    before, around = tree_digest(src), names(tmp_path)
    msg = user_error(capsys, *args)
    assert names(tmp_path) == around and tree_digest(src) == before
    return msg


def export(src, out, *extra) -> list:
    return ["export", src, "--output", out, *extra]


# --- NaN / Inf on every write path --------------------------------------------------------------------

@pytest.mark.parametrize("path, kind, dtype, name, value, extra", [
    ("copy thread, tp 1", "llama", torch.bfloat16, UP, float("nan"), []),
    ("column split (row blocks), tp 2", "llama", torch.bfloat16, O_PROJ, float("inf"), ["--tp", "2"]),
    ("replicated embedding, tp 2", "llama", torch.bfloat16, EMB, float("-inf"), ["--tp", "2"]),
    ("vocab rows split, tp 2", "llama", torch.float32, "lm_head.weight", float("nan"), ["--tp", "2", "--dtype", "float32"]),
    ("cast bf16 -> float32", "llama", torch.bfloat16, UP, float("nan"), ["--dtype", "float32"]),
    ("cast float32 -> bfloat16", "llama", torch.float32, O_PROJ, float("inf"), ["--dtype", "bfloat16", "--tp", "2"]),
    ("layernorm1p +1", "nemotron", torch.bfloat16, NORM, float("nan"), []),
    ("--format hf", "llama", torch.bfloat16, UP, float("inf"), ["--format", "hf"]),
])
def test_non_finite_source_weight_is_refused(models, tmp_path, capsys, path, kind, dtype, name, value, extra):
    src = _copy(models, tmp_path, kind, dtype, _put(name, value))
    msg = refused(capsys, tmp_path, src, *export(src, tmp_path / "out", *extra))
    counts = "1 NaN and 0 Inf" if value != value else "0 NaN and 1 Inf"
    assert msg.startswith(f"Hugging Face folder {src}: tensor {name} holds {counts} among its ") and \
        msg.endswith("values; a weight must be finite"), msg


def test_non_finite_weight_in_a_bin_source(models, tmp_path, capsys):
    src = _copy(models, tmp_path)
    sd = load_file(src / "model.safetensors")
    sd[UP][0, 0] = float("nan")
    (src / "model.safetensors").unlink()
    torch.save(sd, src / "pytorch_model.bin")
    msg = refused(capsys, tmp_path, src, *export(src, tmp_path / "out", "--tp", "2"))
    assert f"tensor {UP} holds 1 NaN and 0 Inf among its 6144 values" in msg, msg


def test_non_finite_weight_in_a_gguf_source(models, tmp_path, capsys):
    poisoned = _copy(models, tmp_path, edit=_put(O_PROJ, float("inf")))
    cfg = json.loads((poisoned / "config.json").read_text())
    cfg["rope_scaling"] = None  # GGUF keeps llama3 scaling as a factor tensor; not what this case is about
    (poisoned / "config.json").write_text(json.dumps(cfg))
    path = write_gguf(poisoned, tmp_path / "m.gguf")
    shutil.rmtree(poisoned)
    msg = refused(capsys, tmp_path, path, *export(path, tmp_path / "out"))
    assert msg.startswith(f"GGUF file {path}") and f"tensor {O_PROJ} holds 0 NaN and 1 Inf among its" in msg, msg


@pytest.mark.parametrize("command", ["export", "quantize"])
def test_non_finite_weight_in_a_nemo_source(models, tmp_path, capsys, command):
    """quantize reads a .nemo itself, layer by layer: it scans it before calibrating, as export does while copying."""
    poisoned = _copy(models, tmp_path, "nemotron", edit=_put(UP, float("nan")))
    nemo = build_nemo(poisoned, tmp_path / "m.nemo", "zarr")
    shutil.rmtree(poisoned)
    args = export(nemo, tmp_path / "out") if command == "export" else ["quantize", nemo, "--output", tmp_path / "q",
                                                                         "--qformat", "fp8"]
    msg = refused(capsys, tmp_path, nemo, *args)
    assert msg.startswith(f".nemo {nemo}") and f"tensor {UP} holds 1 NaN and 0 Inf" in msg, msg


def test_verify_names_a_non_finite_reference_tensor_as_export_does(models, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(["export", str(models["llama"]), "--output", str(ckpt)]) == 0
    src = _copy(models, tmp_path, edit=_put(UP, float("nan")))
    exported = refused(capsys, tmp_path, src, *export(src, tmp_path / "out"))
    verified = refused(capsys, tmp_path, src, "verify", ckpt, "--reference", src)
    assert verified == exported, (verified, exported)


def test_serve_checks_the_folder_before_starting(models, tmp_path, capsys):
    src = _copy(models, tmp_path, edit=_put(EMB, float("inf"), (0, 0)))
    msg = refused(capsys, tmp_path, src, "serve", src, "--server", "transformers", "--port", "1")
    assert f"tensor {EMB} holds 0 NaN and 1 Inf" in msg, msg


def test_quantize_refuses_a_non_finite_source_before_calibrating(quant_ckpts, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(quant_ckpts["llama"], src)
    sd = load_file(src / "model.safetensors")
    sd[UP][1, 1] = float("nan")
    save_file(sd, src / "model.safetensors")
    msg = refused(capsys, tmp_path, src, "quantize", src, "--output", tmp_path / "q", "--qformat", "fp8")
    assert f"tensor {UP} holds 1 NaN and 0 Inf" in msg, msg


# --- casts that overflow --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, value, target, says", [
    (torch.float32, 1e6, "float16", "has max |w| 1e+06, which overflows float16 (largest finite 65504) and would be "
                                    "written as inf; export with --dtype bfloat16"),
    (torch.float32, 65520.0, "float16", "has max |w| 65520, which overflows float16"),  # rounds to inf
    (torch.bfloat16, -1e6, "float16", "has max |w| 999424, which overflows float16"),
    (torch.float32, 3.4e38, "bfloat16", "has max |w| 3.4e+38, which overflows bfloat16 (largest finite 3.38953e+38) "
                                        "and would be written as inf; export with --dtype float32"),
])
def test_a_cast_that_overflows_is_refused_with_the_max(models, tmp_path, capsys, dtype, value, target, says):
    src = _copy(models, tmp_path, dtype=dtype, edit=_put(UP, value))
    msg = refused(capsys, tmp_path, src, *export(src, tmp_path / "out", "--dtype", target, "--tp", "2"))
    assert msg.startswith(f"Hugging Face folder {src}: tensor {UP} {says}"), msg


def test_the_largest_value_that_rounds_to_a_finite_float16_exports(models, tmp_path):
    src = _copy(models, tmp_path, dtype=torch.float32, edit=_put(UP, 65519.0))  # rounds to 65504
    assert main(["export", str(src), "--output", str(tmp_path / "out"), "--dtype", "float16"]) == 0
    assert float(load_file(tmp_path / "out" / "rank0.safetensors")["transformer.layers.1.mlp.gate.weight"][3, 5]) \
        == 65504.0


# --- what the config claims against what the files hold --------------------------------------------

HUGE = 10**9


def _fast_refusal(args, says, cwd_files) -> None:
    """The CLI in a fresh process: a loop over a claimed size would take minutes; the check answers in seconds."""
    before = {p: tree_digest(p) for p in cwd_files}
    r = subprocess.run([sys.executable, "-m", "trt_minitron", *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert says in r.stderr, r.stderr
    assert {p: tree_digest(p) for p in cwd_files} == before


@pytest.mark.parametrize("command", ["export", "export --dry-run", "export --format hf", "verify"])
def test_hf_num_hidden_layers_1e9(models, tmp_path, command):
    src = _copy(models, tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": HUGE}))
    if command == "verify":
        ckpt = tmp_path / "ckpt"
        assert main(["export", str(models["llama"]), "--output", str(ckpt)]) == 0
        args = ["verify", ckpt, "--reference", src]
        says = f"the reference {src} does not match the checkpoint: num_hidden_layers {HUGE} (reference) vs 4"
    else:
        args = [*export(src, tmp_path / "out"), *command.split()[1:]]
        says = (f"Hugging Face folder {src}: the config says num_hidden_layers={HUGE}, but the weights hold 4 layers "
                "(model.layers.0 to model.layers.3)")
    around = names(tmp_path)
    _fast_refusal(args, says, [src])
    assert names(tmp_path) == around


def test_nemo_num_layers_1e9(models, tmp_path):
    nemo = build_nemo(models["nemotron"], tmp_path / "m.nemo", "zarr", yaml_overrides={"num_layers": HUGE})
    _fast_refusal(export(nemo, tmp_path / "out"), f"{nemo}: model_config.yaml says num_layers={HUGE}, but its zarr "
                  "weights hold 4 layers (layer 0 to layer 3)", [nemo])
    assert names(tmp_path) == ["m.nemo"]


def test_nemo_zarr_shape_beyond_its_chunk_files(models, tmp_path, capsys):
    nemo = build_nemo(models["llama"], tmp_path / "m", "zarr", archive="folder", yaml_overrides={"num_layers": 1000})
    for meta in (nemo / "model_weights").glob("model.decoder.layers.*/.zarray"):
        z = json.loads(meta.read_text())
        meta.write_text(json.dumps({**z, "shape": [1000, *z["shape"][1:]]}))
    msg = refused(capsys, tmp_path, nemo, *export(nemo, tmp_path / "out"))
    assert "shape [1000, " in msg and "needs 1000 chunk files, the folder holds 4" in msg, msg


def _gguf_with_block_count(models, tmp_path, count):
    hf = _copy(models, tmp_path)
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, "rope_scaling": None}))
    path = write_gguf(hf, tmp_path / "m.gguf")
    shutil.rmtree(hf)
    key = struct.pack("<Q", len("llama.block_count")) + b"llama.block_count" + struct.pack("<I", gguf.GGUFValueType.UINT32)
    raw = bytearray(path.read_bytes())
    at = raw.index(key) + len(key)
    raw[at:at + 4] = struct.pack("<I", count)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("count, says", [(HUGE, f"llama.block_count={HUGE}, but its tensors hold 4 layers (blk.0 to blk.3)"),
                                         (2, "llama.block_count=2, but its tensors hold 4 layers (blk.0 to blk.3)")])
def test_gguf_block_count_that_lies(models, tmp_path, count, says):
    path = _gguf_with_block_count(models, tmp_path, count)
    _fast_refusal(export(path, tmp_path / "out"), f"{path}: GGUF metadata says {says}", [path])
    assert names(tmp_path) == ["m.gguf"]


@pytest.mark.parametrize("change, says", [
    ({"vocab_size": 0}, "vocab_size=0 must be a positive integer"),
    ({"hidden_size": -64}, "hidden_size=-64 must be a positive integer"),
    ({"intermediate_size": 10**12}, "mlp.gate_proj.weight has shape [96, 64], but the config implies "
                                    "[1000000000000, 64]"),
    ({"vocab_size": 10**12}, "tensor model.embed_tokens.weight has shape [250, 64], but the config implies "
                             "[1000000000000, 64]"),
])
def test_config_sizes_against_the_tensors(models, tmp_path, capsys, change, says):
    src = _copy(models, tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, **change}))
    msg = refused(capsys, tmp_path, src, *export(src, tmp_path / "out"))
    assert says in msg, msg


@pytest.mark.parametrize("rows", [0, 10**12])
def test_a_tensor_of_zero_or_huge_rows(models, tmp_path, capsys, rows):
    src = _copy(models, tmp_path)
    f = src / "model.safetensors"
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8:8 + n])
    name = "model.layers.0.self_attn.q_proj.weight"
    head[name]["shape"] = [rows, 64]
    if rows == 0:
        head[name]["data_offsets"] = [head[name]["data_offsets"][0]] * 2
    text = json.dumps(head).encode()
    f.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    msg = refused(capsys, tmp_path, src, *export(src, tmp_path / "out"))
    says = (f"tensor {name} has shape [0, 64], but the config implies [96, 64]" if rows == 0
            else f"tensor '{name}' spans 24576 bytes, but F32[{rows}, 64] needs {rows * 256}")
    assert says in msg, msg


@pytest.mark.parametrize("case", ["bom", "duplicate key"])
def test_config_json_with_a_bom_or_a_key_twice(models, tmp_path, capsys, case):
    src = _copy(models, tmp_path)
    raw = (src / "config.json").read_bytes()
    (src / "config.json").write_bytes(b"\xef\xbb\xbf" + raw if case == "bom"
                                      else raw.replace(b"{", b'{"num_hidden_layers": 40, ', 1))
    msg = refused(capsys, tmp_path, src, *export(src, tmp_path / "out"))
    says = ("starts with a UTF-8 byte-order mark, which transformers and TensorRT-LLM refuse" if case == "bom"
            else "gives the key 'num_hidden_layers' twice; keep one")
    assert msg == f"{src / 'config.json'} {says}" + ("; save it as UTF-8 without one" if case == "bom" else ""), msg


# --- .nemo members that are links ------------------------------------------------------------------

def test_a_nemo_folder_member_linking_outside_is_refused(models, tmp_path, capsys):
    nemo = build_nemo(models["llama"], tmp_path / "m", "zarr", archive="folder")
    elsewhere = tmp_path / "elsewhere.yaml"
    (nemo / "model_config.yaml").rename(elsewhere)
    (nemo / "model_config.yaml").symlink_to(elsewhere)
    msg = refused(capsys, tmp_path, nemo, *export(nemo, tmp_path / "out"))
    assert msg == (f"model_config.yaml in {nemo} is a link to {elsewhere}, outside the .nemo folder; refusing to "
                   "read it"), msg
    assert elsewhere.is_file()


def test_a_nemo_folder_member_that_is_a_hard_link_reads_as_the_file_it_is(models, tmp_path):
    nemo = build_nemo(models["llama"], tmp_path / "m", "zarr", archive="folder")
    assert main(["export", str(nemo), "--output", str(tmp_path / "a")]) == 0
    chunk = next(p for p in (nemo / "model_weights").rglob("*") if p.is_file() and not p.name.startswith("."))
    keep = tmp_path / "keep"
    os.link(chunk, keep)  # the member now has two names: one file, read through either
    before = tree_digest(nemo)
    assert main(["export", str(nemo), "--output", str(tmp_path / "b")]) == 0
    assert tree_digest(nemo) == before and chunk.stat().st_nlink == 2
    for name in ("rank0.safetensors", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# --- quantize and serve hold a source to the same checks as export, before calibrating or starting a server ---------

@pytest.mark.parametrize("command", ["quantize", "serve"])
@pytest.mark.parametrize("lie, says", [
    ({"num_hidden_layers": HUGE}, f"the config says num_hidden_layers={HUGE}, but the weights hold 2 layers "
                                  "(model.layers.0 to model.layers.1)"),
    ({"intermediate_size": 10**12}, "tensor model.layers.0.mlp.gate_proj.weight has shape [512, 256], but the config "
                                    "implies [1000000000000, 256]"),
    ({"vocab_size": 0}, "vocab_size=0 must be a positive integer"),
])
def test_quantize_and_serve_refuse_a_config_that_lies(quant_ckpts, tmp_path, command, lie, says):
    src = tmp_path / "src"
    shutil.copytree(quant_ckpts["llama"], src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, **lie}))
    args = (["quantize", src, "--output", tmp_path / "q", "--qformat", "fp8"] if command == "quantize"
            else ["serve", src, "--server", "transformers", "--port", "1"])
    _fast_refusal(args, says, [src])
    assert names(tmp_path) == ["src"]


@pytest.mark.parametrize("command", ["quantize", "serve", "verify"])
def test_quantize_serve_and_verify_refuse_a_config_json_with_a_bom(quant_ckpts, tmp_path, capsys, command):
    src = tmp_path / "src"
    shutil.copytree(quant_ckpts["llama"], src)
    (src / "config.json").write_bytes(b"\xef\xbb\xbf" + (src / "config.json").read_bytes())
    args = {"quantize": ["quantize", src, "--output", tmp_path / "q", "--qformat", "fp8"],
            "serve": ["serve", src, "--server", "transformers", "--port", "1"],
            "verify": ["verify", quant_ckpts[("llama", "bf16", 1)], "--reference", src]}[command]
    msg = refused(capsys, tmp_path, src, *args)
    assert msg == f"{src / 'config.json'} starts with a UTF-8 byte-order mark, which transformers and TensorRT-LLM " \
                  "refuse; save it as UTF-8 without one", msg

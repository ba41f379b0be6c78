"""TensorRT-LLM checkpoints that lie are refused by the one checker (checkpoints/trtllm.check_rank_files) in `verify` and
`build --dry-run` alike: one line, exit 2, nothing written, the checkpoint and the source byte-identical.

Each case tampers with a copy of a real checkpoint (conftest's quant_ckpts: the tiny Llama and Nemotron quantized
by ModelOpt, and their bf16 exports) the way a hand edit, a relabel or a broken copy would.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import pytest
import torch
from cli_checks import names, tree_digest, user_error
from quant_fixtures import SHARED
from safetensors.torch import load_file, save_file
from test_build import fake_trtllm  # noqa: F401  (fixture)

from trt_minitron.cli import main

L0, L1 = "transformer.layers.0.", "transformer.layers.1."


def _edit_config(ckpt, edit) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    edit(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))


def _edit_rank(ckpt, rank: int, edit) -> None:
    f = ckpt / f"rank{rank}.safetensors"
    t = load_file(f)
    edit(t)
    save_file({k: v.contiguous() for k, v in t.items()}, f)


def _set(name, value, index=0):
    def edit(t):
        v = t[name].float().clone()
        v.view(-1)[index] = value
        t[name] = v.to(t[name].dtype)
    return edit


def _relabel(**changes):
    return lambda c: c["quantization"].update(changes)


def _raw(edit_bytes):
    """An edit of the rank file's bytes (header length, JSON header, data) as a function of them."""
    def edit(ckpt, rank):
        f = ckpt / f"rank{rank}.safetensors"
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        head, data = json.loads(raw[8:8 + n]), raw[8 + n:]
        head, data = edit_bytes(head, data)
        text = json.dumps(head).encode()
        text += b" " * (-len(text) % 8)
        f.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return edit


def _overlap(head, data):
    a, b = f"{L0}mlp.fc.weights_scaling_factor", f"{L0}mlp.gate.weights_scaling_factor"
    head[b]["data_offsets"] = head[a]["data_offsets"]  # gate's scales read from fc's bytes
    return head, data


def _shifted(head, data):
    name = f"{L1}attention.dense.weight"
    begin, end = head[name]["data_offsets"]
    head[name]["data_offsets"] = [begin, end + 2]  # one more bf16 than its shape holds
    return head, data


# (case, checkpoint, how it is tampered, what the refusal says). `ranks`: rank files edited (by tensors or bytes);
# `config`: an edit of config.json.
CASES = [
    ("scale NaN", ("llama", "fp8", 2), {"ranks": {1: _set(f"{L1}mlp.fc.weights_scaling_factor", float("nan"))}},
     f"rank1.safetensors: scale {L1}mlp.fc.weights_scaling_factor holds 1 value(s) that are not finite and > 0 "
     "(first: nan) among its 1"),
    ("scale Inf", ("nemotron", "int4_awq+kv", 1), {"ranks": {0: _set(f"{L0}mlp.fc.prequant_scaling_factor", float("inf"), 5)}},
     f"scale {L0}mlp.fc.prequant_scaling_factor holds 1 value(s) that are not finite and > 0 (first: inf) among its 256"),
    ("scale 0", ("llama", "int8_sq", 2), {"ranks": {0: _set(f"{L0}attention.qkv.weights_scaling_factor", 0.0, 7)}},
     f"scale {L0}attention.qkv.weights_scaling_factor holds 1 value(s) that are not finite and > 0 (first: 0)"),
    ("scale negative", ("llama", "w4a8_awq", 1), {"ranks": {0: _set(f"{L1}mlp.proj.activation_scaling_factor", -0.5)}},
     f"scale {L1}mlp.proj.activation_scaling_factor holds 1 value(s) that are not finite and > 0 (first: -0.5)"),
    ("KV scale negative", ("nemotron", "fp8+kv", 2), {"ranks": {1: _set(f"{L0}attention.kv_cache_scaling_factor", -1.0)}},
     f"scale {L0}attention.kv_cache_scaling_factor holds 1 value(s)"),
    ("W4A8 relabelled W4A16", ("llama", "w4a8_awq", 2), {"config": _relabel(quant_algo="W4A16_AWQ")},
     f"rank0.safetensors: tensors ['{L0}attention.dense.activation_scaling_factor', "
     f"'{L0}attention.dense.weights_scaling_factor_2', '{L0}attention.qkv.activation_scaling_factor', "
     f"'{L0}attention.qkv.weights_scaling_factor_2', '{L0}mlp.fc.activation_scaling_factor'] and 15 more that a "
     "W4A16_AWQ group_size 128, exclude_modules ['lm_head'] checkpoint does not hold"),
    ("FP8 relabelled INT8-SQ", ("nemotron", "fp8", 1), {"config": _relabel(quant_algo="W8A8_SQ_PER_CHANNEL")},
     f"rank0.safetensors: missing tensors ['{L0}attention.dense.prequant_scaling_factor', "),
    ("group_size relabelled", ("llama", "int4_awq+kv", 2), {"config": _relabel(group_size=64)},
     f"tensor {L0}attention.qkv.weights_scaling_factor is F32[512, 2], expected F32[512, 4] in a W4A16_AWQ "
     "group_size 64, kv_cache_quant_algo FP8"),
    ("unknown quant_algo", ("llama", "fp8", 1), {"config": _relabel(quant_algo="FP4")},
     "unsupported quant_algo 'FP4'"),
    ("exclude_modules lets lm_head be quantized", ("llama", "int8_sq", 1),
     {"config": _relabel(exclude_modules=["transformer.layers.0.mlp.fc"])},
     "exclude_modules ['transformer.layers.0.mlp.fc'] does not exclude lm_head, so TensorRT-LLM would load "
     "lm_head.weight as a W8A8_SQ_PER_CHANNEL layer"),
    ("exclude_modules excludes a quantized linear", ("nemotron", "int8_sq", 2),
     {"config": _relabel(exclude_modules=["lm_head", "transformer.layers.1.mlp.fc"])},
     f"tensors ['{L1}mlp.fc.activation_scaling_factor', '{L1}mlp.fc.prequant_scaling_factor', "
     f"'{L1}mlp.fc.weights_scaling_factor'] that a W8A8_SQ_PER_CHANNEL, exclude_modules ['lm_head', "
     "'transformer.layers.1.mlp.fc'] checkpoint does not hold"),
    ("exclude_modules not a list", ("llama", "fp8", 1), {"config": _relabel(exclude_modules="lm_head")},
     "exclude_modules must be a list of module name patterns, got 'lm_head'"),
    ("kv_cache_quant_algo added without KV scales", ("llama", "w4a8_awq", 2), {"config": _relabel(kv_cache_quant_algo="FP8")},
     f"rank0.safetensors: missing tensors ['{L0}attention.kv_cache_scaling_factor', "
     f"'{L1}attention.kv_cache_scaling_factor'] that a W4A8_AWQ group_size 128, kv_cache_quant_algo FP8"),
    ("KV cache on an unquantized checkpoint", ("llama", "bf16", 1), {"config": _relabel(kv_cache_quant_algo="FP8")},
     "an FP8 KV cache without quantized weights is not supported here"),
    ("extra tensor (quantized)", ("nemotron", "fp8", 2),
     {"ranks": {1: lambda t: t.__setitem__(f"{L0}mlp.fc.bias", torch.zeros(128, dtype=torch.bfloat16))}},
     f"rank1.safetensors: tensors ['{L0}mlp.fc.bias'] that a FP8, exclude_modules ['lm_head'] checkpoint does not hold"),
    ("extra tensor (plain)", ("llama", "bf16", 2),
     {"ranks": {0: lambda t: t.__setitem__("transformer.layers.2.attention.dense.weight", torch.zeros(2, 2))}},
     "config.json says num_hidden_layers=2, but rank0.safetensors's tensors hold 3 layers (transformer.layers.0 to "
     "transformer.layers.2)"),
    ("extra tensor outside the layers (plain)", ("llama", "bf16", 1),
     {"ranks": {0: lambda t: t.__setitem__("transformer.position_embedding.weight", torch.zeros(4, 256))}},
     "rank0.safetensors: tensors ['transformer.position_embedding.weight'] that a unquantized bfloat16 checkpoint "
     "does not hold"),
    ("missing tensor (quantized)", ("llama", "int8_sq", 1), {"ranks": {0: lambda t: t.pop(f"{L1}post_layernorm.weight")}},
     f"rank0.safetensors: missing tensors ['{L1}post_layernorm.weight']"),
    ("missing tensor (plain)", ("nemotron", "bf16", 2), {"ranks": {1: lambda t: t.pop("lm_head.weight")}},
     "rank1.safetensors: missing tensors ['lm_head.weight'] that a unquantized bfloat16 checkpoint holds"),
    ("rank file truncated", ("llama", "fp8", 2), {"bytes": {1: lambda f: f.write_bytes(f.read_bytes()[:-100])}},
     "runs past the end of the file"),
    ("header offsets overlap", ("llama", "int4_awq+kv", 1), {"raw": {0: _raw(_overlap)}},
     "overlap in the file"),
    ("header offsets longer than the shape", ("nemotron", "bf16", 1), {"raw": {0: _raw(_shifted)}},
     f"tensor '{L1}attention.dense.weight' spans"),
    ("extra rank file", ("llama", "bf16", 2),
     {"bytes": {0: lambda f: shutil.copy(f, f.with_name("rank2.safetensors"))}},
     "['rank2.safetensors'] lie beyond config.json's mapping (world_size 2 = tp_size 2 x pp_size 1)"),
    ("tp_size edited up", ("llama", "fp8", 2), {"config": lambda c: c["mapping"].update(tp_size=4, world_size=4)},
     "missing rank files ['rank2.safetensors', 'rank3.safetensors']"),
    ("vocab_size edited", ("nemotron", "int8_sq", 1), {"config": lambda c: c.update(vocab_size=300)},
     "config.json says vocab_size=300, but transformer.vocab_embedding.weight has 256 rows"),
    ("vocab_size edited at tp 2", ("llama", "bf16", 2), {"config": lambda c: c.update(vocab_size=200)},
     "config.json says vocab_size=200, but transformer.vocab_embedding.weight has 256 rows"),
    ("hidden_size edited", ("llama", "w4a8_awq", 1), {"config": lambda c: c.update(hidden_size=512)},
     "config.json says hidden_size=512, but transformer.vocab_embedding.weight has 256 columns"),
    ("hidden_size negative", ("llama", "bf16", 1), {"config": lambda c: c.update(hidden_size=-256)},
     "hidden_size=-256 must be a positive integer"),
    ("vocab_size 0", ("nemotron", "fp8", 1), {"config": lambda c: c.update(vocab_size=0)},
     "vocab_size=0 must be a positive integer"),
    ("num_hidden_layers a string", ("llama", "bf16", 1), {"config": lambda c: c.update(num_hidden_layers="2")},
     "num_hidden_layers='2' must be a positive integer"),
    ("num_hidden_layers lowered", ("nemotron", "w4a8_awq", 2), {"config": lambda c: c.update(num_hidden_layers=1)},
     "config.json says num_hidden_layers=1, but rank0.safetensors's tensors hold 2 layers"),
]


def _tampered(quant_ckpts, tmp_path, key, how):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(quant_ckpts[key], ckpt)
    if "config" in how:
        _edit_config(ckpt, how["config"])
    for rank, edit in how.get("ranks", {}).items():
        _edit_rank(ckpt, rank, edit)
    for rank, edit in how.get("raw", {}).items():
        edit(ckpt, rank)
    for rank, edit in how.get("bytes", {}).items():
        edit(ckpt / f"rank{rank}.safetensors")
    return ckpt


def _verify_args(ckpt, src, quantized: bool) -> list:
    texts = ["--dataset-file", SHARED, "--num-samples", "1", "--max-tokens", "16"] if quantized else []
    return ["verify", ckpt, "--reference", src, *texts]


def refused_everywhere(capsys, tmp_path, ckpt, src, quantized: bool) -> list[str]:
    """build --dry-run and verify of `ckpt`: each one line, exit 2; nothing written, ckpt and source unchanged."""
    before, source, around = tree_digest(ckpt), tree_digest(src), names(tmp_path)
    messages = [user_error(capsys, "build", ckpt, "--dry-run"), user_error(capsys, *_verify_args(ckpt, src, quantized))]
    assert tree_digest(ckpt) == before and tree_digest(src) == source and names(tmp_path) == around
    return messages


@pytest.mark.parametrize("case, key, how, says", CASES, ids=[c[0] for c in CASES])
def test_a_tampered_checkpoint_is_refused_by_build_and_verify(quant_ckpts, tmp_path, capsys, case, key, how, says):
    ckpt = _tampered(quant_ckpts, tmp_path, key, how)
    for msg in refused_everywhere(capsys, tmp_path, ckpt, quant_ckpts[key[0]], key[1] != "bf16"):
        assert says in msg, msg


@pytest.mark.parametrize("key, name, rank", [(("llama", "bf16", 2), f"{L1}mlp.gate.weight", 1),
                                             (("nemotron", "fp8", 1), f"{L0}attention.qkv.weight", 0)])
def test_a_non_finite_weight_is_refused_by_verify_and_the_real_build(quant_ckpts, tmp_path, capsys, fake_trtllm,  # noqa: F811
                                                                    key, name, rank):
    """Weights are read in full only by verify and a real build (a dry run reads headers and scales)."""
    ckpt = _tampered(quant_ckpts, tmp_path, key, {"ranks": {rank: _set(name, float("nan"), 3)}})
    src, before, around = quant_ckpts[key[0]], tree_digest(ckpt), names(tmp_path)
    says = f"rank{rank}.safetensors: tensor {name} holds 1 NaN and 0 Inf among its"
    assert says in user_error(capsys, *_verify_args(ckpt, src, key[1] != "bf16"))
    assert says in user_error(capsys, "build", ckpt, "-o", tmp_path / "engine")
    assert not any(n.endswith("from_checkpoint") for n, _ in fake_trtllm.CALLS)  # refused before TensorRT-LLM
    assert tree_digest(ckpt) == before and names(tmp_path) == around


def test_a_tampered_checkpoint_is_refused_by_the_torch_backend(quant_ckpts, tmp_path, capsys):
    ckpt = _tampered(quant_ckpts, tmp_path, ("llama", "int4_awq+kv", 2), {"config": _relabel(quant_algo="W4A8_AWQ")})
    msg = user_error(capsys, "generate", "--backend", "torch", ckpt, "--prompt", "The", "--max-new-tokens", "2")
    assert f"rank0.safetensors: missing tensors ['{L0}attention.dense.activation_scaling_factor'," in msg, msg


HUGE = 10**9


@pytest.mark.parametrize("field, config_only, says", [
    ("num_hidden_layers", False, f"config.json says num_hidden_layers={HUGE}, but rank0.safetensors's tensors hold 2 "
                                 "layers (transformer.layers.0 to transformer.layers.1)"),
    ("num_hidden_layers", True, "exceed GPU memory"),  # planned by arithmetic: weights of 10^9 layers do not fit
    ("tp_size", False, f"num_attention_heads=4 is not divisible by tp_size={HUGE}"),
])
def test_claimed_sizes_are_refused_at_once(quant_ckpts, tmp_path, field, config_only, says):
    """No loop over a claimed size: a fresh process answers in seconds (a loop over 10^9 layers took minutes)."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(quant_ckpts[("llama", "bf16", 1)], ckpt)
    _edit_config(ckpt, lambda c: c["mapping"].update(tp_size=HUGE, world_size=HUGE) if field == "tp_size"
                 else c.update({field: HUGE}))
    if config_only:
        (ckpt / "rank0.safetensors").unlink()
    before = tree_digest(ckpt)
    r = subprocess.run([sys.executable, "-m", "trt_minitron", "build", str(ckpt), "--dry-run"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert tree_digest(ckpt) == before and names(tmp_path) == ["ckpt"]


@pytest.mark.parametrize("text, says", [
    (b"\xef\xbb\xbf", "starts with a UTF-8 byte-order mark"),
    (b"dup", "gives the key 'vocab_size' twice"),
])
def test_config_json_with_a_bom_or_a_key_twice(quant_ckpts, tmp_path, capsys, text, says):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(quant_ckpts[("nemotron", "bf16", 1)], ckpt)
    raw = (ckpt / "config.json").read_bytes()
    (ckpt / "config.json").write_bytes(text + raw if text != b"dup" else raw.replace(b"{", b'{"vocab_size": 7, ', 1))
    for msg in refused_everywhere(capsys, tmp_path, ckpt, quant_ckpts["nemotron"], False):
        assert says in msg, msg


def test_untampered_checkpoints_still_pass(quant_ckpts, capsys):
    """The checker refuses nothing ModelOpt and export write (every format, both models, tp 1 and 2)."""
    for key in [k for k in quant_ckpts if isinstance(k, tuple)]:
        assert main(["build", str(quant_ckpts[key]), "--dry-run"]) == 0, (key, capsys.readouterr().err)
    capsys.readouterr()


@pytest.mark.parametrize("bad", [None, float("nan"), 0.0])
def test_nvfp4_block_scales_are_read_as_float8(quant_ckpts, tmp_path, capsys, bad):
    """NVFP4's block scales are float8_e4m3fn (no CPU fixture quantizes NVFP4: its rank file is made from the
    expected tensors, scales 1): a NaN (0x7F) or zero block scale is refused like any other."""
    from trt_minitron.checkpoints.trtllm import read_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(quant_ckpts[("llama", "bf16", 1)], ckpt)
    _edit_config(ckpt, lambda c: c.update(quantization={"quant_algo": "NVFP4", "kv_cache_quant_algo": None,
                                                        "group_size": 16, "exclude_modules": ["lm_head"]}))
    expected = read_checkpoint(ckpt).expected_tensors(0)
    tensors = {n: (torch.ones(i.shape) if n.rsplit(".", 1)[1].endswith(("factor", "factor_2")) else
                   torch.zeros(i.shape)).to(i.dtype) for n, i in expected.items()}
    name = f"{L1}mlp.gate.weights_scaling_factor"
    assert tensors[name].dtype == torch.float8_e4m3fn
    if bad is not None:
        tensors[name].view(-1)[9] = bad
    save_file(tensors, ckpt / "rank0.safetensors")
    if bad is None:
        assert main(["build", str(ckpt), "--dry-run"]) == 0, capsys.readouterr().err
        return
    msg = user_error(capsys, "build", ckpt, "--dry-run")
    assert f"scale {name} holds 1 value(s) that are not finite and > 0 (first: {bad:g}) among its 8192" in msg, msg


# --- the pre-quant scale sidecar (trt_minitron_quantize.safetensors): verify rebuilds ModelOpt's weights from it ---

SIDECAR = "trt_minitron_quantize.safetensors"
Q0 = "model.layers.0.self_attn.q_proj"


def _sidecar_from(other):
    return lambda ckpt, quant_ckpts: shutil.copy(quant_ckpts[other] / SIDECAR, ckpt / SIDECAR)


def _sidecar_edit(edit):
    def apply(ckpt, _quant_ckpts):
        t = load_file(ckpt / SIDECAR)
        edit(t)
        save_file(t, ckpt / SIDECAR)
    return apply


def _sidecar_set(name, value):
    return _sidecar_edit(lambda t: t[f"{name}.pre_quant_scale"].view(-1).__setitem__(2, value))


SIDECAR_CASES = [
    ("sidecar deleted", ("llama", "w4a8_awq", 2), lambda ckpt, _: (ckpt / SIDECAR).unlink(),
     f"no {SIDECAR} (the float32 pre-quant scales `trt-minitron quantize` saves); verify cannot rebuild ModelOpt's "
     "W4A8_AWQ weights without it"),
    ("sidecar scale x2 on one of a fused linear", ("nemotron", "int8_sq", 1),
     _sidecar_edit(lambda t: t[f"{Q0}.pre_quant_scale"].mul_(2)),
     f"{SIDECAR}: {Q0}, model.layers.0.self_attn.k_proj, model.layers.0.self_attn.v_proj share their input but have "
     "different pre-quant scales (ModelOpt gives them one)"),
    ("sidecar of the other model, which lacks a module", ("llama", "int8_sq", 1), _sidecar_from(("nemotron", "int8_sq", 1)),
     f"{SIDECAR} has no pre-quant scale for model.layers.0.mlp.gate_proj (it holds scales of 12 modules): the sidecar is "
     "not this checkpoint's"),
    ("sidecar module missing", ("nemotron", "w4a8_awq", 1),
     _sidecar_edit(lambda t: t.pop("model.layers.1.mlp.up_proj.pre_quant_scale")),
     f"{SIDECAR} has no pre-quant scale for model.layers.1.mlp.up_proj (it holds scales of 11 modules): the sidecar "
     "is not this checkpoint's"),
    ("sidecar scale NaN", ("nemotron", "int4_awq+kv", 1), _sidecar_set("model.layers.0.mlp.down_proj", float("nan")),
     f"{SIDECAR}: scale model.layers.0.mlp.down_proj.pre_quant_scale holds 1 value(s) that are not finite and > 0 "
     "(first: nan) among its 512"),
    ("sidecar scale 0", ("llama", "int8_sq", 2), _sidecar_set(Q0, 0.0),
     f"{SIDECAR}: scale {Q0}.pre_quant_scale holds 1 value(s) that are not finite and > 0 (first: 0)"),
    ("sidecar scale negative", ("llama", "w4a8_awq", 1), _sidecar_set("model.layers.1.mlp.gate_proj", -1.0),
     "scale model.layers.1.mlp.gate_proj.pre_quant_scale holds 1 value(s) that are not finite and > 0 (first: -1)"),
]


@pytest.mark.parametrize("case, key, edit, says", SIDECAR_CASES, ids=[c[0] for c in SIDECAR_CASES])
def test_a_tampered_sidecar_is_refused_by_verify(quant_ckpts, tmp_path, capsys, case, key, edit, says):
    """The sidecar is the float32 truth behind the rank files' rounded pre-quant scales: one that is missing, holds a
    scale that is not positive, lacks a module or gives a fused linear two scales is refused (exit 2)."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(quant_ckpts[key], ckpt)
    edit(ckpt, quant_ckpts)
    src = quant_ckpts[key[0]]
    before, source, around = tree_digest(ckpt), tree_digest(src), names(tmp_path)
    msg = user_error(capsys, *_verify_args(ckpt, src, True))
    assert says in msg, msg
    assert tree_digest(ckpt) == before and tree_digest(src) == source and names(tmp_path) == around


# A sidecar whose scales are not the rank files' rounded ones: verify cannot tell which of the two is wrong (a planted
# rank-file scale looks the same), so the numerical verdict stands (exit 1, the first failing linear) and a note says so.
SIDECAR_DISAGREES = [
    ("sidecar of the other model", ("nemotron", "int8_sq", 1), _sidecar_from(("llama", "int8_sq", 1)),
     f"the pre-quant scales of {Q0} in {SIDECAR} do not round to rank0.safetensors's transformer.layers.0.attention.qkv."
     "prequant_scaling_factor ("),
    ("sidecar from another format of the same model", ("llama", "w4a8_awq", 2), _sidecar_from(("llama", "int8_sq", 2)),
     "do not round to rank0.safetensors's transformer.layers.0.attention.qkv.prequant_scaling_factor"),
    ("sidecar scale x2", ("llama", "int8_sq", 2),
     _sidecar_edit(lambda t: t["model.layers.1.mlp.down_proj.pre_quant_scale"].mul_(2)),
     f"the pre-quant scales of model.layers.1.mlp.down_proj in {SIDECAR} do not round to rank0.safetensors's "
     "transformer.layers.1.mlp.proj.prequant_scaling_factor (256 of 256 differ"),  # tp 2: each rank holds half the rows
]


@pytest.mark.parametrize("case, key, edit, says", SIDECAR_DISAGREES, ids=[c[0] for c in SIDECAR_DISAGREES])
def test_a_sidecar_of_another_checkpoint_fails_verify_and_is_named(quant_ckpts, tmp_path, capsys, case, key, edit, says):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(quant_ckpts[key], ckpt)
    edit(ckpt, quant_ckpts)
    src = quant_ckpts[key[0]]
    before, source, around = tree_digest(ckpt), tree_digest(src), names(tmp_path)
    capsys.readouterr()
    assert main([str(a) for a in _verify_args(ckpt, src, True)]) == 1
    cap = capsys.readouterr()
    assert cap.out.rstrip().endswith("FAIL") and "first failure: layer " in cap.out and "Traceback" not in cap.err
    note = next(line for line in cap.out.splitlines() if "note: the pre-quant scales" in line)
    assert says in note and note.endswith("the rank files' scales or the sidecar are not the ones quantize wrote"), note
    assert tree_digest(ckpt) == before and tree_digest(src) == source and names(tmp_path) == around

"""`build` and `build --dry-run` on quantized checkpoints: the scale tensors validated per format, plugin settings per
quant algo, the plan's weight and KV bytes per format, and the fake tensorrt_llm loading ModelOpt's trees (its
quantize() and preprocess_weights, tests/fakes/tensorrt_llm/quantization) at tp 1 and 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from quant_fixtures import FORMATS, has_fp8_kv, qformat_of
from safetensors.torch import load_file, save_file
from test_build import fake_trtllm  # noqa: F401  (fixture)
from test_plan import MINITRON_4B, SMOLLM2_135M, config_only_checkpoint

import trt_minitron.build.run as b
from trt_minitron.cli import main

ALGOS = {"fp8": "FP8", "int8_sq": "W8A8_SQ_PER_CHANNEL", "int4_awq": "W4A16_AWQ", "w4a8_awq": "W4A8_AWQ"}
CASES = [(kind, variant, tp) for kind in ("llama", "nemotron") for variant in FORMATS for tp in (1, 2)]
IDS = [f"{k}-{q}-tp{t}" for k, q, t in CASES]


def dry_run(capsys, ckpt, *extra) -> tuple[int, dict | str]:
    code = main(["build", str(ckpt), "--dry-run", "--gpu-memory", "80", *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else err


@pytest.mark.parametrize("kind, variant, tp", CASES, ids=IDS)
def test_dry_run_accepts_each_format_with_its_plugins_and_kv_bytes(quant_ckpts, capsys, kind, variant, tp):
    code, plan = dry_run(capsys, quant_ckpts[(kind, variant, tp)])
    assert code == 0, plan
    _, base = dry_run(capsys, quant_ckpts[(kind, "bf16", tp)])
    q = plan["checkpoint"]["quantization"]
    qformat, fp8_kv = qformat_of(variant), has_fp8_kv(variant)
    assert q["quant_algo"] == ALGOS[qformat] and q["kv_cache_quant_algo"] == ("FP8" if fp8_kv else None)
    pc = plan["build_config"]["plugin_config"]
    assert pc["use_fused_mlp"] is (qformat == "fp8")
    assert ("weight_only_groupwise_quant_matmul_plugin" in pc) is ("awq" in qformat)
    assert pc["use_fp8_context_fmha"] is (qformat == "fp8" and fp8_kv)
    assert pc.get("use_paged_context_fmha", True) is not (fp8_kv and qformat != "fp8")
    p, pb = plan["plan"], base["plan"]
    assert p["kv_dtype"] == ("fp8" if fp8_kv else "bfloat16")
    assert p["kv_cache_bytes_per_token"] * (2 if fp8_kv else 1) == pb["kv_cache_bytes_per_token"]
    assert p["weight_bytes_source"] == "rank files" and p["weight_bytes_per_rank"] < pb["weight_bytes_per_rank"]
    assert "quantization" not in base["checkpoint"]


@pytest.mark.parametrize("kind, variant, tp", CASES, ids=IDS)
def test_fake_tensorrt_llm_builds_each_format(quant_ckpts, tmp_path, capsys, fake_trtllm, kind, variant, tp):  # noqa: F811
    """from_checkpoint of the fake (quantize() + preprocess_weights + the quantized layer trees) takes every rank file."""
    qformat = qformat_of(variant)
    code = main(["build", str(quant_ckpts[(kind, variant, tp)]), "-o", str(tmp_path / "engine")])
    assert code == 0, capsys.readouterr().err
    loads = [c for n, c in fake_trtllm.CALLS if n.endswith("from_checkpoint")]
    assert [c["rank"] for c in loads] == list(range(tp))
    warned = [c for n, c in fake_trtllm.CALLS if n == "load.warning"]
    if qformat == "w4a8_awq":  # preprocess_weights puts activation_scaling_factor back on column linears too
        assert warned and all(n.endswith("activation_scaling_factor") for w in warned
                              for n in w["provided_but_not_required"])
    else:
        assert not warned
    manifest = json.loads((tmp_path / "engine" / "trt_minitron_manifest.json").read_text())
    assert manifest["checkpoint"]["quantization"]["quant_algo"] == ALGOS[qformat]


def _edit(ckpt, tmp_path, edit):
    out = tmp_path / "edited"
    shutil.copytree(ckpt, out)
    t = load_file(out / "rank1.safetensors")
    edit(t)
    save_file(t, out / "rank1.safetensors")
    return out


@pytest.mark.parametrize("variant, name, change, message", [
    ("fp8", "transformer.layers.1.mlp.fc.activation_scaling_factor", "drop", "missing tensors"),
    ("int8_sq", "transformer.layers.0.attention.dense.weights_scaling_factor", "shape", "is F32[128], expected F32[256]"),
    ("int4_awq+kv", "transformer.layers.0.mlp.fc.weights_scaling_factor", "shape", "expected F32[256, 2]"),
    ("w4a8_awq", "transformer.layers.1.attention.qkv.weights_scaling_factor_2", "drop", "missing tensors"),
    ("w4a8_awq", "transformer.layers.0.mlp.proj.prequant_scaling_factor", "dtype", "is F32[256], expected BF16[256]"),
    ("fp8+kv", "transformer.layers.0.attention.kv_cache_scaling_factor", "drop", "missing tensors"),
])
def test_a_missing_or_misshaped_scale_is_refused(quant_ckpts, tmp_path, capsys, fake_trtllm, variant, name, change,  # noqa: F811
                                                  message):
    def edit(t):
        v = t.pop(name)
        if change == "shape":
            t[name] = v[: v.shape[0] // 2]
        elif change == "dtype":
            t[name] = v.float()

    bad = _edit(quant_ckpts[("llama", variant, 2)], tmp_path, edit)
    for args in (["--dry-run"], ["-o", str(tmp_path / "engine")]):
        code = main(["build", str(bad), *args])
        err = capsys.readouterr().err
        assert code == 2 and "rank1.safetensors" in err and message in err and name.split(".", 3)[3] in err, err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "engine").exists()


def test_the_fake_rejects_a_wrong_tree_even_past_trt_minitrons_checks(quant_ckpts, tmp_path, fake_trtllm):  # noqa: F811
    """The fake's own load, called directly: a group scale of the wrong shape after preprocess_weights."""
    bad = _edit(quant_ckpts[("nemotron", "int4_awq+kv", 2)], tmp_path, lambda t: t.__setitem__(
        "transformer.layers.0.mlp.fc.weights_scaling_factor",
        t["transformer.layers.0.mlp.fc.weights_scaling_factor"][:, :1].contiguous()))
    config = fake_trtllm.PretrainedConfig.from_json_file(str(bad / "config.json"))
    with pytest.raises(RuntimeError, match=r"Updated: \(1, 256\), original: \(2, 256\)' for parameter "
                                           r"'transformer.layers.0.mlp.fc.weights_scaling_factor'"):
        fake_trtllm.MODEL_MAP[config.architecture].from_checkpoint(str(bad), rank=1, config=config)


def test_gemm_plugin_fp8_only_for_fp8_checkpoints(quant_ckpts, capsys):
    code, plan = dry_run(capsys, quant_ckpts[("llama", "fp8", 1)], "--gemm-plugin", "fp8")
    assert code == 0 and plan["build_config"]["plugin_config"]["gemm_plugin"] == "fp8"
    code, err = dry_run(capsys, quant_ckpts[("llama", "int8_sq", 1)], "--gemm-plugin", "fp8")
    assert code == 2 and "--gemm-plugin fp8 needs an FP8 checkpoint" in err


def _config_only(tmp_path, fields, tp, quantization):
    ckpt = config_only_checkpoint(tmp_path / f"q_tp{tp}", fields, tp)
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "quantization": quantization}))
    return ckpt


def test_plan_bytes_of_an_fp8_minitron_4b_by_hand(tmp_path, capsys):
    """FP8 weights + FP8 KV cache, Minitron-4B shapes, tp 1, config only (expected tensors, no rank files)."""
    ckpt = _config_only(tmp_path, MINITRON_4B, 1, {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8",
                                                   "exclude_modules": ["lm_head"]})
    code, plan = dry_run(capsys, ckpt)
    assert code == 0, plan
    p = plan["plan"]
    # per layer: qkv 5120x3072 + dense 3072x3072 + fc 9216x3072 + proj 3072x9216 = 81,788,928 fp8 bytes
    #   + 4 linears x 2 float32 scales x 4 B = 32 + kv_cache_scaling_factor 4 + 2 layernorms x (w + b) x 3072 x 2 B
    #   = 24,576 -> 81,813,540 per layer, x 32 = 2,618,033,280
    # + embedding and lm_head 256000 x 3072 x 2 B each = 3,145,728,000 + ln_f 2 x 3072 x 2 B = 12,288
    assert p["weight_bytes_per_rank"] == 2_618_033_280 + 3_145_728_000 + 12_288
    assert p["kv_cache_bytes_per_token"] == 65_536  # 2 x 32 layers x 8 kv heads x 128 x 1 B: half of bf16's 131,072
    assert p["kv_dtype"] == "fp8"
    # (85,899,345,920 - 5,763,773,568 - 1,417,478,144 (the activation reserve stays bf16)) // 65,536
    assert p["activation_reserve_bytes"] == 1_417_478_144
    assert p["max_kv_tokens"] == (85_899_345_920 - 5_763_773_568 - 1_417_478_144) // 65_536 == 1_201_142


def test_awq_widths_tensorrt_llm_would_pad_are_refused(tmp_path, capsys):
    """SmolLM2's hidden 576: W4A8 pads linears to a multiple of 128 x tp, so its unpadded checkpoint cannot load."""
    w4a8 = {"quant_algo": "W4A8_AWQ", "group_size": 64, "has_zero_point": False, "pre_quant_scale": True}
    code, err = dry_run(capsys, _config_only(tmp_path, SMOLLM2_135M, 1, w4a8))
    assert code == 2 and "padded by TensorRT-LLM to a multiple of 128 (max(128, group 64) x tp 1)" in err
    assert "hidden_size=576" in err and err.rstrip().endswith("quantize with another format: no group size or tp "
                                                                "makes every width a multiple")
    code, plan = dry_run(capsys, _config_only(tmp_path / "int4", SMOLLM2_135M, 1, {**w4a8, "quant_algo": "W4A16_AWQ"}))
    assert code == 0, plan  # W4A16 pads to max(64, 64) = 64, which 576 and 1536 are multiples of
    int4_128 = {**w4a8, "quant_algo": "W4A16_AWQ", "group_size": 128}
    code, err = dry_run(capsys, _config_only(tmp_path / "int4-128", SMOLLM2_135M, 1, int4_128))
    assert code == 2 and err.rstrip().endswith("quantize with a smaller group size or tp")  # group 64 would load


def test_unquantized_settings_unchanged():
    assert b.quant_plugin_settings(None) == {}
    assert torch.float8_e4m3fn.itemsize == 1

"""verify on ModelOpt unified Hugging Face checkpoints (`quantize --format hf`) of the tiny Llama, Nemotron and Mistral:
every format passes the conversion check against ModelOpt's fake quantization and reports its cost; a scale x2, a
relabelled quant_algo, labels that disagree or miss the tensors fail naming what is wrong; what verify cannot judge is
one line and exit 2."""

import json
import shutil

import pytest
import torch
from plant_hf import QUANT_BUGS, edit_config, edit_json, edit_tensors
from quant_fixtures import SHARED, UNIFIED_FORMATS

from trt_minitron.checkpoints.quantized import PQS_SIDECAR_HF
from trt_minitron.cli import main
from trt_minitron.options import VerifyOptions
from trt_minitron.verify.run import run_verify

pytestmark = pytest.mark.usefixtures("one_torch_thread")
KINDS = ("llama", "nemotron", "mistral")
TEXTS = ["--dataset-file", str(SHARED), "--num-samples", "3", "--max-tokens", "48"]
CASES = [(kind, variant) for kind in KINDS for variant in UNIFIED_FORMATS]


def verify(ckpt, source, **kw):
    return run_verify(VerifyOptions(checkpoint=ckpt, reference=source, dataset_file=SHARED, num_samples=3, max_tokens=48,
                                    **kw))


def named(result) -> str:
    failures = [f"layer {c.layer} {c.name}" for c in result.failures]
    return " | ".join(failures + list(result.problems) + list(result.unquantized_differences))


@pytest.mark.parametrize("kind, variant", CASES, ids=[f"{k}-{v}" for k, v in CASES])
def test_unified_checkpoint_passes_and_reports_its_cost(unified_ckpts, capsys, kind, variant):
    ckpt, src = unified_ckpts[(kind, variant)], unified_ckpts[kind]
    capsys.readouterr()
    assert main(["verify", str(ckpt), "--reference", str(src), *TEXTS]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("verify: ModelOpt unified Hugging Face checkpoint (") and lines[-1] == "PASS"
    result = verify(ckpt, src)
    kv = variant.endswith("+kv")
    # Every linear of 2 layers (7 in a gated MLP, 6 in Nemotron's), and K and V per layer with an FP8 KV cache.
    assert len(result.conversion) == 2 * ((6 if kind == "nemotron" else 7) + (2 if kv else 0))
    assert max(max(c.weight_mismatch, c.input_mismatch) for c in result.conversion) == 0.0
    assert result.kv_cache_quant_algo == ("FP8" if kv else None)
    assert 0 < result.cost.kl_mean < 5 and result.cost.tokens == 3 * 48


def test_awq_folds_its_pre_quant_scales_into_the_norms_and_verify_judges_them_there(unified_ckpts):
    ckpt = unified_ckpts[("llama", "int4_awq+kv")]
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.layers.0.self_attn.q_proj.pre_quant_scale" not in names  # folded into input_layernorm
    assert "model.layers.0.self_attn.o_proj.pre_quant_scale" in names  # no norm feeds o_proj
    assert (ckpt / PQS_SIDECAR_HF).is_file() and not list(ckpt.glob("trt_minitron*.safetensors"))


CASES_BUGS = [(bug, kind, variant) for bug in QUANT_BUGS for kind in KINDS for variant in ("fp8", "int8_sq", "int4_awq+kv")]


@pytest.mark.parametrize("bug, kind, variant", CASES_BUGS, ids=[f"{b.name}-{k}-{v}" for b, k, v in CASES_BUGS])
def test_planted_scale_and_label_errors_fail(unified_ckpts, tmp_path, bug, kind, variant):
    bad = tmp_path / "bad"
    shutil.copytree(unified_ckpts[(kind, variant)], bad)
    bug.plant(bad)
    result = verify(bad, unified_ckpts[kind])
    assert not result.ok, result.summary()
    assert any(w in named(result) for w in bug.where), result.summary()


def test_cli_exits_1_on_a_doubled_scale_naming_the_linear(unified_ckpts, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(unified_ckpts[("nemotron", "fp8+kv")], bad)
    next(b for b in QUANT_BUGS if b.name == "scale-x2").plant(bad)
    capsys.readouterr()
    assert main(["verify", str(bad), "--reference", str(unified_ckpts["nemotron"]), *TEXTS]) == 1
    out = capsys.readouterr().out
    assert "first failure: layer 1 mlp.down_proj:" in out and out.strip().endswith("FAIL")


def test_the_cost_gate_judges_a_unified_checkpoint_too(unified_ckpts, capsys):
    """--max-kl / --min-top1 turn the reported cost into a judged one, as for TensorRT-LLM checkpoints."""
    ckpt, src = unified_ckpts[("llama", "fp8")], unified_ckpts["llama"]
    kl = verify(ckpt, src).cost.kl_mean
    assert verify(ckpt, src, max_kl=kl * 2).ok
    gated = verify(ckpt, src, max_kl=kl / 2)
    assert not gated.ok and gated.cost_failures and not gated.failures, gated.summary()
    capsys.readouterr()
    assert main(["verify", str(ckpt), "--reference", str(src), *TEXTS, "--max-kl", str(kl / 2)]) == 1
    assert "--max-kl" in capsys.readouterr().out


def test_labels_that_miss_the_tensors_fail(unified_ckpts, tmp_path):
    src = unified_ckpts["llama"]

    def planted(variant, plant):
        bad = tmp_path / f"bad-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(unified_ckpts[("llama", variant)], bad)
        plant(bad)
        result = verify(bad, src)
        assert not result.ok, result.summary()
        return named(result)

    # An FP8 KV cache label without the scales, and scales without the label.
    assert "missing tensor model.layers.0.self_attn.k_proj.k_scale" in planted(
        "fp8", lambda d: (edit_json(d / "hf_quant_config.json", lambda c: c["quantization"].update(kv_cache_quant_algo="FP8")),
                          edit_config(d, lambda c: c["quantization_config"].update(
                              kv_cache_scheme={"dynamic": False, "num_bits": 8, "type": "float"}))))
    assert "unexpected tensor model.layers.0.self_attn.k_proj.k_scale" in planted(
        "fp8+kv", lambda d: (edit_json(d / "hf_quant_config.json", lambda c: c["quantization"].update(kv_cache_quant_algo=None)),
                             edit_config(d, lambda c: c["quantization_config"].pop("kv_cache_scheme"))))
    # exclude_modules no longer excluding lm_head: it would be loaded as quantized, and holds a plain weight.
    assert "missing tensor lm_head.weight_scale" in planted(
        "fp8", lambda d: (edit_json(d / "hf_quant_config.json", lambda c: c["quantization"].update(
            exclude_modules=["model.embed_tokens"])), edit_config(d, lambda c: c["quantization_config"].update(
                ignore=["model.embed_tokens"]))))
    # A group size the weight scales do not have.
    assert "weight_scale is float32" in planted(
        "int4_awq+kv", lambda d: edit_json(d / "hf_quant_config.json", lambda c: c["quantization"].update(group_size=64)))
    # quantization_config that is not ModelOpt's, beside hf_quant_config.json.
    assert "not 'modelopt'" in planted("fp8", lambda d: edit_config(d, lambda c: c["quantization_config"].update(
        quant_method="fp8")))
    # A norm a pre-quant scale was folded into, changed.
    assert "model.layers.1.post_attention_layernorm.weight (with its linears' folded pre-quant scale)" in planted(
        "int4_awq+kv", lambda d: edit_tensors(d, lambda t: t.update({
            "model.layers.1.post_attention_layernorm.weight": t["model.layers.1.post_attention_layernorm.weight"] * 1.5})))


def test_what_verify_cannot_judge_is_one_line_and_exit_2(unified_ckpts, tmp_path, capsys):
    src = str(unified_ckpts["llama"])

    def error(ckpt, *extra) -> str:
        capsys.readouterr()
        assert main(["verify", str(ckpt), "--reference", src, *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
        return captured.err

    awq = tmp_path / "awq"
    shutil.copytree(unified_ckpts[("llama", "int4_awq+kv")], awq)
    (awq / PQS_SIDECAR_HF).unlink()
    assert f"no {PQS_SIDECAR_HF}" in error(awq, *TEXTS)
    assert "not --prompt/--full" in error(unified_ckpts[("llama", "fp8")], "--prompt", "hello")
    unknown = tmp_path / "unknown"
    shutil.copytree(unified_ckpts[("llama", "fp8")], unknown)
    edit_json(unknown / "hf_quant_config.json", lambda c: c["quantization"].update(quant_algo="FP8_PER_CHANNEL_PER_TOKEN"))
    assert "unsupported quant_algo 'FP8_PER_CHANNEL_PER_TOKEN'" in error(unknown, *TEXTS)


def test_the_quantize_report_and_config_of_a_unified_checkpoint(unified_ckpts):
    ckpt = unified_ckpts[("mistral", "int8_sq")]
    config = json.loads((ckpt / "config.json").read_text())
    assert config["architectures"] == ["MistralForCausalLM"] and config["quantization_config"]["quant_method"] == "modelopt"
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype == torch.int8
        assert f.get_tensor("model.layers.0.self_attn.q_proj.pre_quant_scale").dtype == torch.bfloat16


def test_a_pre_quant_scale_kept_beside_its_folded_norm_fails(unified_ckpts, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(unified_ckpts[("llama", "int4_awq+kv")], bad)
    edit_tensors(bad, lambda t: t.update({"model.layers.0.self_attn.k_proj.pre_quant_scale":
                                          t["model.layers.0.self_attn.o_proj.pre_quant_scale"][:256].clone()}))
    result = verify(bad, unified_ckpts["llama"])
    assert not result.ok
    assert ("model.layers.0.self_attn.k_proj.pre_quant_scale (its norm model.layers.0.input_layernorm carries the "
            "folded scale too)") in result.unquantized_differences, result.summary()


@pytest.mark.filterwarnings("ignore::UserWarning")  # ModelOpt's own: "dtype ... may lead to numerical errors"
def test_modelopts_default_bfloat16_export_fails_and_is_diagnosed(unified_ckpts, tmp_path, monkeypatch):
    """Why quantize --format hf exports in float32: ModelOpt's unified export in the checkpoint dtype (its default, what
    other ModelOpt runs write) rounds each weight to bfloat16 before dividing it by its scale, and a few % of the FP8
    codes land one step from its own fake quantization; verify fails it and says so."""
    from quant_fixtures import CALIB

    import trt_minitron.quantize.modelopt_run as modelopt_run

    def bf16_export(model, out_dir):
        from modelopt.torch.export import export_hf_checkpoint

        export_hf_checkpoint(model, dtype=torch.bfloat16, export_dir=out_dir)
        return {}

    monkeypatch.setattr(modelopt_run, "export_hf", bf16_export)
    out = tmp_path / "bf16-export"
    assert main(["quantize", str(unified_ckpts["llama"]), "-o", str(out), "--qformat", "fp8", "--format", "hf",
                 *CALIB]) == 0
    result = verify(out, unified_ckpts["llama"])
    assert not result.ok and 0.01 < result.failures[0].weight_mismatch < 0.1, result.summary()
    assert "codes are exactly ModelOpt's unified export computed in bfloat16" in result.summary()

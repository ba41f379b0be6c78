"""Quantized checkpoints of tiny Llama (llama3 rope, GQA, head_dim != hidden/heads) and Nemotron (partial
rotary, layernorm1p) models, calibrated by ModelOpt on CNN/DailyMail, in every CPU format at tp 1 and 2.

Each model is quantized once per format (module fixture) and exported at both tp sizes. Checked:
layouts and dtypes; the per-layer, teacher-forced conversion check against ModelOpt's fake-quant
model (weights and GEMM inputs element by element); planted errors (a scale off by 2x, int4 nibbles
swapped, a pre-quant scale dropped, a KV scale off) fail it in the layer they were planted in; and
everything the quantized checkpoint shares with our bf16 `export` is identical to it.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from quant_fixtures import articles, tiny_quant_models
from safetensors.torch import load_file, save_file

from trt_minitron.checkpoints.quant_formats import get_format, unpack_int4_rows
from trt_minitron.checkpoints.quantized import LINEARS, QuantSpec
from trt_minitron.export.run import ExportOptions, run_export
from trt_minitron.quantize import modelopt_run as mo
from trt_minitron.quantize.assemble import assemble_checkpoint
from trt_minitron.quantize.calib import calibration_batches
from trt_minitron.quantize.teacher import FLIP_FRACTION, check_conversion, failures
from trt_minitron.sources.hf import HFSource
from trt_minitron.tensors.mapping import Mapping

CASES = [("llama", "fp8", "fp8"), ("nemotron", "fp8", "fp8"), ("llama", "int8_sq", None), ("nemotron", "int8_sq", None),
         ("llama", "int4_awq", "fp8"), ("nemotron", "int4_awq", None), ("llama", "w4a8_awq", None),
         ("nemotron", "w4a8_awq", "fp8"), ("nemotron", "int4_awq@64", None), ("llama", "w4a8_awq@64", "fp8")]
AWQ = ("int4_awq", "w4a8_awq")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_quant_models(tmp_path_factory.mktemp("quant_models"))


@pytest.fixture(scope="module", params=[pytest.param(c,
                                                   id="-".join(str(p) for p in c)) for c in CASES])
def quantized(request, models, tmp_path_factory):
    """(case, post-export fake-quant model, ModelConfig, {tp: checkpoint dir}, source folder, check tokens)."""
    kind, qformat, kv = request.param
    qformat, _, group = qformat.partition("@")
    fmt = get_format(qformat, int(group) if group else None)
    from transformers import AutoTokenizer

    src = models[kind]
    root = tmp_path_factory.mktemp(f"{kind}_{qformat}")
    source = HFSource(src)
    batches = calibration_batches(AutoTokenizer.from_pretrained(src), articles(8), 64, 4)
    model = mo.load_model(src, "cpu")
    mo.calibrate(model, mo.quant_config(fmt, kv), batches)
    out = {}
    for tp in (1, 2):
        mo.export_trtllm(model, source.config.architecture, torch.bfloat16, tp, 1, root / f"modelopt_tp{tp}")
        out[tp] = root / f"tp{tp}"
        out[tp].mkdir()
        assemble_checkpoint(source, root / f"modelopt_tp{tp}", out[tp], Mapping(tp, 1), "bfloat16")
    mo.round_prequant_scales(model, torch.bfloat16)
    return (kind, fmt, kv), model, source.config, out, src, batches[0][:1, :48]


def test_layouts_and_dtypes(quantized):
    (kind, fmt, kv), _, cfg, out, _, _ = quantized
    for tp, ckpt in out.items():
        config = json.loads((ckpt / "config.json").read_text())
        q = config["quantization"]
        assert q["quant_algo"] == fmt.quant_algo and q["kv_cache_quant_algo"] == ("FP8" if kv else None)
        assert q["exclude_modules"] == ["lm_head"]
        if fmt.qformat in AWQ:
            assert (q["group_size"], q["has_zero_point"], q["pre_quant_scale"]) == (fmt.group_size, False, True)
        for r in range(tp):
            t = load_file(ckpt / f"rank{r}.safetensors")
            for i in range(cfg.num_hidden_layers):
                for name in LINEARS:
                    prefix = f"transformer.layers.{i}.{name}"
                    if name == "mlp.gate" and kind == "nemotron":
                        assert prefix + ".weight" not in t
                        continue
                    got = {n[len(prefix) + 1:]: (v.dtype, tuple(v.shape)) for n, v in t.items()
                           if n.rsplit(".", 1)[0] == prefix}
                    w = got["weight"]
                    out_f = w[1][0] * (2 if fmt.qformat in AWQ else 1)
                    expected = fmt.linear_tensors(out_f, w[1][1], torch.bfloat16)
                    assert got == {s: (e.dtype, e.shape) for s, e in expected.items()}, prefix
                kv_names = {n for n in t if n.startswith(f"transformer.layers.{i}.attention.") and "cache" in n}
                assert (f"transformer.layers.{i}.attention.kv_cache_scaling_factor" in kv_names) == bool(kv)
            for name in ("transformer.vocab_embedding.weight", "lm_head.weight"):
                assert t[name].dtype == torch.bfloat16


def test_every_layer_matches_modelopt_fake_quant(quantized):
    (_, fmt, kv), model, cfg, out, _, ids = quantized
    for tp, ckpt in out.items():
        checks = check_conversion(model, ckpt, cfg, ids)
        names = {c.name for c in checks}
        assert {"attention.qkv", "attention.dense", "mlp.fc", "mlp.proj"} <= names
        assert ("attention.kv_cache.k" in names) == bool(kv)
        assert not failures(checks), failures(checks)
        worst = max(max(c.weight_mismatch, c.input_mismatch) for c in checks)
        print(f"{fmt.qformat}/{fmt.group_size} kv={kv} tp{tp}: worst mismatching fraction {worst:.2e}, "
              f"output rel {max(c.output_rel for c in checks):.2e}")


def _planted(qformat: str, kv: str | None) -> list[tuple[str, int, str, str, set[str]]]:
    """(tensor under transformer.layers.1., rank, how, what, layer checks that must fail) for this format.

    Activation and KV scales are tripled, not doubled: FP8 is a float format, so a power-of-two scale
    error only moves the exponent and changes nothing outside the subnormal and saturated ranges."""
    cases = [("mlp.fc.weights_scaling_factor", 0, "x2", "weight scale off by 2x", {"mlp.fc"}),
             ("attention.dense.weights_scaling_factor", 1, "x2", "rank-1 dense weight scale off by 2x",
              {"attention.dense"})]
    if qformat != "int4_awq":
        cases.append(("mlp.proj.activation_scaling_factor", 0, "x3", "activation scale off by 3x", {"mlp.proj"}))
    if qformat in ("int8_sq", "int4_awq", "w4a8_awq"):
        cases.append(("attention.qkv.prequant_scaling_factor", 0, "ones", "pre-quant scale dropped",
                      {"attention.qkv"}))
    if qformat in AWQ:
        cases.append(("attention.qkv.weight", 1, "swap", "int4 nibbles swapped", {"attention.qkv"}))
    if kv:
        cases.append(("attention.kv_cache_scaling_factor", 0, "x3", "KV cache scale off by 3x",
                      {"attention.kv_cache.k", "attention.kv_cache.v"}))
    return cases


def test_planted_errors_fail_in_their_layer(quantized, tmp_path):
    (_, fmt, kv), model, cfg, out, _, ids = quantized
    for suffix, rank, how, what, expected in _planted(fmt.qformat, kv):
        ckpt = tmp_path / suffix
        shutil.copytree(out[2], ckpt)
        f = ckpt / f"rank{rank}.safetensors"
        t = load_file(f)
        name = f"transformer.layers.1.{suffix}"
        v = t[name]
        if how == "swap":
            b = v.view(torch.uint8)
            t[name] = ((b >> 4) | (b << 4)).view(torch.int8)
            assert not torch.equal(unpack_int4_rows(t[name]), unpack_int4_rows(v))
        else:
            t[name] = torch.ones_like(v) if how == "ones" else (v.float() * int(how[1:])).to(v.dtype)
        save_file(t, f)
        bad = failures(check_conversion(model, ckpt, cfg, ids))
        assert {(c.layer, c.name) for c in bad} == {(1, n) for n in expected}, what
        fraction = min(max(c.weight_mismatch, c.input_mismatch) for c in bad)
        assert fraction > 100 * FLIP_FRACTION, what
        print(f"{fmt.qformat}: {what}: {fraction:.0%} of elements differ")
        shutil.rmtree(ckpt)


def test_shared_tensors_equal_bf16_export_and_weights_dequantize_near_it(quantized, tmp_path):
    """Embedding, norms, lm_head identical to `export --dtype bfloat16`; every quantized weight, dequantized and
    with its pre-quant scale folded back, within quantization error of the bf16 export's (same rows, same ranks)."""
    (kind, fmt, _), _, cfg, out, src, _ = quantized
    bound = {"fp8": 0.08, "int8_sq": 0.05, "int4_awq": 0.25, "w4a8_awq": 0.3}[fmt.qformat]
    for tp, ckpt in out.items():
        ref = tmp_path / f"bf16_tp{tp}"
        run_export(ExportOptions(src=str(src), output=ref, dtype="bfloat16", tp=tp))
        spec = QuantSpec.from_config(json.loads((ckpt / "config.json").read_text()))
        for r in range(tp):
            want, have = load_file(ref / f"rank{r}.safetensors"), load_file(ckpt / f"rank{r}.safetensors")
            for name, w in want.items():
                prefix = name.removesuffix(".weight")
                if prefix.split(".", 3)[-1] in LINEARS:
                    lin = spec.linear(have, prefix)
                    eff = lin.weight if lin.pre_quant_scale is None else lin.weight * lin.pre_quant_scale
                    err = float((eff - w.float()).norm() / w.float().norm())
                    assert err < bound, (name, err)
                else:
                    assert torch.equal(have[name], w), name


def test_bfloat16_calibration_checks_in_float32(models, tmp_path):
    """The --device cuda recipe (calibrate a bfloat16 model), run on CPU: the check needs float32 and then passes."""
    from transformers import AutoTokenizer

    src = models["llama"]
    source = HFSource(src)
    batches = calibration_batches(AutoTokenizer.from_pretrained(src), articles(8), 64, 4)
    model = mo.load_model(src, "cpu", torch.bfloat16)
    mo.calibrate(model, mo.quant_config(get_format("w4a8_awq"), "fp8"), batches)
    mo.export_trtllm(model, source.config.architecture, torch.bfloat16, 2, 1, tmp_path / "modelopt")
    mo.round_prequant_scales(model, torch.bfloat16)
    with pytest.raises(ValueError, match="needs the fake-quant model in float32"):
        check_conversion(model, tmp_path / "modelopt", source.config, batches[0][:1, :48])
    checks = check_conversion(model.float(), tmp_path / "modelopt", source.config, batches[0][:1, :48])
    assert checks and not failures(checks), failures(checks)

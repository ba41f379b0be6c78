"""Quantized checkpoints run by the reference model and judged by `verify`: every CPU format on the tiny Llama
(llama3 rope, GQA, head_dim != hidden/heads) and Nemotron (partial rotary, layernorm1p) at tp 1 and 2.

verify PASSes the conversion check and reports the quantization cost; planted errors (a scale off by 2x,
int4 nibbles swapped, a pre-quant scale dropped, a norm changed) FAIL it, through the CLI; generate and
summarize run quantized checkpoints with the torch backend.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from quant_fixtures import FORMATS, SHARED, has_fp8_kv
from safetensors.torch import load_file, save_file

from trt_minitron.checkpoints.quant_formats import KVQuant, unpack_int4_rows
from trt_minitron.checkpoints.quantized import QuantSpec
from trt_minitron.checkpoints.reference import ReferenceModel
from trt_minitron.cli import main
from trt_minitron.errors import CheckpointError
from trt_minitron.verify.divergence import Divergence

TEXTS = ["--dataset-file", str(SHARED), "--num-samples", "3", "--max-tokens", "40"]
CASES = [(kind, variant, tp) for kind in ("llama", "nemotron") for variant in FORMATS for tp in (1, 2)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def verify(capsys, ckpt, source, *extra) -> tuple[int, str]:
    code = main(["verify", str(ckpt), "--reference", str(source), *TEXTS, *extra])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("kind, variant, tp", CASES, ids=[f"{k}-{v}-tp{t}" for k, v, t in CASES])
def test_verify_passes_the_conversion_check_and_reports_the_cost(quant_ckpts, capsys, kind, variant, tp):
    code, out = verify(capsys, quant_ckpts[(kind, variant, tp)], quant_ckpts[kind])
    assert code == 0 and out.rstrip().endswith("PASS"), out
    algo = QuantSpec.from_config(json.loads((quant_ckpts[(kind, variant, tp)] / "config.json").read_text())).quant_algo
    assert f"verify (quantized {algo}" in out and "3 CNN/DailyMail texts x 40 tokens" in out
    linears = 5 if kind == "llama" else 4
    kv = 2 if has_fp8_kv(variant) else 0
    assert f"every linear and rank): {2 * (linears + kv)} checks" in out  # 2 layers
    assert "unquantized tensors (" in out and "identical to export's rounding of the source" in out
    cost = next(line for line in out.splitlines() if "quantization cost" in line)
    assert "KL(reference || checkpoint) mean" in cost and "top-1 agreement" in cost and "over 120 tokens" in cost


@pytest.mark.parametrize("kind", ["llama", "nemotron"])
@pytest.mark.parametrize("variant", FORMATS)
def test_tensor_parallel_ranks_merge_to_the_same_model(quant_ckpts, kind, variant):
    """ModelOpt writes the same codes and scales at tp 1 and 2 (per-channel and group scales split with their
    rows/columns, per-tensor scales replicated): merged, both run bit-identically."""
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(24)[None]
    logits = [ReferenceModel.from_checkpoint(quant_ckpts[(kind, variant, tp)]).forward(ids, pos) for tp in (1, 2)]
    assert torch.equal(logits[0], logits[1])
    plain = ReferenceModel.from_checkpoint(quant_ckpts[(kind, "bf16", 1)]).forward(ids, pos)
    assert not torch.equal(logits[0], plain)  # the quantization is emulated, not skipped


def _plant(ckpt, tmp_path, name: str, ranks, how: str):
    out = tmp_path / "planted"
    shutil.copytree(ckpt, out)
    for r in ranks:
        f = out / f"rank{r}.safetensors"
        t = load_file(f)
        v = t[name]
        if how == "swap":
            b = v.view(torch.uint8)
            t[name] = ((b >> 4) | (b << 4)).view(torch.int8)
            assert not torch.equal(unpack_int4_rows(t[name]), unpack_int4_rows(v))
        elif how == "ones":
            t[name] = torch.ones_like(v)
        else:
            t[name] = (v.float() * 2).to(v.dtype)
        save_file(t, f)
    return out


PLANTED = [
    ("fp8", "transformer.layers.1.mlp.fc.weights_scaling_factor", [0, 1], "x2", "layer 1 mlp.fc"),
    ("int8_sq", "transformer.layers.1.attention.dense.weights_scaling_factor", [1], "x2", "layer 1 attention.dense"),
    ("int4_awq+kv", "transformer.layers.1.attention.qkv.weight", [1], "swap", "layer 1 attention.qkv"),
    ("w4a8_awq", "transformer.layers.0.mlp.proj.weights_scaling_factor", [0], "x2", "layer 0 mlp.proj"),
    ("w4a8_awq", "transformer.layers.1.attention.qkv.prequant_scaling_factor", [0, 1], "ones",
     "layer 1 attention.qkv"),
    ("int8_sq", "transformer.layers.0.mlp.proj.prequant_scaling_factor", [1], "ones", "layer 0 mlp.proj"),
]


@pytest.mark.parametrize("kind", ["llama", "nemotron"])
@pytest.mark.parametrize("variant, name, ranks, how, where", PLANTED,
                         ids=[f"{p[0]}-{p[1].split('.', 3)[3]}-{p[3]}" for p in PLANTED])
def test_a_planted_error_fails_the_conversion_check(quant_ckpts, capsys, tmp_path, kind, variant, name, ranks, how, where):
    planted = _plant(quant_ckpts[(kind, variant, 2)], tmp_path, name, ranks, how)
    code, out = verify(capsys, planted, quant_ckpts[kind])
    assert code == 1 and out.rstrip().endswith("FAIL"), out
    first = next(line for line in out.splitlines() if "first failure" in line)
    assert f"first failure: {where}:" in first and "(1 failing)" in first, first


def test_a_changed_norm_fails_as_an_unquantized_difference(quant_ckpts, capsys, tmp_path):
    name = "transformer.layers.1.post_layernorm.weight"
    planted = _plant(quant_ckpts[("nemotron", "fp8", 2)], tmp_path, name, [0, 1], "x2")
    code, out = verify(capsys, planted, quant_ckpts["nemotron"])
    assert code == 1 and f"rank0 {name}, rank1 {name}" in out and "first failure" not in out, out


def test_quantized_verify_refuses_prompt_full_and_a_missing_sidecar(quant_ckpts, capsys, tmp_path):
    ckpt, src = quant_ckpts[("llama", "int4_awq+kv", 1)], quant_ckpts["llama"]
    for extra, message in ((["--prompt", "hello"], "not --prompt/--full"), (["--full"], "not --prompt/--full")):
        code, out = verify(capsys, ckpt, src, *extra)
        assert code == 2 and message in out and "Traceback" not in out
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    (bare / "trt_minitron_quantize.safetensors").unlink()
    code, out = verify(capsys, bare, src)
    assert code == 2 and "no trt_minitron_quantize.safetensors" in out
    code = main(["verify", str(quant_ckpts[("llama", "bf16", 1)]), "--reference", str(src), *TEXTS])
    assert code == 2 and "--dataset-file is for quantized checkpoints" in capsys.readouterr().err


def test_generate_and_summarize_run_quantized_checkpoints(quant_ckpts, capsys, tmp_path):
    ckpt = quant_ckpts[("llama", "w4a8_awq", 2)]
    assert main(["generate", "--backend", "torch", str(ckpt), "--prompt", "The Eiffel Tower", "--max-new-tokens",
                 "4"]) == 0
    assert capsys.readouterr().out.strip()
    report = tmp_path / "report.json"
    assert main(["summarize", "--backend", "torch", "--backend", "torch", str(quant_ckpts[("llama", "bf16", 1)]), str(ckpt),
                 "--dataset-file", str(SHARED), "--num-samples", "2", "--output-len", "4", "--max-input-len", "64",
                 "--report", str(report)]) == 0
    out = capsys.readouterr().out
    base_dtype = json.loads((quant_ckpts[("llama", "bf16", 1)] / "config.json").read_text())["dtype"]
    assert f"torch W4A8_AWQ - torch {base_dtype} (paired bootstrap, 2 samples" in out, out
    rep = json.loads(report.read_text())
    assert [b["format"] for b in rep["backends"]] == [base_dtype, "W4A8_AWQ"]
    diff = rep["comparisons"][0]["rouge_diff"]
    for k in ("rouge1", "rouge2", "rougeL"):
        assert diff[k]["ci95_low"] <= diff[k]["mean"] <= diff[k]["ci95_high"]
        assert k in rep["backends"][1]["aggregate"]["rouge"]


def test_kv_scales_are_read_as_tensorrt_llm_uses_them():
    """kv_cache_scaling_factor, or max(k, v) when ModelOpt stores them apart; both present must agree."""
    spec = QuantSpec.from_config({"dtype": "bfloat16", "quantization": {"quant_algo": "FP8",
                                                                         "kv_cache_quant_algo": "FP8"}})
    one = lambda v: torch.tensor([v], dtype=torch.float32)  # noqa: E731
    a = "transformer.layers.0.attention"
    assert float(spec.kv_quant({f"{a}.kv_cache_scaling_factor": one(1.5)}, a).scale) == 1.5
    split = {f"{a}.k_cache_scaling_factor": one(1.0), f"{a}.v_cache_scaling_factor": one(2.0)}
    assert float(spec.kv_quant(split, a).scale) == 2.0
    assert float(spec.kv_quant({**split, f"{a}.kv_cache_scaling_factor": one(2.0)}, a).scale) == 2.0
    with pytest.raises(CheckpointError, match="which TensorRT-LLM would use instead"):
        spec.kv_quant({**split, f"{a}.kv_cache_scaling_factor": one(1.0)}, a)
    with pytest.raises(CheckpointError, match="missing transformer.layers.0.attention.kv_cache_scaling_factor"):
        spec.kv_quant({}, a)


def test_per_rank_kv_scales_apply_to_their_own_heads():
    from trt_minitron.checkpoints.trtllm import MergedCheckpoint

    merged = object.__new__(MergedCheckpoint)
    merged.kv_per_rank = 2
    kv = merged._merge_kv(None, [KVQuant(torch.tensor(1.0)), KVQuant(torch.tensor(3.0))])
    x = torch.full((1, 4, 3, 8), 3.3)
    y = kv(x)
    assert torch.equal(y[:, :2], KVQuant(torch.tensor(1.0))(x[:, :2]))
    assert torch.equal(y[:, 2:], KVQuant(torch.tensor(3.0))(x[:, 2:]))
    assert not torch.equal(y[:, 0], y[:, 2])


def test_divergence_in_vocabulary_blocks_equals_the_direct_computation():
    torch.manual_seed(0)
    ref = torch.randn(9, 1000) * 3
    model = ref + torch.randn(9, 1000)
    div = Divergence(9)
    for start in range(0, 1000, 128):
        div.update(model[:, start:start + 128], ref[:, start:start + 128], start)
    r = div.report()
    kl = (ref.double().softmax(-1) * (ref.double().log_softmax(-1) - model.double().log_softmax(-1))).sum(-1)
    assert r.kl_mean == pytest.approx(float(kl.mean()), rel=1e-9) and r.kl_max == pytest.approx(float(kl.max()), rel=1e-9)
    assert r.top1_agreement == float((ref.argmax(-1) == model.argmax(-1)).double().mean())
    assert r.max_abs_diff == pytest.approx(float((model - ref).abs().max()))

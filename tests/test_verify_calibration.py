"""verify's calibration proof (verify/calibration.py): a quantized checkpoint's scales recomputed from the source with
the recipe quantize recorded, compared bit for bit.

Every format on the tiny Llama and Nemotron at tp 1 and 2 is proven as quantize wrote it; doctored calibrations that
the conversion check cannot see (it rebuilds ModelOpt's quantization at the checkpoint's own scales) are named:
an activation scale x1.5, a KV scale x4, SmoothQuant and AWQ pre-quant scales x2 with the weights and the other
scales changed to match (so the checkpoint computes exactly what a model calibrated that way would), and a
checkpoint calibrated on other articles than its report records. A recipe that cannot be replayed here is said.
"""

from __future__ import annotations

import json
import shutil

import pytest
from quant_fixtures import CALIB, FORMATS, SHARED, articles
from quant_plants import PLANTS, scale

from trt_minitron.checkpoints.trtllm import MergedCheckpoint, read_checkpoint
from trt_minitron.cli import main
from trt_minitron.sources import open_source
from trt_minitron.verify.calibration import REPORT, prove_calibration

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXTS = ["--dataset-file", str(SHARED), "--num-samples", "2", "--max-tokens", "24"]
CASES = [(kind, variant, tp) for kind in ("llama", "nemotron") for variant in FORMATS for tp in (1, 2)]


def prove(ckpt, source):
    src = open_source(str(source))
    try:
        return prove_calibration(MergedCheckpoint(read_checkpoint(ckpt)), src)
    finally:
        src.close()


def copy(quant_ckpts, key, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(quant_ckpts[key], out)
    return out


@pytest.mark.parametrize("kind, variant, tp", CASES, ids=[f"{k}-{v}-tp{t}" for k, v, t in CASES])
def test_an_untouched_checkpoint_proves_its_calibration(quant_ckpts, kind, variant, tp):
    proof = prove(quant_ckpts[(kind, variant, tp)], quant_ckpts[kind])
    assert proof.proven and not proof.failed, proof.line()
    assert proof.compared > 0 and proof.line().startswith("calibration proven: ")


def verify(capsys, ckpt, source, *extra) -> tuple[int, str]:
    code = main(["verify", str(ckpt), "--reference", str(source), *TEXTS, *extra])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("case, key, ranks, sidecar, names, ratio", PLANTS, ids=[p[0] for p in PLANTS])
def test_a_doctored_calibration_fails_verify_and_is_named(quant_ckpts, tmp_path, capsys, case, key, ranks, sidecar, names,
                                                          ratio):
    """The conversion check alone passes each (the doctoring is consistent); the calibration proof names it."""
    ckpt = copy(quant_ckpts, key, tmp_path)
    scale(ckpt, ranks, sidecar)
    code, out = verify(capsys, ckpt, quant_ckpts[key[0]], "--no-prove-calibration")
    assert code == 0 and out.rstrip().endswith("PASS") and "calibration" not in out, out
    code, out = verify(capsys, ckpt, quant_ckpts[key[0]])
    assert code == 1 and out.rstrip().endswith("FAIL"), out
    assert f"  calibration: FAILED, recomputed from the recorded recipe: {names}" in out and ratio in out, out


@pytest.mark.parametrize("key", [("llama", "int4_awq+kv", 2), ("nemotron", "int8_sq", 1)])
def test_verify_says_calibration_proven(quant_ckpts, capsys, key):
    code, out = verify(capsys, quant_ckpts[key], quant_ckpts[key[0]])
    assert code == 0 and out.rstrip().endswith("PASS"), out
    assert "\n  calibration proven: " in out and "bit-identical to the checkpoint's" in out, out


def test_a_calibration_on_other_articles_than_recorded_is_named(quant_ckpts, tmp_path):
    """quantize calibrated on articles 8..15, its report replaced by one recording articles 0..7 (a report that
    lies, or a calibration loop that read other data than it says)."""
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"article": a, "highlights": "x"}) + "\n" for a in articles(16)[8:]))
    ckpt = tmp_path / "ckpt"
    calib = [str(other) if a == str(SHARED) else a for a in CALIB]
    assert main(["quantize", str(quant_ckpts["llama"]), "-o", str(ckpt), "--qformat", "fp8", *calib]) == 0
    shutil.copy(quant_ckpts[("llama", "fp8", 1)] / REPORT, ckpt / REPORT)
    proof = prove(ckpt, quant_ckpts["llama"])
    assert proof.failed and "layer 0 mlp.fc.activation_scaling_factor (rank 0): recomputed 0.0112463, found 0.0120962" in \
        proof.line(), \
        proof.line()


def _edit_report(ckpt, edit) -> None:
    report = json.loads((ckpt / REPORT).read_text())
    edit(report)
    (ckpt / REPORT).write_text(json.dumps(report))


def _changed_data(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = SHARED.read_text().splitlines(keepends=True)
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "article": first["article"] + " Edited."}) + "\n"
    path.write_text("".join(lines))
    return str(path)


@pytest.mark.parametrize("case, edit, says", [
    ("no report", None, f"no {REPORT} (the recipe `trt-minitron quantize` records)"),
    ("data file gone", lambda r, tmp: r["calibration"]["dataset"].update(file=str(tmp / "gone.jsonl")),
     "the recorded calibration data is not available here: dataset file"),
    ("data file changed", lambda r, tmp: r["calibration"]["dataset"].update(file=_changed_data(tmp)),
     "are not the ones the checkpoint was calibrated on"),
    ("calibrated on CUDA", lambda r, tmp: r["calibration"].update(device="cuda", dtype="bfloat16"),
     "it was calibrated on CUDA (bfloat16) and torch sees no CUDA GPU here"),
    ("another ModelOpt config", lambda r, tmp: r["calibration"].update(modelopt_algorithm="smoothquant"),
     "configures fp8 differently from the recorded run (nvidia-modelopt"),
    ("sample ids edited", lambda r, tmp: r["calibration"].update(sample_ids=[[4, 5, 6, 7], [0, 1, 2, 3]]),
     "tokenize differently from the recorded run"),
])
def test_a_recipe_that_cannot_be_replayed_is_said_not_proven(quant_ckpts, tmp_path, case, edit, says):
    ckpt = copy(quant_ckpts, ("llama", "fp8", 1), tmp_path)
    if edit is None:
        (ckpt / REPORT).unlink()
    else:
        _edit_report(ckpt, lambda r: edit(r, tmp_path))
    proof = prove(ckpt, quant_ckpts["llama"])
    assert not proof.proven and not proof.failed, proof.line()
    assert proof.line().startswith("calibration not proven: ") and says in proof.line(), proof.line()
    assert proof.line().endswith("only the conversion at the checkpoint's scales is judged")


@pytest.mark.parametrize("qformat, extra", [("fp8", ["--whole-model", "--kv-cache-dtype", "fp8"]),
                                            ("int4_awq", ["--kv-cache-dtype", "fp8"])])
def test_mistral_and_whole_model_calibrations(quant_ckpts, tmp_path, qformat, extra):
    """Mistral (its own decoder type in ModelOpt's exporter); --whole-model max calibration is bit-identical to the
    layer-by-layer recalibration (tests/test_quant_layerwise.py), so it is proven too."""
    from quant_fixtures import make_quant_model

    src = make_quant_model("mistral", tmp_path / "mistral")
    ckpt = tmp_path / "ckpt"
    assert main(["quantize", str(src), "-o", str(ckpt), "--qformat", qformat, "--tp", "2", *CALIB, *extra]) == 0
    proof = prove(ckpt, src)
    assert proof.proven, proof.line()
    scale(ckpt, {"transformer.layers.1.attention.kv_cache_scaling_factor": 4.0})
    assert prove(ckpt, src).line().startswith("calibration: FAILED, recomputed from the recorded recipe: layer 1 "
                                              "attention.kv_cache_scaling_factor (rank 0): recomputed ")


def test_whole_model_awq_with_an_fp8_kv_cache_is_not_replayed(quant_ckpts, tmp_path):
    ckpt = copy(quant_ckpts, ("llama", "int4_awq+kv", 1), tmp_path)
    _edit_report(ckpt, lambda r: r["calibration"].update(mode="whole model: one ModelOpt calibration"))
    assert "AWQ with an FP8 KV cache was calibrated on the whole model" in prove(ckpt, quant_ckpts["llama"]).line()


def test_an_unreplayable_recipe_is_said_and_the_conversion_judged(quant_ckpts, tmp_path, capsys):
    ckpt = copy(quant_ckpts, ("nemotron", "fp8+kv", 2), tmp_path)
    (ckpt / REPORT).unlink()
    code, out = verify(capsys, ckpt, quant_ckpts["nemotron"])
    assert code == 0 and out.rstrip().endswith("PASS"), out
    assert f"  calibration not proven: no {REPORT}" in out and "proven: " not in out.replace("not proven: ", ""), out


def test_the_users_gate(quant_ckpts, capsys):
    key = ("llama", "fp8", 1)
    code, out = verify(capsys, quant_ckpts[key], quant_ckpts["llama"], "--max-kl", "0", "--min-top1", "1")
    assert code == 1 and out.rstrip().endswith("FAIL"), out
    assert "(float32, judged: --max-kl 0, --min-top1 1 and the top-1 floor)" in out, out
    assert "\n  cost: KL mean " in out and "nats/token exceeds --max-kl 0\n" in out, out
    assert "\n  cost: top-1 agreement " in out and "is below --min-top1 1\n" in out, out
    code, out = verify(capsys, quant_ckpts[key], quant_ckpts["llama"], "--max-kl", "100", "--min-top1", "0")
    assert code == 0 and out.rstrip().endswith("PASS") and "cost: " not in out, out


@pytest.mark.parametrize("args, says", [
    (["--max-kl", "-1"], "--max-kl must be a finite number >= 0 (nats per token), got -1.0"),
    (["--max-kl", "nan"], "--max-kl must be a finite number >= 0"),
    (["--min-top1", "90"], "--min-top1 must be a fraction between 0 and 1 (0.9 = 90 %), got 90.0"),
])
def test_a_bad_gate_is_refused(quant_ckpts, capsys, args, says):
    assert main(["verify", str(quant_ckpts[("llama", "fp8", 1)]), "--reference", str(quant_ckpts["llama"]), *args]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err


def test_the_gate_is_for_quantized_checkpoints(quant_ckpts, capsys):
    assert main(["verify", str(quant_ckpts[("llama", "bf16", 1)]), "--reference", str(quant_ckpts["llama"]),
                 "--min-top1", "0.9"]) == 2
    assert "--max-kl and --min-top1 judge a quantized checkpoint's cost; this one is not quantized" in \
        capsys.readouterr().err

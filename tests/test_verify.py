"""verify: correct exports of every supported form pass, bad input is one line and exit 2 before the
source is opened, kv_channels-only configs and vocabulary padding are handled."""

import json
import shutil

import pytest
import torch
from nemo_fixtures import build_nemo
from plant import export
from safetensors.torch import load_file, save_file
from tiny import make_tiny

import trt_minitron.verify.run as verify_run
from trt_minitron.cli import main
from trt_minitron.options import VerifyOptions
from trt_minitron.verify.criterion import LOGIT_RTOL, LogitStats
from trt_minitron.verify.run import run_verify

LAYOUTS = [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2)]  # tiny models: 4 heads, 2 kv heads, 4 layers
DTYPES = ["float32", "float16", "bfloat16"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "llama": make_tiny("llama", root / "llama"),
        "llama_tied": make_tiny("llama", root / "llama_tied", seed=1, tie_word_embeddings=True),
        "nemotron": make_tiny("nemotron", root / "nemotron"),
        "llama_default": make_tiny("llama", root / "llama_default", init="default"),
        "nemotron_small": make_tiny("nemotron", root / "nemotron_small", init="small"),
    }


# Every layout at bfloat16, every dtype at tp 2 (test_export.py covers every layout at float32).
CORRECT = [(tp, pp, "bfloat16") for tp, pp in LAYOUTS] + [(2, 1, "float32"), (2, 1, "float16")]


@pytest.mark.parametrize("tp, pp, dtype", CORRECT)
@pytest.mark.parametrize("name", ["llama", "llama_tied", "nemotron"])
def test_correct_export_passes_layer_by_layer(models, tmp_path, name, tp, pp, dtype):
    out = export(models[name], tmp_path / "ckpt", dtype, tp=tp, pp=pp)
    result = run_verify(VerifyOptions(checkpoint=out, reference=models[name]))
    assert result.ok, result.summary()
    assert [c.where for c in result.checks] == ["embedding", "rope"] + [
        f"layer {i} {part}" for i in range(4) for part in ("attention", "mlp")] + ["final norm", "lm_head"]
    assert result.top1_agreement == 1.0 and result.logits.disagreements == 0
    assert result.max_abs_diff <= LOGIT_RTOL * result.logits.max_abs_logit
    if dtype == "float32" and name != "nemotron":
        assert result.cast.max_abs_diff == result.max_abs_diff  # nothing to round
    elif dtype != "float32":
        assert result.cast.max_abs_diff > 10 * result.logit_tolerance  # what the cast costs, reported only


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["llama_tied", "nemotron", "llama_default", "nemotron_small"])
def test_correct_export_passes_full(models, tmp_path, name, dtype):
    out = export(models[name], tmp_path / "ckpt", dtype, tp=2)
    full = run_verify(VerifyOptions(checkpoint=out, reference=models[name], full=True))
    assert full.ok and [c.where for c in full.checks] == ["rope"] and full.top1_agreement == 1.0, full.summary()
    layers = run_verify(VerifyOptions(checkpoint=out, reference=models[name]))
    # Both modes compare the same end-to-end logits; only summation order differs.
    assert abs(full.max_abs_diff - layers.max_abs_diff) <= full.logit_tolerance
    assert full.cast.max_abs_diff == pytest.approx(layers.cast.max_abs_diff, rel=1e-2, abs=1e-5)


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("name, layout, tp, pp, dtype", [
    ("nemotron", "torch_dist", 1, 1, "float32"),
    ("llama", "mp_rank", 2, 1, "bfloat16"),
    ("nemotron", "tp_pp", 2, 2, "bfloat16"),
    ("llama", "zarr", 1, 1, "float16"),
])
def test_nemo_export_passes_against_the_nemo_and_the_hf_model(models, tmp_path, name, layout, tp, pp, dtype, full):
    nemo = build_nemo(models[name], tmp_path / "m.nemo", layout, tp=tp, pp=pp)
    out = export(nemo, tmp_path / "ckpt", dtype, tp=2)
    for reference in (nemo, models[name]):
        result = run_verify(VerifyOptions(checkpoint=out, reference=reference, full=full))
        assert result.ok, result.summary()
        assert result.num_tokens > 20  # the exported SentencePiece tokenizer on the default paragraph


@pytest.mark.parametrize("arch", ["nemotron", "llama"])
def test_kv_channels_only_config_verifies(tmp_path, arch, capsys):
    # head size given only as kv_channels (24, while hidden/heads = 16): transformers must not guess it.
    src = make_tiny(arch, tmp_path / "m")
    cfg = json.loads((src / "config.json").read_text())
    cfg["kv_channels"] = cfg.pop("head_dim")
    (src / "config.json").write_text(json.dumps(cfg))
    out = export(src, tmp_path / "ckpt", "bfloat16")
    assert json.loads((out / "config.json").read_text())["head_size"] == 24
    for full in (False, True):
        assert run_verify(VerifyOptions(checkpoint=out, reference=src, full=full)).ok
    assert main(["verify", str(out), "--reference", str(src)]) == 0
    assert capsys.readouterr().out.strip().endswith("PASS")


def _pad_vocab(src, dst, rows):
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        t = tensors[name]
        tensors[name] = torch.cat([t, torch.randn(rows - t.shape[0], t.shape[1])])
    save_file(tensors, dst / "model.safetensors")
    cfg = json.loads((dst / "config.json").read_text())
    cfg["vocab_size"] = rows
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_source_with_vocab_padding_compares_the_shared_vocabulary(models, tmp_path, capsys):
    padded = _pad_vocab(models["llama"], tmp_path / "padded", 256)  # 250 rounded up to 128 as NeMo pads
    out = export(models["llama"], tmp_path / "ckpt", "bfloat16", tp=2)
    for full in (False, True):
        result = run_verify(VerifyOptions(checkpoint=out, reference=padded, full=full))
        assert result.ok, result.summary()
        assert result.notes == ("compared over the shared vocabulary of 250: the reference's 6 extra rows (to 256) "
                                "are vocabulary padding the checkpoint trimmed",)
    assert main(["verify", str(out), "--reference", str(padded)]) == 0
    assert "note: compared over the shared vocabulary of 250" in capsys.readouterr().out


def test_plain_summary_names_the_closest_stage_and_the_cast(models, tmp_path, capsys):
    out = export(models["nemotron"], tmp_path / "ckpt", "bfloat16")
    assert main(["verify", str(out), "--reference", str(models["nemotron"])]) == 0
    text = capsys.readouterr().out
    assert "all 12 stages within tolerance; closest: " in text
    assert "logits vs rounded source: max |delta|" in text and "top-1 agreement 100.0%" in text
    assert "the cast's cost, not judged" in text and text.strip().endswith("PASS")


# --- bad input: one line, exit 2, and the source never opened -------------------------------------------
@pytest.fixture
def no_source(monkeypatch):
    def refuse(src):
        raise AssertionError("the source must not be opened before the checkpoint is validated")
    monkeypatch.setattr(verify_run, "open_source", refuse)


def _one_line_exit_2(capsys, argv, expected):
    capsys.readouterr()  # drop what the export before printed
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and expected in captured.err, repr(captured.err)
    assert "Traceback" not in captured.err and captured.out == ""


def test_truncated_rank_file(models, tmp_path, capsys, no_source):
    out = export(models["llama"], tmp_path / "ckpt", "bfloat16", tp=2)
    f = out / "rank1.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    _one_line_exit_2(capsys, ["verify", str(out), "--reference", str(models["llama"])], "rank1.safetensors")


def test_wrong_shape_in_rank_file(models, tmp_path, capsys, no_source):
    out = export(models["nemotron"], tmp_path / "ckpt", "float32")
    t = load_file(out / "rank0.safetensors")
    t["transformer.layers.2.mlp.fc.weight"] = t["transformer.layers.2.mlp.fc.weight"][:-1].contiguous()
    save_file(t, out / "rank0.safetensors")
    _one_line_exit_2(capsys, ["verify", str(out), "--reference", str(models["nemotron"])],
                     "tensor transformer.layers.2.mlp.fc.weight is F32[47, 64], expected F32[48, 64]")


def test_missing_rank_file(models, tmp_path, capsys, no_source):
    out = export(models["llama"], tmp_path / "ckpt", "bfloat16", tp=2)
    (out / "rank1.safetensors").unlink()
    _one_line_exit_2(capsys, ["verify", str(out), "--reference", str(models["llama"])], "missing rank files")


def test_norm_differing_between_tp_ranks(models, tmp_path, capsys, no_source):
    out = export(models["nemotron"], tmp_path / "ckpt", "bfloat16", tp=2)
    t = load_file(out / "rank1.safetensors")
    t["transformer.layers.1.post_layernorm.bias"] += 1
    save_file(t, out / "rank1.safetensors")
    _one_line_exit_2(capsys, ["verify", str(out), "--reference", str(models["nemotron"])],
                     "transformer.layers.1.post_layernorm.bias differs between rank0.safetensors and rank1")


def test_empty_prompt(models, tmp_path, capsys, no_source):
    out = export(models["llama"], tmp_path / "ckpt", "float32")
    _one_line_exit_2(capsys, ["verify", str(out), "--reference", str(models["llama"]), "--prompt", " "],
                     "--prompt is empty")


def test_prompt_without_tokenizer(models, tmp_path, capsys, no_source):
    out = export(models["llama"], tmp_path / "ckpt", "float32")
    _one_line_exit_2(capsys, ["verify", str(out), "--reference", str(models["llama"]), "--prompt", "hello"],
                     "has no usable tokenizer for --prompt")


def test_reference_with_another_vocabulary(models, tmp_path, capsys):
    other = _pad_vocab(models["llama"], tmp_path / "other", 300)  # not padding: 300 is no rounding of 250
    out = export(models["llama"], tmp_path / "ckpt", "bfloat16")
    _one_line_exit_2(capsys, ["verify", str(out), "--reference", str(other)],
                     "has a different vocabulary: vocab_size 300 (reference) vs 250 (checkpoint)")


def test_reference_of_another_shape(models, tmp_path, capsys):
    wide = make_tiny("llama", tmp_path / "wide", head_dim=16)
    out = export(models["llama"], tmp_path / "ckpt", "bfloat16")
    _one_line_exit_2(capsys, ["verify", str(out), "--reference", str(wide)],
                     "does not match the checkpoint: head_dim 16 (reference) vs 24 (checkpoint)")


def test_not_a_checkpoint(tmp_path, capsys, no_source):
    _one_line_exit_2(capsys, ["verify", str(tmp_path), "--reference", str(tmp_path)], "no config.json")


# --- the top-1 criterion ---------------------------------------------------------------------------------
def test_top1_disagreement_is_a_tie_only_within_the_tolerance():
    ref = torch.tensor([[1.0, 3.0, 3.0 - 1e-6, 0.0], [0.0, 2.0, 1.0, 0.0]])
    ours = torch.tensor([[1.0, 3.0 - 2e-6, 3.0, 0.0], [0.0, 1.0, 2.0, 0.0]])
    stats = LogitStats(2)
    stats.update(ours[:, :2], ref[:, :2], 0)  # in two vocabulary blocks, as verify streams lm_head
    stats.update(ours[:, 2:], ref[:, 2:], 2)
    report = stats.report(tolerance=1e-5)
    assert (report.top1_agreement, report.ties, report.disagreements) == (0.0, 1, 1)
    assert report.max_abs_diff == 1.0 and report.max_abs_logit == 3.0

"""verify on Hugging Face folders: `export --format hf` of every registered architecture from every source kind it has
(HF, .nemo, GGUF) passes; a folder written by transformers' save_pretrained passes against itself; every planted bug
of tests/plant_hf.py fails at float32, float16 and bfloat16 naming its stage or tensor; what is not a checkpoint verify
takes is one line and exit 2."""

import json
import shutil

import pytest
from nemo_fixtures import build_nemo
from plant_hf import BUGS
from test_gguf_tiny import write_gguf
from tiny import make_registered

from trt_minitron.archs import registered
from trt_minitron.cli import main
from trt_minitron.options import VerifyOptions
from trt_minitron.verify.run import run_verify

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ARCHS = {a.hf_architecture: a for a in registered()}
DTYPES = ["float32", "float16", "bfloat16"]
# Every source kind an architecture is read from: .nemo and GGUF where the registry says the arch has one (a Mistral
# .nemo or GGUF reads back as Llama, tested as Llama).
SOURCES = [(name, kind) for name, a in ARCHS.items() for kind in ("hf", "nemo", "gguf")
           if kind == "hf" or (kind == "nemo" and a.nemo_activations) or (kind == "gguf" and a.gguf_architecture)]


def named(result) -> str:
    """Everything verify names as wrong: the first diverging stage and the problems it reports."""
    first = result.first_divergence
    return " | ".join(([first.where] if first else []) + list(result.problems))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    cache = {}

    def get(name: str, kind: str = "hf"):
        if (name, kind) not in cache:
            arch = ARCHS[name]
            # llama.cpp's nemotron rope size is the model's only when head_dim == hidden/heads (test_gguf_tiny.py)
            overrides = {"head_dim": 16} if kind == "gguf" and arch.partial_rotary else {}
            hf = make_registered(arch, root / f"{name}-{kind}-hf", **overrides)
            if kind == "nemo":
                cache[(name, kind)] = build_nemo(hf, root / f"{name}.nemo", "ckpt")
            elif kind == "gguf":
                cache[(name, kind)] = write_gguf(hf, root / f"{name}.gguf", arch.gguf_architecture)
            else:
                cache[(name, kind)] = hf
        return cache[(name, kind)]
    return get


@pytest.fixture(scope="module")
def exports(sources, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    cache = {}

    def get(name: str, dtype: str):
        if (name, dtype) not in cache:
            out = root / f"{name}-{dtype}"
            assert main(["export", str(sources(name)), "-o", str(out), "--format", "hf", "--dtype", dtype]) == 0
            cache[(name, dtype)] = out
        return cache[(name, dtype)]
    return get


@pytest.mark.parametrize("name, kind", SOURCES, ids=[f"{n}-{k}" for n, k in SOURCES])
def test_export_hf_verifies_for_every_architecture_and_source_kind(sources, tmp_path, capsys, name, kind):
    src = sources(name, kind)
    out = tmp_path / "hf"
    assert main(["export", str(src), "-o", str(out), "--format", "hf", "--dtype", "bfloat16"]) == 0
    capsys.readouterr()
    assert main(["verify", str(out), "--reference", str(src)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    stored = json.loads((out / "config.json").read_text())["architectures"][0]
    assert lines[0] == f"verify: Hugging Face folder ({stored}, bfloat16)" and lines[-1] == "PASS"
    result = run_verify(VerifyOptions(checkpoint=out, reference=src))
    assert [c.where for c in result.checks] == ["embedding", "rope"] + [
        f"layer {i} {part}" for i in range(4) for part in ("attention", "mlp")] + ["final norm", "lm_head"]
    assert result.top1_agreement == 1.0 and result.logits.disagreements == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ARCHS))
def test_export_hf_verifies_at_every_dtype(exports, sources, name, dtype):
    result = run_verify(VerifyOptions(checkpoint=exports(name, dtype), reference=sources(name)))
    assert result.ok, result.summary()
    if dtype != "float32":
        assert result.cast.max_abs_diff > 10 * result.logit_tolerance  # what the cast costs, reported only


@pytest.mark.parametrize("name", list(ARCHS))
def test_full_mode_runs_transformers_whole_model_from_the_folders_config(exports, sources, name):
    full = run_verify(VerifyOptions(checkpoint=exports(name, "bfloat16"), reference=sources(name), full=True))
    assert full.ok and full.mode == "full" and [c.where for c in full.checks] == ["rope"], full.summary()
    assert full.logits.max_abs_diff == 0.0  # the same modules on the rounded source's values


@pytest.mark.parametrize("name", list(ARCHS))
def test_a_folder_written_by_save_pretrained_verifies_against_itself(sources, name):
    folder = sources(name)  # transformers' own save_pretrained, float32
    result = run_verify(VerifyOptions(checkpoint=folder, reference=folder))
    assert result.ok and result.dtype == "float32", result.summary()
    assert result.logits.max_abs_diff == 0.0  # the same modules on the same tensors: bit-identical


def test_a_save_pretrained_folder_verifies_against_the_nemo_made_from_it(sources):
    name = "NemotronForCausalLM"
    result = run_verify(VerifyOptions(checkpoint=sources(name), reference=sources(name, "nemo")))
    assert result.ok, result.summary()


CASES = [(bug, name) for bug in BUGS for name in bug.archs]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bug, name", CASES, ids=[f"{b.name}-{n}" for b, n in CASES])
def test_planted_bug_fails_and_is_named(exports, sources, tmp_path, bug, name, dtype):
    bad = tmp_path / "bad"
    shutil.copytree(exports(name, dtype), bad)
    bug.plant(bad)
    result = run_verify(VerifyOptions(checkpoint=bad, reference=sources(name)))
    assert not result.ok, result.summary()
    assert any(w in named(result) for w in bug.where), result.summary()
    full = run_verify(VerifyOptions(checkpoint=bad, reference=sources(name), full=True))
    assert not full.ok, full.summary()


def test_cli_names_the_planted_bug_and_exits_1(exports, sources, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(exports("LlamaForCausalLM", "bfloat16"), bad)
    next(b for b in BUGS if b.name == "head-dim-removed").plant(bad)
    capsys.readouterr()
    assert main(["verify", str(bad), "--reference", str(sources("LlamaForCausalLM"))]) == 1
    out = capsys.readouterr().out
    assert out.startswith("verify: Hugging Face folder (LlamaForCausalLM, bfloat16)\n")
    assert "config.json implies bfloat16[64, 64]" in out and out.strip().endswith("FAIL")


def _one_line_error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_what_verify_does_not_take_is_one_line_and_exit_2(exports, sources, tmp_path, capsys):
    ref = str(sources("LlamaForCausalLM"))
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"pretrained_config": {}, "build_config": {}}))
    assert "is a TensorRT-LLM engine folder; verify takes" in _one_line_error(["verify", str(engine), "--reference", ref],
                                                                             capsys)
    gguf = sources("LlamaForCausalLM", "gguf")
    assert "is a GGUF file, not a checkpoint folder" in _one_line_error(["verify", str(gguf), "--reference", ref], capsys)
    folder = str(exports("LlamaForCausalLM", "float32"))
    assert "this one is not quantized" in _one_line_error(["verify", folder, "--reference", ref, "--max-kl", "0.1"], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no config.json" in _one_line_error(["verify", str(empty), "--reference", ref], capsys)
    other = tmp_path / "awq"
    shutil.copytree(exports("LlamaForCausalLM", "bfloat16"), other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "quantization_config": {"quant_method": "awq", "bits": 4}}))
    assert "is quantized with 'awq'; verify proves ModelOpt" in _one_line_error(["verify", str(other), "--reference", ref],
                                                                               capsys)
    hf = str(exports("LlamaForCausalLM", "bfloat16"))
    assert "--dataset-file is for quantized" in _one_line_error(["verify", hf, "--reference", ref, "--dataset-file",
                                                                 str(tmp_path / "x.jsonl")], capsys)


def test_tied_embeddings_export_without_lm_head_and_untying_them_fails(tmp_path):
    src = make_registered(ARCHS["LlamaForCausalLM"], tmp_path / "tied", tie_word_embeddings=True)
    out = tmp_path / "hf"
    assert main(["export", str(src), "-o", str(out), "--format", "hf"]) == 0
    result = run_verify(VerifyOptions(checkpoint=out, reference=src))
    assert result.ok, result.summary()
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": False}))
    result = run_verify(VerifyOptions(checkpoint=out, reference=src))
    assert not result.ok and "missing tensor lm_head.weight" in result.problems, result.summary()

"""`trt-minitron quantize` end to end: outputs, config.json against our bf16 export, sources (HF, .nemo, GGUF),
--format hf, and bad input (one line, exit 2, nothing left behind)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from quant_fixtures import SHARED, make_quant_model, tiny_quant_models
from safetensors import safe_open

from trt_minitron.cli import main

CALIB = ["--calib-dataset", str(SHARED), "--calib-size", "8", "--calib-max-len", "48", "--batch-size", "4"]
# config.json fields a quantized checkpoint may change relative to `export --dtype bfloat16`.
MAY_DIFFER = {"quantization"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_quant_models(tmp_path_factory.mktemp("quant_cli_models"))


def _config_diff(a: Path, b: Path) -> dict:
    x, y = json.loads((a / "config.json").read_text()), json.loads((b / "config.json").read_text())
    return {k: (x.get(k), y.get(k)) for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("kind,qformat,kv,tp,pp,dtype", [("llama", "fp8", True, 2, 1, "bfloat16"),
                                                         ("nemotron", "int4_awq", False, 2, 1, "bfloat16"),
                                                         ("nemotron", "w4a8_awq", True, 1, 2, "float16")])
def test_quantize_writes_checkpoint_whose_config_matches_our_export(models, tmp_path, capsys, kind, qformat, kv, tp, pp,
                                                                     dtype):
    out, ref = tmp_path / "q", tmp_path / "ref"
    parallel = ["--tp", str(tp), "--pp", str(pp), "--dtype", dtype]
    extra = ["--kv-cache-dtype", "fp8"] if kv else []
    umask = os.umask(0o022)
    try:
        assert main(["quantize", str(models[kind]), "-o", str(out), "--qformat", qformat, *parallel, *CALIB, *extra]) == 0
    finally:
        os.umask(umask)
    captured = capsys.readouterr()
    closing = captured.err.strip().splitlines()[-1]
    assert closing.startswith(f"quantized {qformat}") and f"tp {tp}, pp {pp}" in closing and "peak RSS" in closing
    assert " s (calibration" in closing and f"GB {dtype} ->" in closing and "layers match ModelOpt" in closing
    assert captured.out == ""  # ModelOpt's chatter goes to stderr
    ranks = [f"rank{r}.safetensors" for r in range(tp * pp)]
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", "generation_config.json", *ranks,
                                                            "tokenizer.json", "tokenizer_config.json",
                                                            "trt_minitron_quantize.json", "trt_minitron_export.json",
                                                            "trt_minitron_quantize.safetensors"])  # pre-quant scales
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert modes == dict.fromkeys(modes, "0o644")  # the sidecar too: a colleague can read a shared checkpoint
    assert _leftovers(tmp_path) == []
    assert main(["export", str(models[kind]), "-o", str(ref), *parallel]) == 0
    diff = _config_diff(out, ref)
    assert set(diff) == MAY_DIFFER, diff  # rotary_base / rotary_scaling / rotary_pct / head_size all as ours
    report = json.loads((out / "trt_minitron_quantize.json").read_text())
    assert report["qformat"] == qformat and report["calibration"]["articles_used"] == 8
    assert report["conversion_check"]["worst"]["input_mismatch"] <= report["conversion_check"]["allowed_mismatch"]
    assert 0 < report["weight_bytes"] < report["weight_bytes_unquantized"]


def test_format_hf_keeps_our_config_and_adds_quantization_config(models, tmp_path):
    out = tmp_path / "hfq"
    assert main(["quantize", str(models["llama"]), "-o", str(out), "--qformat", "fp8", "--format", "hf", *CALIB]) == 0
    config = json.loads((out / "config.json").read_text())
    ours = json.loads((models["llama"] / "config.json").read_text())
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["rope_theta"] == ours.get("rope_theta", 10000.0)
    assert config["head_dim"] == 128 and config["architectures"] == ["LlamaForCausalLM"]
    assert config["quantization_config"]["quant_algo"] == "FP8"
    assert json.loads((out / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == "FP8"
    assert (out / "tokenizer.json").is_file()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert f.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype == torch.float8_e4m3fn
        assert f.get_tensor("model.layers.0.self_attn.q_proj.input_scale").dtype == torch.float32
        for name in ("model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "lm_head.weight"):
            assert f.get_tensor(name).dtype == torch.bfloat16, name  # --dtype, not the float32 calibration copy
    assert {"model.layers.0.self_attn.q_proj.weight_scale", "model.layers.0.self_attn.q_proj.input_scale"} <= names


def test_nemo_source_is_quantized_from_its_own_tensors(models, tmp_path):
    from nemo_fixtures import build_nemo

    nemo = build_nemo(models["nemotron"], tmp_path / "tiny.nemo", "ckpt")
    out, ref = tmp_path / "q", tmp_path / "bf16"
    assert main(["quantize", str(nemo), "-o", str(out), "--qformat", "fp8", *CALIB]) == 0
    assert main(["export", str(nemo), "-o", str(ref)]) == 0
    assert set(_config_diff(out, ref)) == MAY_DIFFER
    assert (out / "tokenizer.model").is_file()
    with safe_open(str(out / "rank0.safetensors"), "pt") as q, safe_open(str(ref / "rank0.safetensors"), "pt") as r:
        for name in ("transformer.vocab_embedding.weight", "transformer.layers.1.input_layernorm.weight",
                     "transformer.ln_f.bias", "lm_head.weight"):
            assert torch.equal(q.get_tensor(name), r.get_tensor(name)), name
    assert _leftovers(tmp_path) == []


def test_awq_vocab_padding_and_tied_embedding_stay_ours(tmp_path):
    """ModelOpt pads vocab 250 to 256 for AWQ and shards the embedding at tp 2; the checkpoint keeps ours."""
    src = make_quant_model("llama", tmp_path / "src", vocab_size=250, tie_word_embeddings=True)
    out, ref = tmp_path / "q", tmp_path / "bf16"
    assert main(["quantize", str(src), "-o", str(out), "--qformat", "int4_awq", "--tp", "2", *CALIB]) == 0
    assert main(["export", str(src), "-o", str(ref), "--tp", "2"]) == 0
    assert set(_config_diff(out, ref)) == MAY_DIFFER
    for r in range(2):
        with safe_open(str(out / f"rank{r}.safetensors"), "pt") as q, \
                safe_open(str(ref / f"rank{r}.safetensors"), "pt") as b:
            for name in ("transformer.vocab_embedding.weight", "lm_head.weight"):
                assert torch.equal(q.get_tensor(name), b.get_tensor(name)), name


@pytest.mark.slow
def test_smollm2_gguf_fp8(tmp_path):
    """The real SmolLM2-135M (GGUF, tied embeddings, 9 heads / 3 KV heads): fp8 at tp 3, rotary fields as ours."""
    from test_backend_smollm2 import _gguf

    out, ref = tmp_path / "q", tmp_path / "bf16"
    assert main(["quantize", str(_gguf()), "-o", str(out), "--qformat", "fp8", "--tp", "3", "--calib-dataset",
                 str(SHARED), "--calib-size", "4", "--calib-max-len", "32", "--batch-size", "2"]) == 0
    assert main(["export", str(_gguf()), "-o", str(ref), "--tp", "3"]) == 0
    assert set(_config_diff(out, ref)) == MAY_DIFFER


def _bad(tmp_path: Path, capsys, args: list[str], match: str, code: int = 2) -> str:
    out = tmp_path / "out"
    assert main(["quantize", *args, "-o", str(out)]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("trt-minitron: error: ") and match in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not out.exists() and _leftovers(tmp_path) == []
    return err


def test_bad_input_is_one_line_and_leaves_nothing(models, tmp_path, capsys):
    src = str(models["llama"])
    _bad(tmp_path, capsys, [src, "--qformat", "int3", *CALIB], "unknown --qformat 'int3'; choose one of fp8")
    (tmp_path / "texts.jsonl").write_text('{"text": "no article here"}\n')
    _bad(tmp_path, capsys, [src, "--qformat", "fp8", "--calib-dataset", str(tmp_path / "texts.jsonl")],
         "record 0 lacks string field(s) ['article', 'highlights']")
    _bad(tmp_path, capsys, [src, "--qformat", "fp8", "--calib-dataset", str(tmp_path / "none.jsonl")],
         "does not exist")
    _bad(tmp_path, capsys, [src, "--qformat", "fp8", "--tp", "3", *CALIB],
         "num_attention_heads=4 is not divisible by tp_size=3")
    _bad(tmp_path, capsys, [src, "--qformat", "int4_awq", "--tp", "4", *CALIB],
         "groups of 128 input channels: hidden_size=256 split over tp=4 is not a multiple of 128 "
         "(--group-size 64 fits)")
    _bad(tmp_path, capsys, [src, "--qformat", "fp8", "--group-size", "64", *CALIB],
         "--group-size applies to int4_awq and w4a8_awq, not fp8")
    _bad(tmp_path, capsys, [src, "--qformat", "fp8", "--dtype", "float32", *CALIB], "choose bfloat16 or float16")
    _bad(tmp_path, capsys, [src, "--qformat", "fp8", "--format", "hf", "--tp", "2", *CALIB], "drop --tp/--pp")
    _bad(tmp_path, capsys, [src, "--qformat", "fp8", "--calib-size", "0", *CALIB[:2]], "--calib-size must be >= 1")
    (tmp_path / "out").mkdir()
    assert main(["quantize", src, "-o", str(tmp_path / "out"), "--qformat", "fp8", *CALIB]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    (tmp_path / "out").rmdir()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_nvfp4_without_cuda_is_refused(models, tmp_path, capsys):
    _bad(tmp_path, capsys, [str(models["llama"]), "--qformat", "nvfp4", *CALIB],
         "--qformat nvfp4 needs a CUDA GPU: ModelOpt's nvfp4 fake-quant forward")
    _bad(tmp_path, capsys, [str(models["llama"]), "--qformat", "fp8", "--device", "cuda", *CALIB],
         "--device cuda: torch sees no CUDA GPU")


def test_missing_modelopt_names_the_extra(models, tmp_path, capsys, monkeypatch):
    for name in ("modelopt", "modelopt.torch", "modelopt.torch.quantization"):
        monkeypatch.setitem(sys.modules, name, None)  # `import modelopt...` now raises ImportError
    err = _bad(tmp_path, capsys, [str(models["llama"]), "--qformat", "fp8", *CALIB],
               "quantize needs NVIDIA ModelOpt, which cannot be imported (")
    assert err.endswith("pip install 'trt-minitron[quant]'")


def test_every_other_command_works_without_modelopt(tmp_path):
    """A fresh interpreter where `import modelopt` fails: the CLI loads, export runs, quantize says what to install."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'modelopt' or name.startswith('modelopt.'):\n"
        "            raise ImportError('blocked: ' + name, name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import trt_minitron, trt_minitron.cli\n"
        "from trt_minitron.cli import main\n"
        "from trt_minitron.checkpoints.quantized import QuantSpec\n"  # reading quantized checkpoints needs no ModelOpt
        "import tiny\n"
        f"src = tiny.make_tiny_llama(__import__('pathlib').Path({str(tmp_path / 'src')!r}))\n"
        f"assert main(['export', str(src), '-o', {str(tmp_path / 'ckpt')!r}]) == 0\n"
        f"assert main(['quantize', str(src), '-o', {str(tmp_path / 'q')!r}, '--qformat', 'fp8']) == 2\n"
        "assert not any(m == 'modelopt' or m.startswith('modelopt.') for m in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).parent, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "quantize needs NVIDIA ModelOpt" in r.stderr and "pip install 'trt-minitron[quant]'" in r.stderr


def test_overwrite_replaces_an_earlier_quantized_checkpoint_but_not_a_foreign_folder(models, tmp_path, capsys):
    src, out = str(models["llama"]), tmp_path / "q"
    args = ["quantize", src, "-o", str(out), "--qformat", "fp8", *CALIB]
    assert main(args) == 0
    first = (out / "rank0.safetensors").stat().st_mtime_ns
    assert main([*args, "--overwrite"]) == 0  # our own output (it carries the export marker) may be replaced
    assert (out / "rank0.safetensors").stat().st_mtime_ns != first and _leftovers(tmp_path) == []
    (out / "notes.txt").write_text("the user's")
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").is_file()
    assert main(["quantize", src, "-o", src, "--qformat", "fp8", "--overwrite", *CALIB]) == 2
    assert "it is the source" in capsys.readouterr().err and (models["llama"] / "config.json").is_file()

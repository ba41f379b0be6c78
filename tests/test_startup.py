"""The CLI starts without torch: `--help` of the tool and of every command imports no heavy library (the
implementations are imported inside each command), and the options classes hold every flag's default."""

import dataclasses
import json
import subprocess
import sys

import pytest

from trt_minitron.cli import COMMANDS

HEAVY = ("torch", "numpy", "transformers", "safetensors", "tensorrt_llm")


def modules_after(argv: list[str]) -> list[str]:
    code = ("import json, sys\nfrom trt_minitron.cli import main\nrc = main(%r)\n"
            "print(json.dumps([rc, sorted(m for m in %r if m in sys.modules)]), file=sys.stderr)") % (argv, HEAVY)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, loaded = json.loads(run.stderr.strip().splitlines()[-1])
    assert rc == 0 and "Usage" in run.stdout, run.stdout + run.stderr
    return loaded


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in COMMANDS)], ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_library(argv):
    assert modules_after(argv) == []


def test_options_module_is_torch_free():
    code = "import sys, trt_minitron.options, trt_minitron.commands.export; print(sorted(m for m in %r if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code % (HEAVY,)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_export_flags_default_to_the_options_class():
    from typer.main import get_command

    from trt_minitron.cli import app
    from trt_minitron.options import ExportOptions

    export = get_command(app).commands["export"]
    defaults = {p.name: p.default for p in export.params}
    for f in dataclasses.fields(ExportOptions):
        if f.name in defaults and f.default is not dataclasses.MISSING:
            assert defaults[f.name] == f.default, f.name


def test_build_dry_run_plans_from_headers_without_torch(tmp_path):
    from test_build import TINY, write_checkpoint

    ckpt = write_checkpoint(tmp_path / "ckpt", TINY)  # config.json + real rank files
    code = ("import json, sys\nfrom trt_minitron.cli import main\n"
            "rc = main(['build', %r, '--dry-run', '--gpu-memory', '80'])\n"
            "print(json.dumps([rc, sorted(m for m in %r if m in sys.modules)]), file=sys.stderr)") % (str(ckpt), HEAVY)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, loaded = json.loads(run.stderr.strip().splitlines()[-1])
    plan = json.loads(run.stdout)
    assert rc == 0 and loaded == [] and plan["plan"]["weight_bytes_source"] == "rank files"
    assert plan["plan"]["weight_bytes_per_rank"] > 0


# GQA, head_dim != hidden/heads, a vocab tp 2 pads with a zero row, o_proj columns narrower than an iovec
# (gathered by plain slices without torch) and down_proj columns wider (gathered by pwritev).
BYTE_MOVER = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 1280,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
              "hidden_act": "silu", "rms_norm_eps": 1e-5, "vocab_size": 251, "max_position_embeddings": 256,
              "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "torch_dtype": "bfloat16"}


def export_in_child(src, out, dtype: str, tp: int, torch_first: bool) -> list[str]:
    """Run `export` in a fresh interpreter (torch imported first or not); the heavy modules loaded at the end."""
    argv = ["export", str(src), "-o", str(out), "--dtype", dtype, "--tp", str(tp)]
    code = ("import json, sys\n" + ("import torch\n" if torch_first else "") + "from trt_minitron.cli import main\n"
            "rc = main(%r)\nprint(json.dumps([rc, sorted(m for m in %r if m in sys.modules)]), file=sys.stderr)"
            ) % (argv, HEAVY)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    rc, loaded = json.loads(run.stderr.strip().splitlines()[-1])
    assert rc == 0, run.stderr
    return loaded


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory):
    from synthetic import write_synthetic_hf

    return write_synthetic_hf(tmp_path_factory.mktemp("src") / "llama", BYTE_MOVER)


@pytest.mark.parametrize("tp", [1, 2])
def test_export_that_only_moves_bytes_imports_no_torch(bf16_llama, tmp_path, tp):
    # numpy checks the bytes for NaN/Inf as they pass (finite.py)
    assert export_in_child(bf16_llama, tmp_path / "lean", "bfloat16", tp, torch_first=False) == ["numpy"]
    assert "torch" in export_in_child(bf16_llama, tmp_path / "torch", "bfloat16", tp, torch_first=True)
    names = sorted(p.name for p in (tmp_path / "torch").iterdir())
    assert {"config.json", *(f"rank{r}.safetensors" for r in range(tp))} <= set(names)
    assert names == sorted(p.name for p in (tmp_path / "lean").iterdir())
    for name in names:
        assert (tmp_path / "lean" / name).read_bytes() == (tmp_path / "torch" / name).read_bytes(), name


def test_export_that_casts_imports_torch_and_matches_the_byte_mover(bf16_llama, tmp_path):
    from safetensors.torch import load_file

    assert export_in_child(bf16_llama, tmp_path / "bf16", "bfloat16", 2, torch_first=False) == ["numpy"]
    assert "torch" in export_in_child(bf16_llama, tmp_path / "f32", "float32", 2, torch_first=False)
    for r in range(2):
        moved = load_file(tmp_path / "bf16" / f"rank{r}.safetensors")
        cast = load_file(tmp_path / "f32" / f"rank{r}.safetensors")
        assert moved.keys() == cast.keys()
        for name, t in cast.items():  # bf16 -> f32 is exact: casting back must give the moved bytes
            assert t.dtype == torch_float32() and t.to(moved[name].dtype).equal(moved[name]), name
    assert moved["lm_head.weight"][-1].count_nonzero() == 0  # vocab 251 at tp 2: rank 1 ends with a zero row


def torch_float32():
    import torch

    return torch.float32

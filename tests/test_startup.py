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

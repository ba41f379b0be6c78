"""SIGTERM / SIGINT sent to a real `trt-minitron export` process mid-write: one line, exit 143 / 130, no
temporary folder next to the output, nothing left in $TMPDIR, an earlier output untouched.

The child slows each tensor write (or each archive member) down a little so that the signal lands
while data is being written, not before or after.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_checks import names, tree_digest
from nemo_fixtures import build_nemo
from tiny import make_tiny_llama

CHILD = r"""
import sys, tarfile, time
import trt_minitron.export.run as ex, trt_minitron.export.hf_writer as hw

def slow_progress(write):
    def wrapper(source, files, on_progress=None, **kw):
        step = lambda nbytes, tensors: (time.sleep(0.05), on_progress and on_progress(nbytes, tensors))
        return write(source, files, on_progress=step, **kw)
    return wrapper

ex.write_rank_files = slow_progress(ex.write_rank_files)
hw.write_rank_files = slow_progress(hw.write_rank_files)
extract = tarfile.TarFile._extract_member
tarfile.TarFile._extract_member = lambda self, *a, **k: (time.sleep(0.1), extract(self, *a, **k))[1]
from trt_minitron.cli import main
sys.exit(main(sys.argv[1:]))
"""
EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sig-src")
    hf = make_tiny_llama(root / "llama")
    return {"hf": hf, "nemo_gz": build_nemo(hf, root / "llama.nemo", "zarr", archive="tar.gz")}


def _start(args, env_tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(env_tmp)}
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"the export ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _partial_rank_file(parent: Path, name: str):
    def cond():
        for tmp in parent.glob(f".{name}.tmp-*"):
            f = tmp / "rank0.safetensors"
            if f.is_file() and f.stat().st_size > 4096:  # the header and some tensors are on disk
                return True
            f = tmp / "model.safetensors"
            if f.is_file() and f.stat().st_size > 4096:
                return True
        return False

    return cond


def _finish(proc: subprocess.Popen, sig: int) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT[sig], err
    assert err.strip().splitlines() == [f"trt-minitron: interrupted by {signal.Signals(sig).name}; "
                                        "temporary files removed"], err
    return err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("fmt", ["trtllm", "hf"])
def test_signal_mid_write_leaves_nothing(sources, tmp_path, sig, fmt):
    out_parent, tmpdir = tmp_path / "out", tmp_path / "tmpdir"
    out_parent.mkdir()
    tmpdir.mkdir()
    before = tree_digest(sources["hf"])
    proc = _start(["export", sources["hf"], "--output", out_parent / "ckpt", "--format", fmt, "--dtype", "float32"],
                  tmpdir)
    _wait_for(_partial_rank_file(out_parent, "ckpt"), proc, "tensors were being written")
    _finish(proc, sig)
    assert names(out_parent) == [] and names(tmpdir) == []
    assert tree_digest(sources["hf"]) == before


def test_sigterm_during_overwrite_keeps_the_previous_export(sources, tmp_path):
    from trt_minitron.export.run import ExportOptions, run_export

    out = tmp_path / "ckpt"
    run_export(ExportOptions(src=str(sources["hf"]), output=out, dtype="float32"))
    before = tree_digest(out)
    proc = _start(["export", sources["hf"], "--output", out, "--overwrite", "--tp", "2", "--dtype", "float32"],
                  tmp_path)
    _wait_for(_partial_rank_file(tmp_path, "ckpt"), proc, "tensors were being written")
    _finish(proc, signal.SIGTERM)
    assert tree_digest(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_unpacking_a_gzipped_nemo_cleans_tmpdir(sources, tmp_path, sig):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = _start(["export", sources["nemo_gz"], "--output", tmp_path / "ckpt"], tmpdir)
    _wait_for(lambda: any(p.is_file() for p in tmpdir.rglob("*")), proc, "members were being unpacked")
    _finish(proc, sig)
    assert names(tmpdir) == [] and names(tmp_path) == ["tmpdir"]


def test_sigterm_while_writing_from_a_gzipped_nemo_cleans_both(sources, tmp_path):
    tmpdir, out_parent = tmp_path / "tmpdir", tmp_path / "out"
    tmpdir.mkdir()
    out_parent.mkdir()
    proc = _start(["export", sources["nemo_gz"], "--output", out_parent / "ckpt", "--dtype", "float32"], tmpdir)
    _wait_for(_partial_rank_file(out_parent, "ckpt"), proc, "tensors were being written")
    assert names(tmpdir)  # the unpacked members are still in use
    _finish(proc, signal.SIGTERM)
    assert names(tmpdir) == [] and names(out_parent) == []

"""Output safety: never write onto the source, replace only folders trt-minitron wrote, leave nothing half done.

Every refusal: exit 2, one line, no traceback, the source and the existing output byte-identical,
and no temporary sibling left next to the output.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import can_unshare_mount, names, tree_digest, user_error
from tiny import make_tiny_llama

from trt_minitron import outputs
from trt_minitron.cli import main
from trt_minitron.export.run import ExportOptions, run_export
from trt_minitron.outputs import ENGINE_MANIFEST, MARKER, atomic_output_dir, check_output


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("src") / "llama")


@pytest.fixture
def src(llama, tmp_path):
    """A private copy of the tiny model inside tmp_path, so that its parent can be targeted."""
    dst = tmp_path / "models" / "llama"
    shutil.copytree(llama, dst)
    return dst


def export(src, out, **kw):
    return run_export(ExportOptions(src=str(src), output=Path(out), **{"dtype": "float32", **kw}))


@pytest.mark.parametrize("where, expect", [
    ("source", "it is the source"),
    ("parent", "it contains the source"),
    ("inside", "it lies inside the source"),
])
def test_output_on_the_source_is_refused_even_with_overwrite(src, tmp_path, capsys, where, expect):
    out = {"source": src, "parent": src.parent, "inside": src / "ckpt"}[where]
    before, around = tree_digest(tmp_path), names(tmp_path)
    msg = user_error(capsys, "export", src, "--output", out, "--overwrite")
    assert msg.startswith(f"refusing --output {out}: {expect}"), msg
    assert tree_digest(tmp_path) == before and names(tmp_path) == around


def test_output_through_a_symlink_to_the_source_is_refused(src, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(src)
    before = tree_digest(src)
    assert "it is the source" in user_error(capsys, "export", src, "--output", link, "--overwrite")
    assert tree_digest(src) == before and link.is_symlink()


def test_output_equal_to_a_source_file_is_refused(tmp_path, capsys):
    from nemo_fixtures import build_nemo

    nemo = build_nemo(make_tiny_llama(tmp_path / "hf"), tmp_path / "m.nemo", "zarr")
    before = tree_digest(nemo)
    assert "it is the source" in user_error(capsys, "export", nemo, "--output", nemo, "--overwrite")
    assert tree_digest(nemo) == before


@pytest.mark.parametrize("target", [".", ".."])
def test_output_that_is_or_contains_the_current_folder_is_refused(src, tmp_path, capsys, monkeypatch, target):
    cwd = tmp_path / "work" / "here"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    msg = user_error(capsys, "export", src, "--output", target, "--overwrite")
    assert msg.startswith(f"refusing --output {target}: it is (or contains) the current folder"), msg
    assert names(cwd) == [] and names(cwd.parent) == ["here"]


def test_overwrite_refuses_an_unrelated_folder(src, tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    (out / "config.json").write_text('{"camera": "x"}')  # a config.json alone does not make it ours
    before = tree_digest(out)
    msg = user_error(capsys, "export", src, "--output", out, "--overwrite")
    assert "is not empty and is not a folder trt-minitron wrote" in msg and "remove it yourself" in msg
    assert tree_digest(out) == before and names(tmp_path) == ["models", "photos"]


def test_overwrite_refuses_our_export_with_a_user_file_added(src, tmp_path, capsys):
    out = tmp_path / "ckpt"
    export(src, out)
    (out / "notes.txt").write_text("my results")
    (out / "runs").mkdir()
    before = tree_digest(out)
    msg = user_error(capsys, "export", src, "--output", out, "--overwrite")
    assert "is a trt-minitron trtllm export but also holds notes.txt, runs/" in msg, msg
    assert tree_digest(out) == before and names(tmp_path) == ["ckpt", "models"]


def test_overwrite_refuses_a_file_and_leaves_no_old_sibling(src, tmp_path, capsys):
    out = tmp_path / "result.bin"
    out.write_bytes(b"precious")
    msg = user_error(capsys, "export", src, "--output", out, "--overwrite")
    assert msg.startswith(f"{out} is a file, not a folder trt-minitron wrote"), msg
    assert out.read_bytes() == b"precious" and names(tmp_path) == ["models", "result.bin"]


def test_existing_output_without_overwrite_is_refused(src, tmp_path, capsys):
    out = tmp_path / "ckpt"
    export(src, out)
    before = tree_digest(out)
    assert user_error(capsys, "export", src, "--output", out) == \
        f"{out} exists; pass --overwrite to replace it, or choose another --output"
    assert tree_digest(out) == before


def test_symlinked_output_is_refused(src, tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real)
    assert "is a symbolic link" in user_error(capsys, "export", src, "--output", tmp_path / "out", "--overwrite")
    assert names(real) == []


def _engine_folder(path: Path) -> Path:
    path.mkdir()
    (path / ENGINE_MANIFEST).write_text("{}")
    (path / "config.json").write_text('{"pretrained_config": {}, "build_config": {}}')
    (path / "rank0.engine").write_bytes(b"engine")
    (path / "tokenizer.json").write_text("{}")
    return path


@pytest.mark.parametrize("kind", ["empty", "trtllm_export", "hf_export", "unmarked_trtllm_checkpoint", "engine"])
def test_overwrite_replaces_folders_we_wrote(src, tmp_path, kind):
    out = tmp_path / "out"
    if kind == "empty":
        out.mkdir()
    elif kind == "trtllm_export":
        export(src, out, tp=2)
    elif kind == "hf_export":
        export(src, out, format="hf")
    elif kind == "unmarked_trtllm_checkpoint":  # older exports, or TensorRT-LLM's own convert_checkpoint
        export(src, out)
        (out / MARKER).unlink()
    else:
        _engine_folder(out)
    src_before = tree_digest(src)
    export(src, out, tp=1, overwrite=True)
    assert sorted(p.name for p in out.glob("rank*")) == ["rank0.safetensors"]
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "trtllm" and sorted(marker["files"]) == names(out)
    assert names(tmp_path) == ["models", "out"]  # no .out.tmp-PID / .out.old-PID
    assert tree_digest(src) == src_before


def test_hf_export_is_marked_and_recognised(src, tmp_path):
    out = tmp_path / "hf"
    export(src, out, format="hf")
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "hf" and "model.safetensors" in marker["files"] and "config.json" in marker["files"]
    assert outputs.recognise(out)[0] == "trt-minitron hf export"


def test_stale_siblings_of_dead_processes_are_swept(src, tmp_path):
    out = tmp_path / "ckpt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    for name in (f".ckpt.tmp-{dead}", f".ckpt.old-{dead}", f".ckpt.partial-{dead}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rank0.safetensors").write_bytes(b"x" * 1000)
    alive = tmp_path / f".ckpt.tmp-{os.getppid()}"  # a live process may still be writing it
    alive.mkdir()
    (tmp_path / f".other.tmp-{dead}").mkdir()  # another output's: not this run's business
    export(src, out)
    assert names(tmp_path) == [f".ckpt.tmp-{os.getppid()}", f".other.tmp-{dead}", "ckpt", "models"]


def test_a_failing_write_leaves_nothing_and_keeps_the_old_output(src, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ckpt"
    export(src, out)
    before = tree_digest(out)

    def broken(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("trt_minitron.export.run.write_rank_files", broken)
    msg = user_error(capsys, "export", src, "--output", out, "--overwrite", "--dtype", "float32")
    assert msg.startswith(f"no space left while writing {out}"), msg
    assert tree_digest(out) == before and names(tmp_path) == ["ckpt", "models"]


def test_not_enough_free_space_is_refused_before_writing(src, tmp_path, monkeypatch, capsys):
    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda _p: Usage)
    msg = user_error(capsys, "export", src, "--output", tmp_path / "ckpt", "--dtype", "float32")
    assert msg.startswith(f"not enough free space for {tmp_path / 'ckpt'}: it needs ")
    assert msg.endswith(f"{tmp_path} has 0.0 MB free"), msg
    assert names(tmp_path) == ["models"]


def test_read_only_output_parent_is_one_line(src, tmp_path, monkeypatch, capsys):
    real_mkdir = Path.mkdir

    def read_only(self, *a, **k):
        if self.is_relative_to(tmp_path / "ro"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    msg = user_error(capsys, "export", src, "--output", tmp_path / "ro" / "ckpt")
    assert msg.startswith(f"cannot write {tmp_path / 'ro' / 'ckpt'}: Read-only file system"), msg


needs_mount = pytest.mark.skipif(not can_unshare_mount(), reason="needs `unshare -rm` to mount a private tmpfs")


def _in_private_mount(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)


@needs_mount
@pytest.mark.parametrize("mount, expect", [
    ("size=64k", "not enough free space for"),
    ("ro", "Read-only file system"),
])
def test_real_full_or_read_only_disk_is_one_line(src, tmp_path, mount, expect):
    disk = tmp_path / "disk"
    disk.mkdir()
    r = _in_private_mount(f"mount -t tmpfs -o {mount} tmpfs '{disk}' && exec '{sys.executable}' -m trt_minitron "
                          f"export '{src}' --output '{disk}/ckpt' --dtype float32")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and expect in r.stderr and "Traceback" not in r.stderr
    assert names(disk) == []


def test_atomic_output_dir_is_usable_by_other_commands(tmp_path):
    """The contract build uses: an engine folder (manifest) is replaced, the tmp folder is gone."""
    engine = _engine_folder(tmp_path / "engine")
    with atomic_output_dir(engine, overwrite=True, protect=[tmp_path / "ckpt"]) as tmp:
        assert tmp.parent == tmp_path and tmp.name == f".engine.tmp-{os.getpid()}"
        (tmp / "rank0.engine").write_bytes(b"new")
        (tmp / ENGINE_MANIFEST).write_text("{}")
    assert (engine / "rank0.engine").read_bytes() == b"new" and names(tmp_path) == ["engine"]
    with pytest.raises(RuntimeError), atomic_output_dir(engine, overwrite=True) as tmp:
        (tmp / "rank0.engine").write_bytes(b"half")
        raise RuntimeError("build failed")
    assert (engine / "rank0.engine").read_bytes() == b"new" and names(tmp_path) == ["engine"]
    with pytest.raises(Exception, match="it lies inside the source"):
        check_output(tmp_path / "ckpt" / "engine", overwrite=False, protect=[tmp_path / "ckpt"])


def test_cli_overwrite_of_previous_export_keeps_exit_zero(src, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["export", str(src), "--output", str(out), "--dtype", "float32"]) == 0
    assert main(["export", str(src), "--output", str(out), "--dtype", "float32", "--overwrite"]) == 0
    assert names(tmp_path) == ["ckpt", "models"]

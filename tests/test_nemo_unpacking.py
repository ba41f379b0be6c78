""".nemo unpacking is bounded: only the members a reader needs are written, their declared sizes are
checked against free space first, and a full $TMPDIR is reported as a full disk, not as a corrupt tar."""

import errno
import os
import subprocess
import sys
import tarfile

import pytest
from cli_checks import can_unshare_mount, names, tree_digest, user_error
from nemo_fixtures import build_nemo
from tiny import make_tiny_llama

from trt_minitron.sources.nemo import archive
from trt_minitron.sources.nemo.archive import ExtractedContainer, open_container

JUNK = 64 << 20  # compresses to ~64 KB


class _Zeros:
    def __init__(self, n):
        self.left = n

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


@pytest.fixture(scope="module")
def nemos(tmp_path_factory):
    root = tmp_path_factory.mktemp("nemo")
    hf = make_tiny_llama(root / "hf")
    plain = build_nemo(hf, root / "plain.nemo", "zarr")
    bomb = root / "bomb.nemo"
    with tarfile.open(plain, "r:") as src, tarfile.open(bomb, "w:gz", compresslevel=1) as out:
        for m in src:
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
        junk = tarfile.TarInfo("./junk/padding.bin")
        junk.size = JUNK
        out.addfile(junk, _Zeros(JUNK))
    return {"hf": hf, "plain": plain, "bomb": bomb,
            "gz": build_nemo(hf, root / "small.nemo", "zarr", archive="tar.gz"),
            "legacy": build_nemo(hf, root / "legacy.nemo", "ckpt")}


def _tmpdir(monkeypatch, path):
    path.mkdir(exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    return path


def test_small_gzipped_nemo_with_a_huge_junk_member_is_not_unpacked_whole(nemos, tmp_path, monkeypatch):
    assert nemos["bomb"].stat().st_size < 2 << 20
    tmp = _tmpdir(monkeypatch, tmp_path / "tmp")
    c = open_container(nemos["bomb"])
    try:
        assert isinstance(c, ExtractedContainer) and "junk/padding.bin" in c.names()
        unpacked = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        assert 0 < unpacked < 1 << 20 and not list(tmp.rglob("padding.bin"))
        with pytest.raises(Exception, match="was not unpacked: it is not a file a .nemo reader needs"):
            c.read_bytes("junk/padding.bin")
    finally:
        c.close()
    assert names(tmp) == []


def test_junk_member_does_not_stop_the_export(nemos, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from trt_minitron.export.run import ExportOptions, run_export

    tmp = _tmpdir(monkeypatch, tmp_path / "tmp")
    run_export(ExportOptions(src=str(nemos["bomb"]), output=tmp_path / "a", dtype="float32"))
    run_export(ExportOptions(src=str(nemos["plain"]), output=tmp_path / "b", dtype="float32"))
    a, b = load_file(tmp_path / "a" / "rank0.safetensors"), load_file(tmp_path / "b" / "rank0.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert names(tmp) == []


def _tiny_disk(monkeypatch, free):
    class Usage:
        total, used = 10**12, 10**12 - free

    Usage.free = free
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda _p: Usage)


@pytest.mark.parametrize("which, what", [
    ("gz", "unpacking the gzipped"),
    ("legacy", "copying model_weights.ckpt out of"),
])
def test_not_enough_temp_space_is_refused_before_writing(nemos, tmp_path, monkeypatch, capsys, which, what):
    tmp = _tmpdir(monkeypatch, tmp_path / "tmp")
    _tiny_disk(monkeypatch, 4096)
    before = tree_digest(nemos[which])
    msg = user_error(capsys, "export", nemos[which], "--output", tmp_path / "out")
    assert what in msg and f"in the temporary folder {tmp}, which has 0.0 MB free; point TMPDIR" in msg, msg
    assert names(tmp) == [] and names(tmp_path) == ["tmp"] and tree_digest(nemos[which]) == before


def test_disk_filling_up_during_unpack_is_a_full_disk_not_a_corrupt_tar(nemos, tmp_path, monkeypatch, capsys):
    tmp = _tmpdir(monkeypatch, tmp_path / "tmp")

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "makefile", full)
    msg = user_error(capsys, "export", nemos["gz"], "--output", tmp_path / "out")
    assert msg == (f"no space left in the temporary folder {tmp} while unpacking {nemos['gz']}; "
                   "point TMPDIR at a larger disk"), msg
    assert "corrupt" not in msg and names(tmp) == [] and names(tmp_path) == ["tmp"]


needs_mount = pytest.mark.skipif(not can_unshare_mount(), reason="needs `unshare -rm` to mount a private tmpfs")


@needs_mount
@pytest.mark.parametrize("size, ok", [("64k", False), ("16m", True)])
def test_real_small_tmpdir(nemos, tmp_path, size, ok):
    """A 16 MB $TMPDIR is enough for the bomb (it holds ~0.2 MB of needed members, not 64 MB of junk);
    64 KB is not, and says so."""
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs '{tmp}' && "
                        f"TMPDIR='{tmp}' exec '{sys.executable}' -m trt_minitron export '{nemos['bomb']}' "
                        f"--output '{out}' --dtype float32"], capture_output=True, text=True, cwd=os.getcwd())
    if ok:
        assert r.returncode == 0, r.stderr
        assert (out / "rank0.safetensors").is_file()
    else:
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "needs" in r.stderr and "point TMPDIR at a larger disk" in r.stderr and "corrupt" not in r.stderr
        assert not out.exists()
    assert names(tmp) == []

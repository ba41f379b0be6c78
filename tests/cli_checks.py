"""Helpers for the tests of bad input: run the CLI, check the one-line contract, fingerprint folders."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from trt_minitron.cli import main

PREFIX = "trt-minitron: error: "


def tree_digest(path: Path) -> str:
    """sha256 over every name, link target and file content under `path` (or of the file itself)."""
    h = hashlib.sha256()
    path = Path(path)
    items = [path] if not path.is_dir() or path.is_symlink() else sorted(path.rglob("*"))
    for p in items:
        h.update(str(p.relative_to(path) if p != path else ".").encode())
        if p.is_symlink():
            h.update(b"->" + os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def user_error(capsys, *args: object, code: int = 2) -> str:
    """Run the CLI in-process; assert exit `code`, exactly one stderr line with the error prefix and no
    traceback; return that line without the prefix."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith(PREFIX), err
    return lines[0][len(PREFIX):]


def names(folder: Path) -> list[str]:
    """Every entry of a folder, hidden ones included."""
    return sorted(p.name for p in Path(folder).iterdir())


def can_unshare_mount() -> bool:
    """Whether this machine lets an unprivileged mount namespace mount a tmpfs (for real full/read-only disks)."""
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d); mount -t tmpfs -o size=64k tmpfs $d; r=$?; "
                        "umount $d 2>/dev/null; rmdir $d; exit $r"],
                       capture_output=True)
    return r.returncode == 0

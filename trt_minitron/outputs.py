"""Outputs written safely: never onto the source, never over something we did not write, never half done.

Folders: `atomic_output_dir` is the one way commands create an output folder: everything is written into a
hidden sibling `.NAME.tmp-PID`, which replaces NAME only when complete. An existing NAME is replaced
(with --overwrite) only when it is empty or recognisably ours: an export carrying `MARKER`, an engine
folder carrying `ENGINE_MANIFEST`, or a TensorRT-LLM checkpoint, holding nothing but the files such a
folder holds. SIGINT/SIGTERM remove the temporary folder (see interrupts.py); siblings left by a
process that died harder (SIGKILL, power loss) are swept by the next run writing the same NAME.

Files (reports, plots, bench's CSV, serve's YAML): `check_output_file` before the run, `write_file` at the end. An
existing file is replaced without --overwrite only when it is recognisably ours (a JSON report whose "tool" names
trt-minitron, a PNG whose Software text does, a text file whose first line is `# written by trt-minitron ...`, a
CSV whose header line starts with bench's columns `CSV_HEAD`); anything else needs --overwrite. Written the same way:
a hidden sibling renamed over NAME, mode 0666 less the umask (0644), as every output file.

Both: missing parent folders are created; `check_writable` makes sure they can be, before the run.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import __version__
from .errors import DiskFullError, OutputError, OutputExistsError
from .interrupts import signals_deferred, signals_raise

MARKER = "trt_minitron_export.json"  # written last into every export (both formats), listing its files
ENGINE_MANIFEST = "trt_minitron_manifest.json"  # written by `build` into every engine folder
TOOL = "trt-minitron"  # JSON reports say {"tool": "trt-minitron <command>", ...}; PNG plots Software "trt-minitron ..."
WRITTEN_BY = f"# written by {TOOL}"  # the first line of a text file we write (YAML)
# The header of bench's --csv begins with these columns (bench/report.py's CSV_COLUMNS); a CSV keeps no comment line.
CSV_HEAD = ("point", "concurrency", "request_rate", "requests", "completed", "failed")
# The one list of tokenizer files: what export copies from a source, build into an engine folder, and what
# makes a folder hold a tokenizer (the first seven: a tokenizer without the chat template and generation config).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
                   "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json")
TOKENIZER_CORE = TOKENIZER_FILES[:7]
TOKENIZER_NAMES = frozenset(TOKENIZER_FILES)
_CHECKPOINT_FILE = re.compile(r"^rank\d+\.safetensors$")
_ENGINE_FILE = re.compile(r"^rank\d+(\.engine|_[\w.-]+)$")
_MAX_CONFIG_BYTES = 16 << 20
_ACTIVE: set[Path] = set()  # temporary folders this process is writing right now

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)


def absolute(path: str | os.PathLike) -> Path:
    """An absolute path with `.`/`..` folded but symlinks kept (the name the user gave)."""
    return Path(os.path.abspath(path))


def nearest_existing(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists: where creating it would start."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(output: str | os.PathLike, *, overwrite: bool, protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Raise OutputError unless `output` may be created (or, with overwrite, replaced); return it absolute.

    `protect`: paths that must survive (the source checkpoint): the output may not be one of them,
    contain one, or lie inside one.
    """
    out = absolute(output)
    real = out.resolve()
    if real.parent == real:
        raise OutputError(f"refusing --output {output}: it is a filesystem root")
    for p in protect:
        src = Path(p).resolve()
        if real == src:
            raise OutputError(f"refusing --output {output}: it is the source {p}")
        if src.is_relative_to(real):
            raise OutputError(f"refusing --output {output}: it contains the source {p}")
        if real.is_relative_to(src):
            raise OutputError(f"refusing --output {output}: it lies inside the source {p}")
    cwd = Path.cwd().resolve()
    if cwd.is_relative_to(real):
        raise OutputError(f"refusing --output {output}: it is (or contains) the current folder {cwd}; "
                          "name a new folder instead")
    if out.is_symlink():
        raise OutputError(f"refusing --output {output}: it is a symbolic link; name the folder itself or a new one")
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{output} exists; pass --overwrite to replace it, or choose another --output")
        check_replaceable(out)
    check_writable(out, f"--output {output}")
    return out


def check_writable(path: Path, label: str) -> None:
    """Raise OutputError unless `path` (or the folders leading to it) can be created: its nearest existing ancestor
    must be a folder this process may create files in. Probed with an unnamed temporary file, so the reason is the
    system's own (read-only file system, permission denied) and nothing is left behind."""
    ancestor = nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise OutputError(f"{label} cannot be written: {ancestor} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise OutputError(f"{label} cannot be written: {e.strerror or e} ({ancestor})") from None


def check_output_file(path: str | os.PathLike, *, flag: str, overwrite: bool, example: str) -> Path:
    """Raise OutputError unless the file `path` (given with `flag`) may be written at the end of the run: not a
    folder or a symbolic link (as for folders: replacing the link would not write where it points); an existing
    file only when recognisably ours or with --overwrite; its folder creatable. `example`: a file name to suggest
    when `path` is a folder."""
    p = Path(path)
    if p.is_symlink():
        raise OutputError(f"{flag} {path} is a symbolic link; name the file itself or a new one")
    if p.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file path such as {p / example}")
    if p.exists() and not overwrite and not is_ours(p):
        raise OutputExistsError(f"{flag} {path} exists and is not a file trt-minitron wrote; pass --overwrite to "
                                "replace it, or choose another path")
    check_writable(absolute(p), f"{flag} {path}")
    return p


def is_ours(path: Path) -> bool:
    """Whether an existing file is one trt-minitron wrote: a JSON report whose "tool" is trt-minitron's, a PNG
    whose Software text is, a text file whose first line is WRITTEN_BY ..., a CSV whose header starts with CSV_HEAD
    (a symbolic link never is: it is the user's)."""
    if path.is_symlink() or not path.is_file():
        return False
    if path.suffix.lower() == ".png":
        return (_png_software(path) or "").startswith(TOOL)
    doc = _small_json(path)
    if isinstance(doc, dict):
        return str(doc.get("tool", "")).startswith(TOOL)
    try:
        with open(path, "rb") as f:
            first = f.readline(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return first.startswith(WRITTEN_BY + " ") or tuple(first.rstrip("\r\n").split(",")[:len(CSV_HEAD)]) == CSV_HEAD


def write_file(path: str | os.PathLike, data: bytes, *, overwrite: bool) -> None:
    """Write `data` to `path` atomically: a hidden sibling `.NAME.tmp-PID`, renamed over NAME when complete
    (missing parent folders are created). An existing NAME that is not ours is replaced only with `overwrite`
    (checked again here: it may have appeared during the run). Errors are one-line OutputError/DiskFullError."""
    out = absolute(path)
    with signals_raise(), write_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(out)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        _remove(tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with open(fd, "wb") as f:
                f.write(data)
            with signals_deferred():
                if out.is_symlink() or (out.exists() and not overwrite and not is_ours(out)):
                    raise OutputExistsError(f"{path} appeared while the run went on and is not a file trt-minitron "
                                            "wrote; not replacing it")
                os.replace(tmp, out)
        finally:
            _remove(tmp)


def check_replaceable(out: Path) -> None:
    """Raise OutputError unless the existing `out` is an empty folder or one trt-minitron wrote, and nothing more."""
    if not out.is_dir():
        raise OutputError(f"{out} is a file, not a folder trt-minitron wrote; --overwrite replaces only those: "
                          "remove it yourself or choose another --output")
    try:
        entries = list(out.iterdir())
    except OSError as e:
        raise OutputError(f"cannot look inside {out} to see whether it may be replaced: {e.strerror}") from None
    if not entries:
        return
    kind, allowed = recognise(out)
    if kind is None:
        raise OutputError(f"{out} is not empty and is not a folder trt-minitron wrote (no {MARKER}, "
                          f"{ENGINE_MANIFEST} or TensorRT-LLM checkpoint config.json); --overwrite replaces only "
                          "those: remove it yourself or choose another --output")
    extra = sorted(e.name + ("/" if e.is_dir() else "") for e in entries
                   if e.is_symlink() or not e.is_file() or not allowed(e.name))
    if extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise OutputError(f"{out} is a {kind} but also holds {', '.join(extra[:5])}{more}, which trt-minitron did "
                          "not write; --overwrite will not delete them: move them away or remove the folder yourself")


def recognise(folder: Path) -> tuple[str | None, Callable[[str], bool]]:
    """What kind of trt-minitron/TensorRT-LLM folder this is, and which file names such a folder holds."""
    marker = _small_json(folder / MARKER)
    if isinstance(marker, dict) and isinstance(marker.get("files"), list):
        files = {f for f in marker["files"] if isinstance(f, str)} | {MARKER}
        return f"trt-minitron {marker.get('format', '')} export".replace("  ", " "), files.__contains__
    if (folder / ENGINE_MANIFEST).is_file():
        return "trt-minitron engine folder", lambda n: (n in ("config.json", ENGINE_MANIFEST)
                                                        or n in TOKENIZER_NAMES or bool(_ENGINE_FILE.match(n)))
    cfg = _small_json(folder / "config.json")
    if isinstance(cfg, dict) and isinstance(cfg.get("architecture"), str) and isinstance(cfg.get("mapping"), dict):
        return "TensorRT-LLM checkpoint", lambda n: (n == "config.json" or n in TOKENIZER_NAMES
                                                     or bool(_CHECKPOINT_FILE.match(n)))
    return None, lambda _n: False


def write_marker(folder: Path, **info) -> None:
    """Mark `folder` as a trt-minitron export: MARKER lists every file in it, so --overwrite can recognise it."""
    files = sorted({p.name for p in folder.iterdir()} | {MARKER})
    doc = {"written_by": f"trt-minitron {__version__}", **info, "files": files}
    (folder / MARKER).write_text(json.dumps(doc, indent=2) + "\n")


def sweep_stale(out: Path) -> list[Path]:
    """Remove `.NAME.{tmp,old,partial,work}-PID` siblings whose process is gone."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(?:tmp|old|partial|work)-(\d+)$")
    removed = []
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        m = pattern.match(p.name)
        if m and p not in _ACTIVE and not _alive(int(m.group(1))):
            _remove(p)
            removed.append(p)
    return removed


def check_free_space(out: Path, need_bytes: int) -> None:
    """Raise DiskFullError when the filesystem that will hold `out` has less than `need_bytes` free."""
    if need_bytes <= 0:
        return
    free = shutil.disk_usage(out.parent).free
    if free < need_bytes:
        raise DiskFullError(f"not enough free space for {out}: it needs {human_bytes(need_bytes)}, "
                            f"{out.parent} has {human_bytes(free)} free")


@contextmanager
def atomic_output_dir(output: str | os.PathLike, *, overwrite: bool, protect: Iterable[str | os.PathLike] = (),
                      need_bytes: int = 0) -> Iterator[Path]:
    """Yield an empty temporary folder next to `output`; on normal exit it becomes `output`.

    Checks first (check_output, free space for `need_bytes`). On any exception, SIGINT or SIGTERM the
    temporary folder is removed and `output` is left as it was. Write errors (disk full, read-only,
    permission denied) become one-line OutputError/DiskFullError.
    """
    protect = list(protect)
    out = check_output(output, overwrite=overwrite, protect=protect)
    with signals_raise(), write_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(out)
        check_free_space(out, need_bytes)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        _remove(tmp)
        tmp.mkdir()
        _ACTIVE.add(tmp)
        try:
            yield tmp
            _commit(tmp, out, overwrite)
        finally:
            _ACTIVE.discard(tmp)
            _remove(tmp)


@contextmanager
def write_errors(out: Path) -> Iterator[None]:
    """OSErrors from writing `out` (or its temporary sibling) as one-line user errors; others pass through."""
    try:
        yield
    except OSError as e:
        if e.errno in _FULL:
            raise DiskFullError(f"no space left while writing {out} ({e.strerror}); free some space on "
                                f"{out.parent} or choose another --output") from None
        if e.errno in _DENIED and _concerns(e, out):
            where = e.filename if e.filename is not None else out.parent
            raise OutputError(f"cannot write {out}: {e.strerror} ({where})") from None
        raise


def human_bytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _concerns(e: OSError, out: Path) -> bool:
    """Whether an OSError is about the output side: no file named, or a path at/under/above the output."""
    if e.filename is None:
        return True
    p = absolute(e.filename)
    return p.is_relative_to(out.parent) or out.is_relative_to(p)


def _commit(tmp: Path, out: Path, overwrite: bool) -> None:
    old = None
    with signals_deferred():  # the rename pair is never split by a signal
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise OutputExistsError(f"{out} appeared while it was being written; not replacing it")
            check_replaceable(out)  # it may have changed since the first look
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            _remove(old)
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)
                raise
        else:
            tmp.rename(out)
    if old is not None:
        _remove(old)


def _remove(p: Path) -> None:
    with signals_deferred():
        if p.is_symlink() or p.is_file():
            p.unlink(missing_ok=True)
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, and not in _ACTIVE: left by an earlier call that could not clean up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except (OverflowError, ValueError):
        return False  # not a possible process id
    return True


def _png_software(path: Path) -> str | None:
    """The text of a PNG's `Software` tEXt chunk (before the image data), or None."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            for _ in range(64):  # chunks before IDAT: a handful
                head = f.read(8)
                if len(head) < 8 or head[4:] == b"IDAT":
                    return None
                n = int.from_bytes(head[:4], "big")
                if n > 1 << 16:
                    return None
                body = f.read(n + 4)[:n]
                if head[4:] == b"tEXt" and body.startswith(b"Software\x00"):
                    return body[9:].decode("latin-1")
    except OSError:
        return None
    return None


def _small_json(path: Path):
    try:
        if not path.is_file() or path.stat().st_size > _MAX_CONFIG_BYTES:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

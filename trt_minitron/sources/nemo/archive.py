"""A `.nemo` container: a plain tar (read in place), a gzipped tar (extracted safely), or a folder.

Every tar is checked up front: absolute names, `..` components, links, device files and members
that run past the end of the file are refused, so a bad archive fails before any tensor is read.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from ...errors import CheckpointError, DiskFullError
from ...outputs import human_bytes

_COPY_BLOCK = 16 << 20
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Container:
    """Read access to the files of a `.nemo`, by POSIX names relative to its root (no leading './')."""

    path: Path
    kind: str  # "tar", "tar.gz" or "folder"

    def names(self) -> list[str]:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read_bytes(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        raise NotImplementedError

    def local_path(self, name: str) -> Path:
        """A real file holding member `name` (for mmap); may copy it to a private temp folder."""
        raise NotImplementedError

    def has(self, name: str) -> bool:
        return name in self._name_set()

    def _name_set(self) -> set[str]:
        if not hasattr(self, "_names_cache"):
            self._names_cache = set(self.names())
        return self._names_cache

    def close(self) -> None:
        pass


class FolderContainer(Container):
    """An extracted `.nemo` folder."""

    def __init__(self, path: Path, kind: str = "folder"):
        self.path, self.kind = Path(path), kind
        self._root = self.path.resolve()

    def names(self) -> list[str]:
        out = []
        for dirpath, _dirs, files in os.walk(self._root):
            rel = Path(dirpath).relative_to(self._root)
            out += [(rel / f).as_posix() if str(rel) != "." else f for f in files]
        return sorted(out)

    def _file(self, name: str) -> Path:
        p = self._root / name
        if not p.is_file():
            raise CheckpointError(f"{name} not found in {self.path}")
        if not p.resolve().is_relative_to(self._root):  # as a tar's link members are refused: read only the folder
            raise CheckpointError(f"{name} in {self.path} is a link to {p.resolve()}, outside the .nemo folder; "
                                  "refusing to read it")
        return p

    def size(self, name: str) -> int:
        return self._file(name).stat().st_size

    def read_bytes(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with open(self._file(name), "rb") as f:
            f.seek(offset)
            data = f.read(-1 if length is None else length)
        if length is not None and len(data) != length:
            raise CheckpointError(f"{name} in {self.path} is truncated: wanted {length} bytes at {offset}, got {len(data)}")
        return data

    def local_path(self, name: str) -> Path:
        return self._file(name)


class TarContainer(Container):
    """An uncompressed `.nemo` tar: members are read where they lie (seek to their data offset)."""

    def __init__(self, path: Path, members: dict[str, tarfile.TarInfo]):
        self.path, self.kind = Path(path), "tar"
        self._members = members
        self._fd = os.open(self.path, os.O_RDONLY)
        self._tmp: Path | None = None

    def names(self) -> list[str]:
        return sorted(n for n, m in self._members.items() if m.isfile())

    def _member(self, name: str) -> tarfile.TarInfo:
        m = self._members.get(name)
        if m is None or not m.isfile():
            raise CheckpointError(f"{name} not found in {self.path}")
        return m

    def size(self, name: str) -> int:
        return self._member(name).size

    def read_bytes(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        m = self._member(name)
        length = m.size - offset if length is None else length
        if offset < 0 or offset + length > m.size:
            raise CheckpointError(f"{name} in {self.path}: read of {length} bytes at {offset} runs past its end ({m.size})")
        data = os.pread(self._fd, length, m.offset_data + offset)
        if len(data) != length:
            raise CheckpointError(f"{self.path} is truncated inside member {name}")
        return data

    def local_path(self, name: str) -> Path:
        m = self._member(name)
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="trt-minitron-nemo-"))
        dst = (self._tmp / name).resolve()
        if not dst.is_relative_to(self._tmp.resolve()):  # names were checked already; belt and braces
            raise CheckpointError(f"refusing to extract {name!r} outside {self._tmp}")
        if not dst.exists():
            check_temp_space(m.size, f"copying {name} out of {self.path} (for mmap)")
            dst.parent.mkdir(parents=True, exist_ok=True)
            part = dst.with_name(dst.name + ".part")
            try:
                with open(part, "wb") as out:
                    pos, end = m.offset_data, m.offset_data + m.size
                    while pos < end:
                        block = os.pread(self._fd, min(_COPY_BLOCK, end - pos), pos)
                        if not block:
                            raise CheckpointError(f"{self.path} is truncated inside member {name}")
                        out.write(block)
                        pos += len(block)
            except OSError as e:
                part.unlink(missing_ok=True)
                if e.errno in _FULL:
                    raise DiskFullError(f"no space left in {self._tmp} while copying {name} out of {self.path}; "
                                        "point TMPDIR at a larger disk") from None
                raise
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            part.rename(dst)
        return dst

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class ExtractedContainer(FolderContainer):
    """A gzipped `.nemo` (NeMo < 1.7): the members a reader needs, extracted with the tarfile `data` filter
    into a private temp folder; `names()` still lists every member, so layout detection sees the whole archive."""

    def __init__(self, path: Path, tmp: Path, names: list[str]):
        super().__init__(tmp, kind="tar.gz")
        self.path = Path(path)
        self._tmpdir = tmp
        self._all = sorted(names)

    def names(self) -> list[str]:
        return self._all

    def _file(self, name: str) -> Path:
        p = self._root / name
        if not p.is_file() and name in self._name_set():
            raise CheckpointError(f"{name} in {self.path} was not unpacked: it is not a file a .nemo reader needs")
        return super()._file(name)

    def close(self) -> None:
        shutil.rmtree(self._tmpdir, ignore_errors=True)


def needed_member(name: str) -> bool:
    """Whether a reader may need this member: the config, the weights, or a tokenizer model."""
    parts = name.split("/")
    base = parts[-1]
    return (base == "model_config.yaml" or "model_weights" in parts[:-1] or base.endswith("model_weights.ckpt")
            or base.endswith(".model"))


def check_temp_space(need: int, what: str) -> Path:
    """The temp folder root, after checking it has room for `need` bytes (DiskFullError otherwise)."""
    root = Path(tempfile.gettempdir())
    free = shutil.disk_usage(root).free
    if need > free:
        raise DiskFullError(f"{what} needs {human_bytes(need)} in the temporary folder {root}, which has "
                            f"{human_bytes(free)} free; point TMPDIR at a larger disk")
    return root


def _safe_name(m: tarfile.TarInfo, where: Path) -> str:
    """Member name relative to the archive root; raises on anything that could escape or is not a plain file/dir."""
    raw = m.name
    if raw.startswith("/") or raw.startswith("\\") or (len(raw) > 1 and raw[1] == ":"):
        raise CheckpointError(f"unsafe member {raw!r} in {where}: absolute path; refusing to read this archive")
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CheckpointError(f"unsafe member {raw!r} in {where}: '..' component; refusing to read this archive")
    if m.issym() or m.islnk():
        raise CheckpointError(f"unsafe member {raw!r} in {where}: link to {m.linkname!r}; refusing to read this archive")
    if not (m.isfile() or m.isdir()):
        raise CheckpointError(f"unsafe member {raw!r} in {where}: device, fifo or other special file; "
                              "refusing to read this archive")
    return posixpath.join(*parts) if parts else "."


def _scan(tf: tarfile.TarFile, path: Path) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for m in tf:  # iterating reads every header, so a broken one fails here
        name = _safe_name(m, path)
        if name != ".":
            members[name] = m
    return members


def open_container(path: Path) -> Container:
    """Open a `.nemo` tar (plain or gzipped) or an extracted `.nemo` folder.

    Raises:
        CheckpointError: unreadable, truncated or unsafe archive.
    """
    path = Path(path)
    if path.is_dir():
        return FolderContainer(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        if not gz:
            with tarfile.open(path, "r:") as tf:
                members = _scan(tf, path)
            end = path.stat().st_size
            for name, m in members.items():
                if m.isfile() and m.offset_data + m.size > end:
                    raise CheckpointError(f"{path} is truncated: member {name} needs {m.offset_data + m.size} bytes, "
                                          f"the file has {end}")
            return TarContainer(path, members)
        return _extract_gz(path)
    except (CheckpointError, DiskFullError):
        raise
    except OSError as e:
        if e.errno in _FULL:
            raise DiskFullError(f"no space left in the temporary folder {tempfile.gettempdir()} while unpacking "
                                f"{path}; point TMPDIR at a larger disk") from None
        raise CheckpointError(f"{path} is not a readable .nemo archive ({e.strerror or e})") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise CheckpointError(f"{path} is not a readable .nemo archive (truncated or corrupt tar: {e})") from None


def _extract_gz(path: Path) -> ExtractedContainer:
    """Read every header (a pass through the stream), then unpack only the needed members, if they fit."""
    with tarfile.open(path, "r:gz") as tf:
        infos = list(tf)  # reads every header, so a broken one fails here
        names = [_safe_name(m, path) for m in infos]
        files = {n: m for n, m in zip(names, infos) if m.isfile()}
        wanted = [m for n, m in files.items() if needed_member(n)]
        check_temp_space(sum(m.size for m in wanted),
                         f"unpacking the gzipped {path} (or gunzip it to a plain tar, which is read in place)")
        tmp = Path(tempfile.mkdtemp(prefix="trt-minitron-nemo-"))
        try:
            tf.extractall(tmp, members=wanted, filter="data")  # the filter re-checks every member against tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return ExtractedContainer(path, tmp, list(files))

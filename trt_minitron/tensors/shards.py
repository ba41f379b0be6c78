"""The weight files of a Hugging Face folder: one file, shards named by an index, or every file of a suffix; an
index entry that would read a file outside the folder (or its hub repo) is refused."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from ..errors import CheckpointError


def weight_files(folder: Path, root: Path, single: str, index: str,
                  suffix: str) -> tuple[list[Path], dict[str, Path] | None]:
    """The weight files of one kind, and the index's tensor -> file map when there is an index."""
    if (folder / index).is_file():
        where = folder / index
        try:
            doc = json.loads(where.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{where}: malformed index ({e})") from None
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in weight_map.items()):
            found = type(doc).__name__ if not isinstance(doc, dict) else f"weight_map {type(weight_map).__name__}"
            raise CheckpointError(f"{where}: expected {{\"weight_map\": {{tensor name: file name}}}}, found a {found}")
        files = {name: inside(folder, root, name, where) for name in set(weight_map.values())}
        missing = sorted(name for name, p in files.items() if not p.is_file())
        if missing:
            raise CheckpointError(f"{where} names shards that do not exist: {missing}")
        return sorted(set(files.values())), {t: files[name] for t, name in weight_map.items()}
    if (folder / single).is_file():
        return [folder / single], None
    return sorted(p for p in folder.glob(f"*{suffix}") if p.is_file() and not p.name.startswith(".")), None


def inside(folder: Path, root: Path, name: str, where: Path) -> Path:
    """`folder / name` for an index entry, refused when it could read a file outside `root`."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or PurePosixPath(name).is_absolute() or name.startswith("\\") or ".." in parts \
            or (len(name) > 1 and name[1] == ":"):
        raise CheckpointError(f"{where}: shard {name!r} is not a plain file name inside {folder}")
    path = folder / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise CheckpointError(f"{where}: shard {name!r} is a link to {path.resolve()}, outside {root}")
    return path

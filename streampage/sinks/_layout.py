"""Where a file sink's output and state are: a file or a folder of parts, and the hidden
state folder beside or inside it (shared by the JSON Lines and Parquet sinks)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ._lock import state_dir

__all__ = ["drop_below", "fsync_dir", "locate", "migrate", "part_files", "shown"]


def locate(path: str | os.PathLike[str]) -> tuple[Path, bool, Path]:
    """A target's path, whether it is a folder of parts (its name ends with a separator,
    or it is a directory already), and its hidden state folder."""
    text = os.fspath(path)
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    folder = text.endswith(seps) or os.path.isdir(text)
    target = Path(text)
    # state_dir() cannot tell a folder that does not exist yet from a file: Path drops "/"
    return target, folder, target / ".streampage" if folder else state_dir(target)


def shown(sink: Any) -> str:
    """The target as the user named it: a folder with its trailing separator."""
    return str(sink.path) + (os.sep if sink.folder else "")


def migrate(old: Path, new: Path) -> None:
    """Move a file (or folder) of the layout before the state folder (``items.jsonl.journal``
    beside the output) into it, so that an older output still resumes."""
    if not old.exists() or new.exists():
        return
    os.replace(old, new)
    fsync_dir(new.parent)
    fsync_dir(old.parent)


def part_files(folder: Path, pattern: re.Pattern[str]) -> dict[int, str]:
    """The part files in ``folder`` by number, from their names alone (none is opened)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            found[int(match[1])] = name
    return found


def drop_below(folder: Path, pattern: re.Pattern[str], first: int) -> None:
    """Delete the published parts numbered below ``first``: the output a replace ended."""
    gone = False
    for k, name in part_files(folder, pattern).items():
        if k < first:
            (folder / name).unlink(missing_ok=True)
            gone = True
    if gone:
        fsync_dir(folder)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable (a created or renamed file survives a power cut)."""
    if os.name != "posix":
        return  # directories cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

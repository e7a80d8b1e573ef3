"""Where a file sink's output and state are: a file or a folder of parts, and the hidden
state folder beside or inside it (shared by the JSON Lines and Parquet sinks); and what
format a target holds, which is part of its identity: a folder of JSON Lines parts is not
gone on with in Parquet, nor a plain JSON Lines file in gzip."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError
from ._lock import state_dir

__all__ = [
    "check_format",
    "check_names",
    "drop_below",
    "file_format",
    "fsync_dir",
    "locate",
    "migrate",
    "part_files",
    "part_formats",
    "shown",
]

#: the formats a file sink writes, as its journal records them: how each is said
_SAID = {"jsonl": "JSON Lines", "jsonl.gz": "gzip JSON Lines", "parquet": "Parquet"}
#: a part file of any of them, and its format
_ANY_PART = re.compile(r"part-(?:[A-Za-z0-9_.-]+-)?\d+\.(jsonl|jsonl\.gz|parquet)")


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


def part_formats(folder: Path) -> dict[str, str]:
    """The formats of the part files in ``folder``, each with the first part of it."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    for name in names:
        match = _ANY_PART.fullmatch(name)
        if match:
            found.setdefault(match[1], name)
    return found


def file_format(path: Path) -> str | None:
    """What a file holds, from its first bytes: Parquet, gzip (JSON Lines) or, anything else
    in it, JSON Lines; None for a file that is missing or empty."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        return None
    if not head:
        return None
    if head == b"PAR1":
        return "parquet"
    return "jsonl.gz" if head.startswith(b"\x1f\x8b") else "jsonl"


def check_format(sink: Any, recorded: str, seen: dict[str, str]) -> None:
    """Refuse a target that holds another format than ``sink.format``: the one its journal
    records (``recorded``), or one its content shows (``seen``: format -> the file that
    shows it). Called by ``open`` before anything is written or cut."""
    held: dict[str, list[str]] = {}
    if recorded:
        held[recorded] = ["its journal"]
    for k, where in seen.items():
        held.setdefault(k, []).append(where)
    if set(held) <= {sink.format}:
        return
    target = shown(sink)
    what = "folder" if sink.folder else "file"
    mine = _SAID[sink.format]
    said = " and ".join(f"{_SAID.get(k, k)} ({', '.join(held[k])})" for k in sorted(held))
    ways = []
    if sink.format not in held:  # mixed already: going on in either would not mend it
        said += f", not {mine}"
        for k in sorted(held):
            if k in _SAID:
                way = _api(k, target)
                ways.append(f"{way} (--format {k})" if sink.folder else way)
    start_over = "remove the folder" if sink.folder else f"remove it and {sink.state}"
    go_on = f"Go on with it as {' or '.join(ways)}, or write" if ways else "Write"
    raise ConfigurationError(
        f"{target} holds {said}: a {what} holds one format. {go_on} {mine} to another "
        f"{what} (or {start_over} to start it over)"
    )


def check_names(sink: Any, held: set[str], name: str) -> None:
    """Refuse to write under checkpoint ``name`` to a target that holds others (``held``,
    committed since its last replace): a file or a folder holds one output, so one
    checkpoint; under another name a run would start over and write every record again.
    Raised by the first write or commit, not by ``open``: a replace may follow it, which
    starts the target over whatever its checkpoint was."""
    others = sorted(held - {name})
    if not others:
        return
    what = "folder" if sink.folder else "file"
    names = " and ".join(repr(n) for n in others)
    start_over = "mode='replace' (--replace) to start it over"
    if len(others) == 1:
        quoted = shlex.quote(others[0])
        start_over = (
            f"Pass checkpoint={others[0]!r} (--checkpoint {quoted}) to go on with it, or "
            + start_over
        )
    else:
        start_over = "Pass " + start_over
    raise ConfigurationError(
        f"{shown(sink)} holds checkpoint{'s' if len(others) > 1 else ''} {names}, not "
        f"{name!r}: a {what} holds one output, so one checkpoint. {start_over}"
    )


def _api(fmt: str, target: str) -> str:
    if fmt == "parquet":
        return f"Parquet({target!r})"
    return f"JSONLines({target!r}, gzip=True)" if fmt == "jsonl.gz" else f"JSONLines({target!r})"


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

"""The journal of a file sink: one JSON line a commit, written after the data it names.

Shared by the JSON Lines and Parquet sinks; ``jsonl.py`` describes its entries and how a
replace is recorded. Replaying it from the first line to the last gives the checkpoints and
the committed data; a torn last line (a crash mid-append) is no commit and is cut off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .._errors import ConfigurationError
from ._layout import fsync_dir

__all__ = ["Entry", "Journal", "Replay", "checkpoint_json", "replay", "write_all"]


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def checkpoint_json(checkpoint: bytes) -> msgspec.Raw:
    """The checkpoint as one line of JSON, to be stored as it is."""
    try:
        value = msgspec.json.decode(checkpoint)
    except msgspec.DecodeError:
        raise ValueError(f"a checkpoint must be JSON, got {checkpoint[:80]!r}") from None
    if b"\n" in checkpoint or b"\r" in checkpoint:
        checkpoint = msgspec.json.encode(value)  # one line a commit
    return msgspec.Raw(checkpoint)


class Entry(msgspec.Struct, omit_defaults=True):
    """One journal line: a commit (``name``, ``checkpoint`` and where the data ends), or a
    replace beginning (``replace``) or done (``replaced``)."""

    name: str = ""
    checkpoint: msgspec.Raw = msgspec.Raw()
    offset: int = 0  # JSON Lines: the committed length of the data file
    part: int = 0  # JSON Lines folder: the part ``offset`` is of
    rows: int = 0  # JSON Lines folder: the rows committed to ``part``
    parts: list[int] = []  # Parquet: the staged parts this commit makes committed
    replace: int | None = None
    replaced: int | None = None


@dataclass
class Replay:
    """What a journal says, read from its first line to its last."""

    #: the last checkpoint of each name since the last replace began
    checkpoints: dict[str, bytes] = field(default_factory=dict)
    #: the commits since the last replace began (all of them, if none did)
    commits: list[Entry] = field(default_factory=list)
    #: the first part of a replace begun and not finished
    replacing: int | None = None
    #: the first part of the last replace finished (0: none)
    replaced: int = 0


def replay(entries: Sequence[Entry]) -> Replay:
    found = Replay()
    for entry in entries:
        if entry.replace is not None:
            found.checkpoints, found.commits = {}, []
            found.replacing = entry.replace
        elif entry.replaced is not None:
            found.replacing, found.replaced = None, entry.replaced
        elif entry.name:
            found.checkpoints[entry.name] = bytes(entry.checkpoint)
            found.commits.append(entry)
    return found


class Journal:
    """The journal file: read whole lines (a torn last one is cut off), appended to with
    one ``write`` and an fsync per line, created 0600 (it holds checkpoints)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._decode = msgspec.json.Decoder(Entry).decode

    def load(self) -> list[Entry] | None:
        """The entries, or None when there is no journal."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        entries: list[Entry] = []
        good = 0
        while good < len(data):
            end = data.find(b"\n", good)
            if end < 0:
                break  # no newline: the append was cut short, the commit did not happen
            try:
                entries.append(self._decode(data[good:end]))
            except msgspec.DecodeError:
                if data.find(b"\n", end + 1) >= 0:
                    raise ConfigurationError(
                        f"{self.path}: line {len(entries) + 1} is not a journal entry, and "
                        "whole lines follow it: the journal was changed by something else"
                    ) from None
                break  # the last line, torn (a power cut can leave garbage before its end)
            good = end + 1
        if good < len(data):  # cut the torn tail, or later lines would follow it
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, good)
                os.fsync(fd)
            finally:
                os.close(fd)
        return entries

    def create(self) -> None:
        """An empty journal, durable (and its state folder's entry) before any data is
        written: a run killed inside its first commit leaves data this sink cuts back."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)
        fsync_dir(self.path.parent.parent)

    def open(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, entry: Entry) -> None:
        """Append a line, durable when this returns. A failed append is cut back off, so
        that the next one follows a whole line."""
        fd = self._fd
        if fd is None:
            raise RuntimeError(f"{self.path}: open() first")
        line = msgspec.json.encode(entry) + b"\n"
        size = os.fstat(fd).st_size
        try:
            write_all(fd, line)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

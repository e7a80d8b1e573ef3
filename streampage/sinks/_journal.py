"""The journal of a file sink: one JSON line a commit, written after the data it names.

Shared by the JSON Lines and Parquet sinks; ``jsonl.py`` describes its entries and how a
replace is recorded. Replaying it from the first line to the last gives the checkpoints and
the committed data; a torn last line (a crash mid-append) is no commit and is cut off.

The first line a journal gets says what its target holds, ``{"format": "jsonl"}`` (or
``"jsonl.gz"``, ``"parquet"``): written with the first entry (one write, one fsync), so
that a journal nothing was committed to is empty. A journal of an older version has none;
its next append adds it.

``open`` compacts a journal grown past ``COMPACT_ENTRIES`` lines or ``COMPACT_BYTES``: the
sink gives the few entries that say what replaying the whole would (the last checkpoint of
each name, the replace under way or done, and the data not published yet), written whole to
``journal.compact`` beside it, fsynced, renamed over it and the folder fsynced. A kill
before the rename leaves the old journal (and the file, removed by the next ``open``); after
it, the new one, which replays to the same state.
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

__all__ = [
    "COMPACT_BYTES",
    "COMPACT_ENTRIES",
    "Entry",
    "Journal",
    "Replay",
    "checkpoint_json",
    "last_commits",
    "replay",
    "write_all",
]

#: ``open`` compacts a journal of more lines than this ...
COMPACT_ENTRIES = 64
#: ... or of more bytes (checkpoints grow with the number of sources)
COMPACT_BYTES = 1 << 20


def write_all(fd: int, data: bytes | bytearray) -> None:
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
    """One journal line: a commit (``name``, ``checkpoint`` and where the data ends), a
    replace beginning (``replace``) or done (``replaced``), or what the target holds
    (``format``)."""

    name: str = ""
    checkpoint: msgspec.Raw = msgspec.Raw()
    offset: int = 0  # JSON Lines: the committed length of the data file
    part: int = 0  # JSON Lines folder: the part ``offset`` is of
    rows: int = 0  # JSON Lines folder: the rows committed to ``part``
    parts: list[int] = []  # Parquet: the staged parts this commit makes committed
    replace: int | None = None
    replaced: int | None = None
    format: str = ""  # "jsonl", "jsonl.gz" or "parquet": the sink the target is of


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
    #: what the journal says its target holds ("": it does not say, an older journal)
    format: str = ""
    #: the sinks the commits look written by, from their fields, replaces or not:
    #: "jsonl" (offsets) and "parquet" (parts); for a journal that does not say its format
    kinds: set[str] = field(default_factory=set)


def replay(entries: Sequence[Entry]) -> Replay:
    found = Replay()
    for entry in entries:
        if entry.format:
            found.format = entry.format
        if entry.replace is not None:
            found.checkpoints, found.commits = {}, []
            found.replacing = entry.replace
        elif entry.replaced is not None:
            found.replacing, found.replaced = None, entry.replaced
        elif entry.name:
            found.checkpoints[entry.name] = bytes(entry.checkpoint)
            found.commits.append(entry)
            if entry.offset or entry.part or entry.rows:
                found.kinds.add("jsonl")
            if entry.parts:
                found.kinds.add("parquet")
    return found


def last_commits(found: Replay) -> list[Entry]:
    """The last commit of each name, in the order of those commits (the last one last), as
    bare entries: a name and its checkpoint."""
    last: dict[str, Entry] = {}
    for entry in found.commits:
        last.pop(entry.name, None)
        last[entry.name] = entry
    return [Entry(name=e.name, checkpoint=e.checkpoint) for e in last.values()]


class Journal:
    """The journal file: read whole lines (a torn last one is cut off by ``open``),
    appended to with one ``write`` and an fsync per line, created 0600 (it holds
    checkpoints). ``format`` is what its target holds, recorded by the first append."""

    def __init__(self, path: Path, format: str) -> None:
        self.path = path
        self.format = format
        self.compacting = path.with_name(path.name + ".compact")
        self._fd: int | None = None
        self._decode = msgspec.json.Decoder(Entry).decode
        self._lines = 0  # whole lines, as loaded
        self._good = 0  # their length: what is past it is a torn line, cut by open()
        self._size = 0  # the file's length, as loaded
        self._tag = False  # the next append records the format first

    def load(self) -> list[Entry] | None:
        """The entries, or None when there is no journal. Reads, changes nothing."""
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
        self._lines, self._good, self._size = len(entries), good, len(data)
        return entries

    def create(self) -> None:
        """An empty journal, durable (and its state folder's entry) before any data is
        written: a run killed inside its first commit leaves data this sink cuts back."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)
        fsync_dir(self.path.parent.parent)
        self._lines = self._good = self._size = 0

    def open(self, *, recorded: bool) -> None:
        """Ready to append: the torn last line loaded is cut off (or the next line would
        follow it), and a compaction killed before its rename is removed. ``recorded``:
        whether the journal says its format already (if not, the next append does)."""
        self.compacting.unlink(missing_ok=True)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if self._good < self._size:
            os.ftruncate(self._fd, self._good)
            os.fsync(self._fd)
            self._size = self._good
        self._tag = not recorded

    def append(self, entry: Entry) -> None:
        """Append a line, durable when this returns. A failed append is cut back off, so
        that the next one follows a whole line."""
        fd = self._fd
        if fd is None:
            raise RuntimeError(f"{self.path}: open() first")
        line = msgspec.json.encode(entry) + b"\n"
        if self._tag:
            line = msgspec.json.encode(Entry(format=self.format)) + b"\n" + line
        size = os.fstat(fd).st_size
        try:
            write_all(fd, line)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        self._tag = False

    def bloated(self) -> bool:
        """Whether the journal, as loaded, is worth compacting."""
        return self._lines > COMPACT_ENTRIES or self._good > COMPACT_BYTES

    def compact(self, entries: Sequence[Entry]) -> bool:
        """Replace the journal (open, bloated) by ``entries`` after its format line, when
        that is shorter: atomically, durable when this returns. A failure before the rename
        leaves the journal as it was (compacting is a saving, not a need): False."""
        fd = self._fd
        if fd is None:
            raise RuntimeError(f"{self.path}: open() first")
        lines = [Entry(format=self.format), *entries]
        if len(lines) >= self._lines:
            return False
        data = b"".join(msgspec.json.encode(e) + b"\n" for e in lines)
        try:
            new = os.open(self.compacting, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_all(new, data)
                os.fsync(new)
            finally:
                os.close(new)
            self._fd = None
            os.close(fd)  # before the rename: Windows renames no open file
            try:
                os.replace(self.compacting, self.path)
            finally:  # appends go to whichever is the journal now
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            with contextlib.suppress(OSError):
                self.compacting.unlink(missing_ok=True)
            return False
        fsync_dir(self.path.parent)  # the rename durable before anything is appended
        self._lines, self._good, self._size, self._tag = len(lines), len(data), len(data), False
        return True

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

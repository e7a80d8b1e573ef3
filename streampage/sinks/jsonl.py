"""JSON Lines, optionally gzip: one file appended in place, or a folder of part files.

Exactly-once rests on a journal written after the data: each commit writes the batch and
fsyncs it, then appends one JSON line to the journal and fsyncs that. Whatever is in a data
file past the last journalled offset was written by a process that died before its commit:
``open`` cuts it off. A torn last journal line (a crash mid-append) is no commit; ``open``
cuts it too, so that later lines follow a whole one. With gzip, every commit ends a gzip
member, so a file is a valid multi-member gzip stream at every journalled offset.

Everything but the output lives in a hidden state folder (``state_dir`` in ``_lock.py``),
created 0700: readers of the output, and tools that skip names starting with ``.``, see
the output and nothing else.

``JSONLines("out/items.jsonl")``, one file::

    out/items.jsonl                              the output, appended in place
    out/.items.jsonl.streampage/lock             held by the run writing (see _lock.py)
    out/.items.jsonl.streampage/journal          one line a commit, 0600 (it holds checkpoints)
    out/.items.jsonl.streampage/replacing        the new output of a replace, until finish

``JSONLines("out/items/")``, a folder (a path ending in ``/``, or an existing directory)::

    out/items/part-000001.jsonl                  published parts: committed rows, never changed
    out/items/.streampage/lock, journal
    out/items/.streampage/parts/part-000002.jsonl   the part being written, hidden

A folder's part is appended to (journalled offsets, as in a single file) while it is hidden,
and published by renaming it to its place, after its data is fsynced and journalled: at
``close`` (after success and after failure), when it holds ``part_rows`` rows, and by the
next ``open`` for the committed rows of a run that died. A reader of the folder (a glob of
``part-*.jsonl``) only ever sees whole, committed parts. Adding to a folder never reads or
rewrites a published part: ``open`` lists their names, nothing more.

The journal, one JSON object a line:

``{"name", "checkpoint", "offset"}`` (a folder adds ``"part"`` and ``"rows"``)
    A commit: the checkpoint ``name`` holds, and the committed length of the data file
    (the output, the ``replacing`` file, or the folder's hidden part ``part``, which then
    holds ``rows`` rows).
``{"replace": K}``
    ``replace(name)`` began: checkpoints and commits before it no longer count. A single
    file's new data goes to ``replacing``; in a folder, parts numbered K and up are the new
    output and stay hidden.
``{"replaced": K}``
    ``finish`` completed it. A single file: ``replacing`` was renamed over the output just
    before (a kill in between leaves ``replacing`` gone and this line missing: ``open``
    adds it). A folder: this line comes first, then the parts below K are deleted and the
    new ones published (a kill in between: ``open`` does the rest).

``{"format": "jsonl"}`` (or ``"jsonl.gz"``, or ``"parquet"`` for the Parquet sink)
    What the target holds, written with the journal's first entry. ``open`` refuses a target
    of another format, before anything is written or cut: gzip parts beside plain ones, or
    JSON Lines beside Parquet, would each be read by some readers and not others. (A journal
    of an older version has no such line: the target's parts or data say, and the next
    append adds it.)

Until ``finish``, the old output is untouched by a replace; a replace left unfinished is
what the next ``open`` returns the checkpoint of, so a resume goes on with it, and another
``replace`` starts it over.

A target holds one output, so one checkpoint: a write or commit under another name than
the one committed since the last replace is refused (a resume under a misspelt name would
start over and write every record again). The first write or commit says so, not ``open``:
a ``replace`` may follow it, and starts the target over whatever its checkpoint was.

``open`` compacts a journal of more than 64 lines or 1 MiB (each commit holds the whole
checkpoint, which grows with the number of sources): see ``_journal.py``.

The journal (``_journal.py``) and the target's layout (``_layout.py``) serve the Parquet
sink too, which has the same layout and journal.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec

from .._errors import ConfigurationError
from ._base import Configured
from ._journal import Entry, Journal, Replay, checkpoint_json, last_commits, replay, write_all
from ._layout import (
    check_format,
    check_names,
    drop_below,
    file_format,
    fsync_dir,
    locate,
    migrate,
    part_files,
    part_formats,
    shown,
)
from ._lock import FileLock

__all__ = ["JSONLines"]

_PART = re.compile(r"part-(\d+)\.jsonl(?:\.gz)?")


@dataclass
class _Part:
    """A committed part of a folder, not published yet: its file in the state folder."""

    name: str
    offset: int  # committed bytes
    rows: int  # committed rows


class JSONLines(Configured):
    """One JSON document a line in ``path`` (``.gz``: gzip, or ``gzip=True``), or, when
    ``path`` ends with ``/`` or is a directory, in part files ``part-NNNNNN.jsonl`` in that
    folder, each of at most about ``part_rows`` rows.

    ``compresslevel`` (gzip, 0 to 9): the level of the library that compresses, libdeflate
    when the ``deflate`` package is installed (``streampage[speed]``), else the standard
    library's zlib (``gzip_library()`` says which). 6 is the default; 1 the fastest, 9 the
    smallest. On JSON records, libdeflate's 6 takes ~57% of zlib's 6 time for 6% smaller
    files, its 1 ~3x less than its 6 for files ~27% larger (zlib's 1: ~2.6x less than its
    6, ~45% larger). Either writes standard gzip: a file holds a member per commit, and
    members of both libraries may follow each other in one file (an append or a resume
    with the other installed). gzip, zcat, Python's gzip module, pyarrow and Go read the
    members as one stream; APIs that stop at the first member (``zlib.decompressobj``,
    ``deflate.gzip_decompress``, Rust's ``GzDecoder``, Commons Compress by default) read
    one commit's records only: use their multi-member form. Compression runs in the
    worker thread that writes, beside the fetch on another core."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        gzip: bool | None = None,
        compresslevel: int = 6,
        part_rows: int = 1_000_000,
    ) -> None:
        self._configured(path, gzip=gzip, compresslevel=compresslevel, part_rows=part_rows)
        self.path, self.folder, self.state = locate(path)
        self.journal = self.state / "journal"
        self.parts_dir = self.state / "parts"
        self._replacing_file = self.state / "replacing"
        default_gzip = not self.folder and self.path.suffix == ".gz"
        self._gzip = default_gzip if gzip is None else gzip
        self._ext = ".jsonl.gz" if self._gzip else ".jsonl"
        #: what the target holds, recorded in its journal: another format is refused
        self.format = "jsonl.gz" if self._gzip else "jsonl"
        if part_rows < 1:
            raise ConfigurationError(f"JSONLines(part_rows={part_rows}) must be at least 1")
        if not (isinstance(compresslevel, int) and 0 <= compresslevel <= 9):
            raise ConfigurationError(
                f"JSONLines(compresslevel={compresslevel!r}) must be a whole number, 0 to 9"
            )
        self.compresslevel = compresslevel
        self.part_rows = part_rows
        self._lock = FileLock(self.state / "lock", what=f"the checkpoint of {shown(self)}")
        self._journal = Journal(self.journal, self.format)
        self._encoder = msgspec.json.Encoder()
        self._pending: list[bytes] = []
        self._pending_rows = 0
        self._reset()

    def __repr__(self) -> str:
        return f"JSONLines({shown(self)!r})"

    def _reset(self) -> None:
        self._opened = False
        self._fd: int | None = None  # the data file commits append to
        self._offset = 0  # its committed length
        self._rows = 0  # folder: rows committed to the current part
        self._current = 0  # folder: the number of the current (hidden) part
        self._next = 1  # folder: the number a new part gets
        self._staged: dict[int, _Part] = {}  # folder: committed parts not published yet
        self._replacing: int | None = None  # an unfinished replace: its first part
        self._opened_as = ""  # the checkpoint open() was asked for
        self._held: set[str] = set()  # the checkpoints committed since the last replace

    # ------------------------------------------------------------------ the Sink protocol

    async def open(self, name: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._open, name)

    async def replace(self, name: str) -> None:
        """Start the target over: the new records stay hidden until ``finish``."""
        self._pending, self._pending_rows = [], 0
        await anyio.to_thread.run_sync(self._replace)

    async def write(self, records: Sequence[Any]) -> None:
        if self._opened:
            check_names(self, self._held, self._opened_as)
        self._pending.append(self._encoder.encode_lines(records))
        self._pending_rows += len(records)

    async def commit(self, name: str, checkpoint: bytes) -> None:
        chunks, rows = self._pending, self._pending_rows
        self._pending, self._pending_rows = [], 0
        await anyio.to_thread.run_sync(self._commit, name, chunks, rows, checkpoint)

    def stage(self, records: Sequence[Any]) -> bytes:
        """One page's records as JSON lines, for ``commit_staged`` (``into()`` calls it on
        the event loop as each page arrives, so that a batch waits for its commit as bytes,
        not as Python objects). Nothing is written."""
        return self._encoder.encode_lines(records)

    async def commit_staged(
        self, name: str, checkpoint: bytes, batches: Sequence[Sequence[bytes]]
    ) -> None:
        """``write`` and ``commit`` at once, for ``batches`` of what ``stage`` returned:
        joined, compressed, written and fsynced, then journalled with the checkpoint, in
        one call to a worker thread."""
        chunks = [*self._pending, *(chunk for batch in batches for chunk in batch)]
        self._pending, self._pending_rows = [], 0
        await anyio.to_thread.run_sync(self._commit, name, chunks, -1, checkpoint)

    async def finish(self, name: str) -> None:
        """The run delivered every page: a replace takes effect, a folder's part is
        published."""
        self._pending, self._pending_rows = [], 0
        if self._opened:
            await anyio.to_thread.run_sync(self._finish)

    async def close(self) -> None:
        self._pending, self._pending_rows = [], 0  # uncommitted: discarded, as after a crash
        await anyio.to_thread.run_sync(self._close)

    # ------------------------------------------------------------------ open

    def _open(self, name: str) -> bytes | None:
        if self._opened:
            self._close()
        self._lock.acquire()  # before anything is read or cut: one writer
        try:
            if not self.folder:
                migrate(self.path.with_name(self.path.name + ".journal"), self.journal)
            entries = self._journal.load()
            found = replay(entries or [])
            if entries is None:
                self._refuse_foreign()
                self._journal.create()
            else:
                check_format(self, found.format, self._formats_seen(found))
            self._journal.open(recorded=bool(found.format))
            if self.folder:
                self._open_folder(found)
            else:
                self._open_file(found)
            self._opened_as, self._held = name, set(found.checkpoints)
            if self._journal.bloated():
                self._journal.compact(self._compacted(found))
            self._opened = True
            return found.checkpoints.get(name)
        except BaseException:
            self._shut()
            raise

    def _formats_seen(self, found: Replay) -> dict[str, str]:
        """The formats the target shows it holds: a folder's published parts, and, for a
        journal of an older version (it does not say), its commits and data files."""
        seen = part_formats(self.path) if self.folder else {}
        if found.format:
            return seen
        if "parquet" in found.kinds:
            seen.setdefault("parquet", "its journal")
        if "jsonl" in found.kinds:
            if self.folder:
                for fmt, name in part_formats(self.parts_dir).items():
                    seen.setdefault(fmt, name)
            else:
                for data in (self.path, self._replacing_file):
                    held = file_format(data)
                    if held is not None:
                        seen.setdefault(held, data.name)
        return seen

    def _refuse_foreign(self) -> None:
        """No journal: the output must not hold data this sink did not write."""
        if self.folder:
            found = part_formats(self.path)
            if found:
                raise ConfigurationError(
                    f"{shown(self)} holds part files ({min(found.values())}...) and no journal "
                    "from an earlier run, so it cannot be resumed or added to: remove them or "
                    "choose another folder"
                )
        elif self.path.exists() and self.path.stat().st_size > 0:
            raise ConfigurationError(
                f"{self.path} exists and has no journal from an earlier run, so it cannot be "
                "resumed or safely appended to: remove it or choose another path"
            )

    def _open_file(self, found: Replay) -> None:
        replacing = found.replacing
        if replacing is not None and not self._replacing_file.exists():
            # finish() renamed the new output into place and was killed before it said so
            self._journal.append(Entry(replaced=replacing))
            found.replacing, found.replaced = None, replacing
            replacing = None
        if replacing is None:
            self._replacing_file.unlink(missing_ok=True)  # a replace killed before it began
        data = self.path if replacing is None else self._replacing_file
        offset = found.commits[-1].offset if found.commits else 0
        self._fd = open_data(data, offset)
        self._offset = offset
        self._replacing = replacing

    def _open_folder(self, found: Replay) -> None:
        made = not self.parts_dir.is_dir()
        self.parts_dir.mkdir(mode=0o700, exist_ok=True)
        if made:
            fsync_dir(self.state)
        replacing = found.replacing
        if replacing is None and found.replaced:
            drop_below(self.path, _PART, found.replaced)  # a finish killed before it did
        visible = part_files(self.path, _PART)
        hidden = part_files(self.parts_dir, _PART)
        committed: dict[int, tuple[int, int]] = {}
        for entry in found.commits:
            committed[entry.part] = (entry.offset, entry.rows)
        staged: dict[int, _Part] = {}
        for k, (offset, rows) in sorted(committed.items()):
            if offset == 0 or (k in visible and k not in hidden):
                continue  # nothing in it, or published
            if k not in hidden:
                raise ConfigurationError(
                    f"part {k} of {shown(self)} is committed in {self.journal} but its file "
                    f"is missing from {self.parts_dir}: remove the folder and run again"
                )
            staged[k] = _Part(hidden[k], offset, rows)
        for k, file in hidden.items():
            if k not in staged:  # written and never committed, or from before a replace
                (self.parts_dir / file).unlink()
        for part in staged.values():
            os.close(open_data(self.parts_dir / part.name, part.offset))
        floor = (replacing or found.replaced or 1) - 1  # new parts come after a replace's
        self._next = max([floor, *visible, *hidden, *committed]) + 1
        self._staged = staged
        self._replacing = replacing
        if replacing is None:
            self._publish()  # the committed rows of a run that died become visible now
        elif staged:
            last = max(staged)  # a replace goes on in its last part
            if staged[last].name.endswith(self._ext):
                self._current, self._offset, self._rows = (
                    last,
                    staged[last].offset,
                    staged[last].rows,
                )
                self._fd = open_data(self.parts_dir / staged[last].name, self._offset)

    def _compacted(self, found: Replay) -> list[Entry]:
        """What the journal says, in few entries (``open``, after its recovery): the replace
        under way or done, the last checkpoint of each name, then the last commit's name
        and checkpoint carrying the committed data: a file's length; a folder's hidden
        parts (and its last part, so that a missing one is still an error)."""
        entries = []
        if self._replacing is not None:
            entries.append(Entry(replace=self._replacing))
        elif found.replaced:
            entries.append(Entry(replaced=found.replaced))
        commits = last_commits(found)
        if not commits:
            return entries
        last = commits.pop()
        entries += commits
        if not self.folder:
            last.offset = self._offset
            return [*entries, last]
        parts: dict[int, tuple[int, int]] = {}
        for entry in found.commits:
            if entry.offset:
                parts[entry.part] = (entry.offset, entry.rows)
        keep = set(self._staged) | ({max(parts)} if parts else set())
        if not keep:
            return [*entries, last]
        for k in sorted(keep):
            offset, rows = parts[k]
            entries.append(Entry(last.name, last.checkpoint, offset=offset, part=k, rows=rows))
        return entries

    # ------------------------------------------------------------------ replace

    def _replace(self) -> None:
        if not self._opened:
            raise RuntimeError(f"{self!r}: open() first")
        self._held = set()  # whoever's they were, the target starts over
        if self.folder:
            if self._replacing is None:
                self._publish()  # committed before the replace began: old output, shown
            k0 = self._next_number()
            self._journal.append(Entry(replace=k0))
            self._drop_current()
            for part in self._staged.values():  # an earlier replace's parts: started over
                (self.parts_dir / part.name).unlink(missing_ok=True)
            self._staged = {}
            self._replacing, self._next = k0, k0
            return
        if self._replacing is None:
            # The file exists, named in its folder, before the journal says a replace began:
            # a replace whose file is gone is one that finish() renamed into place.
            fd = open_data(self._replacing_file, 0, create=True)
            fsync_dir(self.state)
            self._journal.append(Entry(replace=0))
            self._close_fd()
            self._fd = fd
        else:
            self._journal.append(Entry(replace=0))  # then cut: open cuts to 0 from here on
            assert self._fd is not None
            os.ftruncate(self._fd, 0)
        self._offset, self._replacing = 0, 0

    # ------------------------------------------------------------------ commit

    def _commit(self, name: str, chunks: list[bytes], rows: int, checkpoint: bytes) -> None:
        if not self._opened:
            raise RuntimeError(f"{self!r}: open() first")
        check_names(self, self._held, name)
        raw = checkpoint_json(checkpoint)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if rows < 0 and self.folder:  # staged: a record a line (a folder counts its rows)
            rows = data.count(b"\n")
        if data and self._fd is None:
            self._start_part()
        offset = self._offset
        if data:
            fd = self._fd
            assert fd is not None
            payload = gzip_compressor()(data, self.compresslevel) if self._gzip else data
            try:
                write_all(fd, payload)
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._offset)  # what was written is no commit
                raise
            offset += len(payload)
        entry = Entry(name=name, checkpoint=raw, offset=offset)
        if self.folder:
            entry.part, entry.rows = self._current, self._rows + rows
        try:
            self._journal.append(entry)
        except BaseException:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._offset)
            raise
        self._offset = offset
        self._held.add(name)
        if self.folder and offset:
            self._rows += rows
            self._staged[self._current] = _Part(self._name(self._current), offset, self._rows)
            if self._rows >= self.part_rows:
                if self._replacing is None:
                    self._publish()
                else:
                    self._drop_current()  # full: it waits for finish, the next part begins

    def _start_part(self) -> None:
        """A folder's next hidden part, its name durable before a journal line names it."""
        self._current = self._next_number()
        self._next = self._current + 1
        self._fd = open_data(self.parts_dir / self._name(self._current), 0, create=True)
        self._offset = self._rows = 0
        fsync_dir(self.parts_dir)

    def _next_number(self) -> int:
        return max([self._next - 1, self._current, *self._staged]) + 1

    def _name(self, k: int) -> str:
        return f"part-{k:06d}{self._ext}"

    # ------------------------------------------------------------------ publish, finish

    def _publish(self) -> None:
        """Move a folder's committed hidden parts to their places (each whole and fsynced
        already), in order; then the folder entry is made durable."""
        if not self._staged:
            return
        if self._current in self._staged:
            self._drop_current()
        for k in sorted(self._staged):
            os.replace(self.parts_dir / self._staged[k].name, self.path / self._staged[k].name)
            del self._staged[k]
        fsync_dir(self.path)

    def _drop_current(self) -> None:
        """Let go of the current part: the next commit with records begins a new one."""
        self._close_fd()
        self._next = self._next_number()
        self._current, self._offset, self._rows = 0, 0, 0

    def _finish(self) -> None:
        if self.folder:
            if self._replacing is not None:
                # The journal says it first: from here a kill is rolled forward by open.
                self._journal.append(Entry(replaced=self._replacing))
                drop_below(self.path, _PART, self._replacing)
                self._replacing = None
            self._publish()
            return
        if self._replacing is not None:
            fd = self._fd
            assert fd is not None
            if os.fstat(fd).st_size != self._offset:
                os.ftruncate(fd, self._offset)
            os.fsync(fd)
            os.replace(self._replacing_file, self.path)  # the new output, whole, at once
            fsync_dir(self.path.parent)
            self._journal.append(Entry(replaced=self._replacing))
            self._replacing = None  # the descriptor now writes to the output itself

    # ------------------------------------------------------------------ close

    def _close(self) -> None:
        try:
            if self._opened and self.folder and self._replacing is None:
                if self._fd is not None and os.fstat(self._fd).st_size != self._offset:
                    os.ftruncate(self._fd, self._offset)  # a commit that failed mid-write
                self._publish()
        finally:
            self._shut()

    def _shut(self) -> None:
        """Let go of every file and the lock, as a killed process would."""
        self._close_fd()
        self._journal.close()
        self._lock.release()
        self._reset()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


@functools.cache
def gzip_compressor() -> Callable[[bytes, int], bytes | bytearray]:
    """What compresses a commit's data into one whole gzip member (RFC 1952): libdeflate
    (the ``deflate`` package, from ``streampage[speed]``) when it can be imported, else the
    standard library. A commit compresses its data in one call, never a stream, which is
    what libdeflate does (whole buffers only) and does fastest: on this project's pages
    (JSON records, ~1.9 KB of JSON Lines a page) level 6 in 10.8 µs a page against zlib's
    18.9, output 6% smaller; zlib-ng's level 6 took 17.3 µs and ISA-L has no level above 3.
    deflate 0.9 lets go of the GIL while it compresses, as zlib does, so the event loop
    runs meanwhile. Looked up once, at the first gzip commit: a plain JSON Lines run, or a
    ``streampage --version``, never imports it."""
    try:
        from deflate import gzip_compress
    except ImportError:
        return _zlib_gzip
    return gzip_compress


def gzip_library() -> str:
    """The library that writes gzip members here: ``"libdeflate"`` or ``"zlib"``."""
    return "zlib" if gzip_compressor() is _zlib_gzip else "libdeflate"


def _zlib_gzip(data: bytes, level: int) -> bytes:
    return gzip.compress(data, compresslevel=level)


def open_data(path: Path, offset: int, *, create: bool = False) -> int:
    """A data file opened for appending, cut back to its committed ``offset`` (what a
    killed process wrote past it is no commit). Missing committed bytes are an error: a
    file cut or replaced behind the journal's back cannot be resumed."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    fd = os.open(path, flags | (os.O_TRUNC if create else 0), 0o666)
    try:
        size = os.fstat(fd).st_size
        if size < offset:
            raise ConfigurationError(
                f"{path} holds {size} bytes, fewer than the {offset} its journal says were "
                "committed: it was changed by something else. Remove it and its hidden "
                "state folder, and run again"
            )
        if size > offset:
            os.ftruncate(fd, offset)
            os.fsync(fd)  # before it is published, or appended to and journalled
    except BaseException:
        os.close(fd)
        raise
    return fd

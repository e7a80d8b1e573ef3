"""Parquet with pyarrow: batches staged, then merged by an atomic rename; exactly once.

A Parquet file cannot be appended to (its footer, written last, indexes it), and a file
killed mid-write has no footer at all. So each batch is first staged as a Parquet file of
its own in a hidden state folder, and the output only ever appears or changes by an atomic
rename of a complete, fsynced file. Everything but the output lives in the state folder
(``state_dir`` in ``_lock.py``), created 0700; readers (pyarrow, DuckDB, Spark skip names
starting with ``.`` or ``_``) never see it.

``Parquet("out/items.parquet")``, one file::

    out/items.parquet                                the output: one plain Parquet file
    out/.items.parquet.streampage/lock               held by the run writing (see _lock.py)
    out/.items.parquet.streampage/journal            one line a commit, 0600
    out/.items.parquet.streampage/parts/part-000042.arrow     a staged batch
    out/.items.parquet.streampage/merging.parquet    a merge on its way to the output

``Parquet("out/items/")``, a folder (a path ending in ``/``, or an existing directory)::

    out/items/part-000042.parquet                    published parts: committed rows
    out/items/.streampage/lock, journal, parts/, merging.parquet

Each ``write(records)`` becomes one complete Arrow IPC file in ``parts/``, fsynced (a
staged part is read once, by the merge that publishes it, which writes the Parquet: staged
as Parquet it would be encoded and compressed twice; parts an earlier version staged as
Parquet are read as such). Each ``commit`` then appends ``{"name", "checkpoint", "parts"}``
to the journal and fsyncs it: from that moment the parts it names are committed. A staged
part no journal line names was written and not committed: the next ``open`` deletes it.
``into()`` hands a batch over with ``commit_staged``, which does both in one call to a
worker thread. The journal (its
torn last line, ``replace``, ``replaced`` and ``format`` lines, one checkpoint a target, its
compaction) is the one described in ``jsonl.py``.

One file: ``finish(name)``, at the end of a run that delivered every page, merges the
output and the committed parts into ``merging.parquet`` (the output's rows first, in row
groups of about ``row_group_rows``), fsyncs it and renames it over the output: the file
is rewritten once a run, not once a batch. ``close`` without ``finish`` (a failed run)
leaves the committed parts staged; a later run's ``finish`` merges them. The file records
in its metadata (``streampage.parts``) the last part it holds, so a kill between the
rename and the deletion of the merged parts cannot merge them twice.

A folder: committed parts are merged into one new part file, published by a rename, at
``close`` (after success and after failure), at ``finish``, and whenever the committed rows
not published yet reach ``part_rows``: a run makes one part (or one per ``part_rows``), not
one per batch. A published part is named after the last staged part it holds
(``part-000042.parquet``), and a staged part numbered at or below the highest published
one is in it already: a kill mid-publish never publishes rows twice. Published parts are
never read (only the last one's footer, for its schema) nor rewritten: adding to a folder
costs in proportion to the rows added. The next ``open`` publishes the committed rows of a
run that died.

``replace(name)`` keeps the old output until ``finish``: one file's merge then leaves the
old file out; a folder's ``finish`` journals ``replaced``, deletes the old parts and
publishes the new ones (a kill in between: ``open`` does the rest).

Records are dicts or msgspec Structs (their fields under their encoded names, defaults
included). The schema is given (a ``pyarrow.Schema``, or a msgspec Struct type whose fields
are mapped to Arrow types), or inferred from each batch and widened across batches (a
column that was all null gets the type of later values, ints widen to floats, a missing
column is null); a conflict (text in a column of numbers) fails that write, before its
commit. With a given schema, keys that are not in it are dropped, as ``pyarrow`` does.
Inferred, a folder's new parts start from the schema of its last part, so that its columns
go on. A record without any field (``{}``) is a row of nulls; while no record of the target
has a field, there are no columns to hold such rows, so they wait, committed: a folder does
not publish them, and ``finish`` fails and says so (records with fields, in this run or a
resumed one, or a ``schema``, give them their columns). A given schema needs a column.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import msgspec
import msgspec.inspect as mi

from .._errors import ConfigurationError
from ._base import Configured, missing_extra
from ._journal import Entry, Journal, Replay, checkpoint_json, last_commits, replay
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

if TYPE_CHECKING:
    import pyarrow

__all__ = ["Parquet"]

#: the key, in a merged file's metadata, of the last part number the file holds
_PARTS_KEY = b"streampage.parts"
_PART = re.compile(r"part-(\d+)\.parquet")
#: a staged part: Arrow IPC (``.arrow``), or Parquet (``.parquet``), as earlier versions staged
_STAGED = re.compile(r"part-(\d+)\.(?:arrow|parquet)")
#: values msgspec.to_builtins leaves alone, for pyarrow to store as native Arrow types
_NATIVE = (bytes, bytearray, _dt.datetime, _dt.date, _dt.time, _dt.timedelta)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise missing_extra("pyarrow", "parquet") from None
    return pyarrow


class Parquet(Configured):
    """Records into the Parquet file ``path``, merged when a run completes; or, when
    ``path`` ends with ``/`` or is a directory, into part files of that folder, each of
    about ``part_rows`` rows at most (a run's rows, or ``part_rows`` of them).

    ``schema``: a ``pyarrow.Schema``, a msgspec Struct type, or None (inferred from the
    records). ``compression``: any codec Parquet knows (``"zstd"``, ``"snappy"``, ``"none"``).
    ``row_group_rows``: the rows a merged row group gathers from the staged batches (a row
    group per batch would make a footer that grows with every batch, read by every reader
    and by the next open, and columns too short to compress well).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: pyarrow.Schema | type | None = None,
        compression: str = "zstd",
        part_rows: int = 1_000_000,
        row_group_rows: int = 131_072,
    ) -> None:
        self._configured(
            path,
            schema=schema,
            compression=compression,
            part_rows=part_rows,
            row_group_rows=row_group_rows,
        )
        self._pa = _pyarrow()
        self.path, self.folder, self.state = locate(path)
        self.journal = self.state / "journal"
        self.parts_dir = self.state / "parts"
        self._merging = self.state / "merging.parquet"
        self.compression = compression
        if part_rows < 1:
            raise ConfigurationError(f"Parquet(part_rows={part_rows}) must be at least 1")
        self.part_rows = part_rows
        if row_group_rows < 1:
            raise ConfigurationError(f"Parquet(row_group_rows={row_group_rows}) must be at least 1")
        self.row_group_rows = row_group_rows
        self._schema: Any = None  # the given schema, as a pyarrow.Schema
        if isinstance(schema, type) and issubclass(schema, msgspec.Struct):
            self._schema = struct_schema(schema)
        elif isinstance(schema, self._pa.Schema):
            self._schema = schema
        elif schema is not None:
            raise ConfigurationError(
                f"Parquet(schema={schema!r}): pass a pyarrow.Schema, a msgspec.Struct type, "
                "or None to infer it from the records"
            )
        if self._schema is not None and not len(self._schema):
            raise ConfigurationError(
                f"Parquet(schema={schema!r}) has no columns: a Parquet file holds no rows "
                "without columns. Name at least one, or pass None to infer them"
            )
        #: what the target holds, recorded in its journal: another format is refused
        self.format = "parquet"
        self._lock = FileLock(self.state / "lock", what=f"the checkpoint of {shown(self)}")
        self._journal = Journal(self.journal, self.format)
        self._struct_fields: dict[type, list[tuple[str, str]]] = {}
        self._reset()

    def __repr__(self) -> str:
        return f"Parquet({shown(self)!r})"

    def _reset(self) -> None:
        self._opened = False
        #: one file: the last part number it holds; a folder: its highest part number
        self._merged = 0
        self._committed: list[int] = []  # committed parts, not merged or published yet
        self._rows: dict[int, int] = {}  # the rows of each staged part
        self._names: dict[int, str] = {}  # the file name of each staged part
        self._pending: list[int] = []  # parts written since the last commit
        self._next_part = 1
        self._inferred: Any = None  # the schema of the rows so far, when none is given
        self._base: Any = None  # the schema of the output there already, when none is given
        self._replacing: int | None = None  # an unfinished replace: its first part
        self._opened_as = ""  # the checkpoint open() was asked for
        self._held: set[str] = set()  # the checkpoints committed since the last replace

    # ------------------------------------------------------------------ the Sink protocol

    async def open(self, name: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._open, name)

    async def replace(self, name: str) -> None:
        """Start the target over: the old output stays as it is until ``finish``."""
        await anyio.to_thread.run_sync(self._replace)

    async def write(self, records: Sequence[Any]) -> None:
        if self._opened:
            check_names(self, self._held, self._opened_as)
        if records:
            await anyio.to_thread.run_sync(self._write, records)

    def stage(self, records: Sequence[Any]) -> Sequence[Any]:
        """A page's records for ``commit_staged``, as they are: the batch becomes one
        Arrow table at its commit, in a worker thread (built a page at a time it would cost
        pyarrow's set-up per page)."""
        return records

    async def commit_staged(
        self, name: str, checkpoint: bytes, batches: Sequence[Sequence[Sequence[Any]]]
    ) -> None:
        """``write`` and ``commit`` at once, for ``batches`` of the records ``stage`` was
        given: each batch staged (a part each, fsynced), all journalled with the
        checkpoint, in one call to a worker thread."""
        await anyio.to_thread.run_sync(self._commit_staged, name, checkpoint, batches)

    async def commit(self, name: str, checkpoint: bytes) -> None:
        await anyio.to_thread.run_sync(self._commit, name, checkpoint)

    async def finish(self, name: str) -> None:
        """The run delivered every page: one file is merged, a folder's parts published."""
        if self._opened:
            await anyio.to_thread.run_sync(self._finish)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    # ------------------------------------------------------------------ open

    def _open(self, name: str) -> bytes | None:
        if self._opened:
            self._close()
        self._lock.acquire()  # before anything is read or deleted: one writer
        try:
            if not self.folder:
                stem = self.path.name
                migrate(self.path.with_name(stem + ".journal"), self.journal)
                migrate(self.path.with_name(stem + ".parts"), self.parts_dir)
                self.path.with_name(stem + ".merging").unlink(missing_ok=True)
            entries = self._journal.load()
            found = replay(entries or [])
            if entries is None:
                self._refuse_foreign()
                self._journal.create()
            else:
                check_format(self, found.format, self._formats_seen(found))
            self._journal.open(recorded=bool(found.format))
            if not self.parts_dir.is_dir():
                self.parts_dir.mkdir(mode=0o700)
                fsync_dir(self.state)  # so that the parts in it outlive a power cut
            for leftover in self.state.glob("merging*.parquet"):
                leftover.unlink()  # a merge killed before its rename
            replacing = found.replacing
            if self.folder:
                if replacing is None and found.replaced:
                    drop_below(self.path, _PART, found.replaced)  # a finish killed midway
                visible = part_files(self.path, _PART)
                merged = max(visible, default=0)
                if replacing is None and visible and self._schema is None:
                    self._base = self._footer_schema(self.path / visible[merged])
            else:
                merged = self._merged_of_output()
                if replacing is not None and merged >= replacing:
                    # finish() renamed the new file into place, killed before it said so
                    self._journal.append(Entry(replaced=replacing))
                    found.replacing, found.replaced = None, replacing
                    replacing = None
                if replacing is None and merged and self._schema is None:
                    self._base = self._footer_schema(self.path)
            named = sorted({k for entry in found.commits for k in entry.parts})
            committed = [k for k in named if k > merged]
            staged = part_files(self.parts_dir, _STAGED)
            for k, file in staged.items():
                if k not in committed:  # never committed, or merged or published already
                    (self.parts_dir / file).unlink()
            schemas = [] if self._base is None else [self._base]
            for k in committed:
                if k not in staged:
                    raise ConfigurationError(
                        f"{self._part(k)} is committed in {self.journal} but missing, so "
                        f"{shown(self)} cannot be completed: remove it and its hidden state "
                        f"folder {self.state}, and run again"
                    )
                self._names[k] = staged[k]
                rows, schema = self._part_meta(k)
                self._rows[k] = rows
                if self._schema is None:
                    schemas.append(schema)
            floor = (replacing or found.replaced or 1) - 1  # new parts come after a replace's
            self._next_part = max([floor, merged, *named, *staged]) + 1
            self._merged, self._committed, self._replacing = merged, committed, replacing
            if self._schema is None and schemas:
                self._inferred = _unify(self._pa, schemas)
            self._opened = True
            if self.folder and replacing is None:
                self._publish()  # the committed rows of a run that died become visible now
            self._opened_as, self._held = name, set(found.checkpoints)
            if self._journal.bloated():
                self._journal.compact(self._compacted(found))
            return found.checkpoints.get(name)
        except BaseException:
            self._shut()
            raise

    def _formats_seen(self, found: Replay) -> dict[str, str]:
        """The formats the target shows it holds: a folder's published parts, and, for a
        journal of an older version (it does not say), its commits and output file."""
        seen = part_formats(self.path) if self.folder else {}
        if found.format:
            return seen
        if not self.folder:
            fmt = file_format(self.path)
            if fmt is not None:
                seen.setdefault(fmt, self.path.name)
        if "jsonl" in found.kinds:
            if self.folder:
                for fmt, name in part_formats(self.parts_dir).items():
                    seen.setdefault(fmt, name)
            if not set(seen) - {"parquet"}:
                seen["jsonl"] = "its journal"
        return seen

    def _compacted(self, found: Replay) -> list[Entry]:
        """What the journal says, in few entries (``open``, after its recovery): the replace
        under way or done, the last checkpoint of each name, then the last commit's name
        and checkpoint carrying the committed parts not merged or published yet, and the
        last one that is (so that its loss is still an error)."""
        entries = []
        if self._replacing is not None:
            entries.append(Entry(replace=self._replacing))
        elif found.replaced:
            entries.append(Entry(replaced=found.replaced))
        commits = last_commits(found)
        if not commits:
            return entries
        last = commits.pop()
        done = [self._merged] if self._merged and self._replacing is None else []
        last.parts = sorted({*done, *self._committed})
        return [*entries, *commits, last]

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
        elif self._has_output():
            raise ConfigurationError(
                f"{self.path} exists and has no journal ({self.journal}) from an earlier "
                "run, so it cannot be resumed or added to: remove it or choose another path"
            )

    def _merged_of_output(self) -> int:
        """The last part number the output file holds (0: there is no output yet)."""
        if not self._has_output():
            return 0
        meta = self._pa.parquet.read_schema(self.path)
        found = (meta.metadata or {}).get(_PARTS_KEY)
        if found is None:
            raise ConfigurationError(
                f"{self.path} was not written by streampage's Parquet sink, though its "
                f"journal {self.journal} is there: remove both or choose another path"
            )
        return int(found)

    def _footer_schema(self, path: Path) -> Any:
        return self._pa.parquet.read_schema(path).remove_metadata()

    def _has_output(self) -> bool:
        """Whether ``path`` holds a file (an empty one, as a temporary file is, does not count)."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def _part(self, k: int) -> Path:
        """Staged part ``k``: Arrow IPC, or Parquet when an earlier version staged it."""
        return self.parts_dir / self._names.get(k, f"part-{k:06d}.arrow")

    def _part_meta(self, k: int) -> tuple[int, Any]:
        """The rows and the schema of staged part ``k``."""
        pa, part = self._pa, self._part(k)
        if part.suffix == ".parquet":
            meta = pa.parquet.read_metadata(part)
            return meta.num_rows, meta.schema.to_arrow_schema().remove_metadata()
        with pa.OSFile(str(part)) as f:
            reader = pa.ipc.open_file(f)
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
            return rows, reader.schema.remove_metadata()

    def _part_schema(self, k: int) -> Any:
        part = self._part(k)
        if part.suffix == ".parquet":
            return self._footer_schema(part)
        with self._pa.OSFile(str(part)) as f:
            return self._pa.ipc.open_file(f).schema.remove_metadata()

    def _read_part(self, k: int) -> Any:
        """Staged part ``k`` as a table, read whole into memory (no mapping is left open:
        the part is deleted once merged)."""
        pa, part = self._pa, self._part(k)
        if part.suffix == ".parquet":
            with pa.parquet.ParquetFile(part) as f:
                return f.read()
        with pa.OSFile(str(part)) as f:
            return pa.ipc.open_file(f).read_all()

    # ------------------------------------------------------------------ replace

    def _replace(self) -> None:
        if not self._opened:
            raise RuntimeError(f"{self!r}: open() first")
        self._drop_pending()
        if self.folder and self._replacing is None:
            self._publish()  # committed before the replace began: old output, shown
        first = self._next_part
        self._journal.append(Entry(replace=first))
        for k in self._committed:  # the old output's staged rows, or an earlier replace's
            self._part(k).unlink(missing_ok=True)
        self._committed, self._rows = [], {}
        self._held = set()  # whoever's they were, the target starts over
        self._replacing = first
        self._base = self._inferred = None  # the new output owes nothing to the old one

    # ------------------------------------------------------------------ write and commit

    def _write(self, records: Sequence[Any]) -> None:
        """Stage ``records`` as one part: an Arrow IPC file, fsynced. A part is read once,
        by the merge that publishes it, and rewritten there in Parquet (row groups of
        ``row_group_rows``, ``compression``): staged as Parquet it would be encoded and
        compressed twice."""
        if not self._opened:
            raise RuntimeError(f"{self!r}: open() first")
        pa = self._pa
        inferred = None
        try:
            table = self._table(records)
            if self._schema is None:
                inferred = table.schema
                if self._inferred is not None:
                    inferred = _unify(pa, [self._inferred, inferred])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"the records do not fit one Parquet schema ({exc}); pass Parquet(schema=...), "
                "a pyarrow.Schema or a msgspec.Struct type"
            ) from exc
        k = self._next_part
        name = f"part-{k:06d}.arrow"
        with open(self.parts_dir / name, "wb") as f:
            with pa.ipc.new_file(f, table.schema) as writer:
                writer.write_table(table)
            f.flush()
            os.fsync(f.fileno())
        self._names[k] = name
        self._next_part = k + 1
        self._pending.append(k)
        self._rows[k] = table.num_rows
        if self._schema is None:
            self._inferred = inferred

    def _table(self, records: Sequence[Any]) -> Any:
        """``records`` as an Arrow table. Dicts of JSON's types (what a decoded page holds)
        go to pyarrow as they are; anything else (Structs, dates, Decimals, UUIDs, enums...)
        first becomes builtins (``msgspec.to_builtins``), which is what every record went
        through before. The shortcut is taken only where it gives the same table: when
        pyarrow takes the records and every column is of JSON's types (a Decimal, a UUID
        or bytes would make another column than their builtins do)."""
        pa = self._pa
        if all(type(r) is dict for r in records):
            try:
                table = _from_pylist(pa, records, self._schema)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                table = None  # the builtins below say why, or convert what pyarrow cannot
            if table is not None and all(_plain(pa, field.type) for field in table.schema):
                return table
        rows = msgspec.to_builtins(
            [self._row(r) if isinstance(r, msgspec.Struct) else r for r in records],
            builtin_types=_NATIVE,
        )
        return _from_pylist(pa, rows, self._schema)

    def _row(self, record: msgspec.Struct) -> dict[str, Any]:
        """A Struct as a dict under its encoded names, every field (even omitted defaults)."""
        cls = type(record)
        fields = self._struct_fields.get(cls)
        if fields is None:
            fields = [(f.name, f.encode_name) for f in msgspec.structs.fields(cls)]
            self._struct_fields[cls] = fields
        return {key: getattr(record, attr) for attr, key in fields}

    def _commit_staged(
        self, name: str, checkpoint: bytes, batches: Sequence[Sequence[Sequence[Any]]]
    ) -> None:
        if not self._opened:
            raise RuntimeError(f"{self!r}: open() first")
        check_names(self, self._held, name)
        for batch in batches:
            records = [r for page in batch for r in page]
            if records:
                self._write(records)
        self._commit(name, checkpoint)

    def _commit(self, name: str, checkpoint: bytes) -> None:
        if not self._opened:
            raise RuntimeError(f"{self!r}: open() first")
        check_names(self, self._held, name)
        entry = Entry(name=name, checkpoint=checkpoint_json(checkpoint), parts=self._pending)
        if self._pending:
            fsync_dir(self.parts_dir)  # the parts' names are durable before the journal names them
        self._journal.append(entry)
        self._held.add(name)
        self._committed.extend(self._pending)
        self._pending = []
        unpublished = sum(self._rows[k] for k in self._committed)
        if self.folder and self._replacing is None and unpublished >= self.part_rows:
            self._publish()

    def _drop_pending(self) -> None:
        for k in self._pending:  # uncommitted: discarded, as after a crash
            self._part(k).unlink(missing_ok=True)
            self._rows.pop(k, None)
        self._pending = []

    # ------------------------------------------------------------------ finish and close

    def _finish(self) -> None:
        self._drop_pending()
        if not self.folder:
            self._merge()
            return
        if self._replacing is None:
            self._publish()
            if self._committed:  # left unpublished: rows without columns (_merge_parts)
                raise self._columnless()
            return
        # The new parts are merged (hidden) before the old ones go, so that a reader never
        # waits out a merge on an empty folder; the journal then says the replace is done
        # (from here a kill is rolled forward by open), the old parts go and the new come.
        merged = self._merge_parts()
        if self._committed and not merged:
            raise self._columnless()  # before the old output goes
        self._journal.append(Entry(replaced=self._replacing))
        drop_below(self.path, _PART, self._replacing)
        self._replacing = None
        self._place(merged)

    def _columnless(self) -> ValueError:
        """The error of a ``finish`` whose committed records, and the output's, all lack
        fields: no Parquet file holds rows without columns. They wait, committed and
        staged, for a batch with fields (then they are rows of nulls); a folder does not
        publish them meanwhile."""
        waiting = sum(self._rows.get(k, 0) for k in self._committed)
        return ValueError(
            f"{waiting} committed records have no fields ({{}}), and no record of the output "
            "has any: a Parquet file holds no rows without columns. They stay committed, and "
            "become rows of nulls when records with fields come (a later run, resume=True), "
            "or pass Parquet(schema=...)"
        )

    def _close(self) -> None:
        try:
            self._drop_pending()
            if self._opened and self.folder and self._replacing is None:
                self._publish()
        finally:
            self._shut()

    def _shut(self) -> None:
        """Let go of the journal and the lock, as a killed process would."""
        self._journal.close()
        self._lock.release()
        self._reset()

    def _merge(self) -> None:
        """One file: merge the output (unless replaced) and the committed parts into
        ``merging.parquet`` and rename it over the output."""
        parts = self._committed
        replacing = self._replacing
        exists = self._has_output()
        if not parts and replacing is None and (exists or self._schema is None):
            return  # nothing new, or nothing at all and no schema to write an empty file with
        if not parts and replacing is not None and self._schema is None:
            # The new output has no rows and no schema to write: no file, as for a first
            # run that found no records.
            self.path.unlink(missing_ok=True)
            fsync_dir(self.path.parent)
            self._journal.append(Entry(replaced=replacing))
            self._replacing = None
            return
        old = self._pa.parquet.ParquetFile(self.path) if exists and replacing is None else None
        last = max([self._merged if replacing is None else replacing, *parts])
        try:
            try:
                base = None if old is None else old.schema_arrow.remove_metadata()
                target = self._target(parts, base)
                if not len(target):
                    raise self._columnless()
                self._write_merged(parts, target, last, old)
            finally:
                if old is not None:
                    old.close()  # before the rename: Windows renames no open file
            os.replace(self._merging, self.path)
        except Exception:
            self._merging.unlink(missing_ok=True)  # a kill leaves it instead: open removes it
            raise
        fsync_dir(self.path.parent)
        if replacing is not None:
            self._journal.append(Entry(replaced=replacing))
            self._replacing = None
        self._merged, self._committed = last, []
        for k in parts:
            self._part(k).unlink(missing_ok=True)
            self._rows.pop(k, None)

    def _publish(self) -> None:
        """A folder: merge the committed parts into new part files (one per ``part_rows``
        rows), each renamed into the folder when whole and fsynced, in order."""
        self._place(self._merge_parts())

    def _merge_parts(self) -> list[tuple[list[int], Path]]:
        """The committed parts merged into hidden files (one per ``part_rows`` rows), each
        whole and fsynced: (the staged parts it holds, its path)."""
        parts = self._committed
        if not parts:
            return []
        target = self._target(parts, self._base)
        if not len(target):
            return []  # no record has a field yet: they wait for one (see _columnless)
        chunks: list[list[int]] = [[]]
        rows = 0
        for k in parts:
            if rows >= self.part_rows:
                chunks.append([])
                rows = 0
            chunks[-1].append(k)
            rows += self._rows.get(k, 0)
        merged = []
        try:
            for chunk in chunks:
                into = self.state / f"merging-{chunk[-1]:06d}.parquet"
                merged.append((chunk, into))
                self._write_merged(chunk, target, chunk[-1], None, into)
        except Exception:
            for _, into in merged:
                into.unlink(missing_ok=True)  # a kill leaves them instead: open removes them
            raise
        if self._schema is None:
            self._base = target  # the next parts go on with these columns
        return merged

    def _place(self, merged: list[tuple[list[int], Path]]) -> None:
        """Rename merged files into the folder, in order, and delete the staged parts each
        holds (a kill before that: open finds them below the part's number)."""
        for chunk, into in merged:
            last = chunk[-1]
            os.replace(into, self.path / f"part-{last:06d}.parquet")
            fsync_dir(self.path)
            self._merged = last
            self._committed = [k for k in self._committed if k > last]
            for k in chunk:
                self._part(k).unlink(missing_ok=True)
                self._rows.pop(k, None)

    def _target(self, parts: list[int], base: Any) -> Any:
        """The schema of a merge: the given one, or the parts' (and ``base``'s) unified."""
        if self._schema is not None:
            return self._schema
        read = self._part_schema
        return _unify(self._pa, [s for s in [base] if s is not None] + [read(k) for k in parts])

    def _write_merged(
        self, parts: list[int], target: Any, last: int, old: Any, into: Path | None = None
    ) -> None:
        """Write ``old``'s row groups, then the ``parts``, to ``into`` (``merging.parquet``),
        fsynced, recording ``last`` (the last part number it holds) in its metadata."""
        pa = self._pa
        metadata = {**(target.metadata or {}), _PARTS_KEY: str(last).encode()}
        with open(into or self._merging, "wb") as f:
            writer = pa.parquet.ParquetWriter(
                f, target.with_metadata(metadata), compression=self.compression
            )
            groups = _Groups(pa, writer, target, self.row_group_rows)
            try:
                if old is not None:
                    for i in range(old.num_row_groups):
                        groups.add(old.read_row_group(i))
                for k in parts:
                    groups.add(self._read_part(k))
                groups.flush()
            finally:
                writer.close()
            f.flush()
            os.fsync(f.fileno())


class _Groups:
    """Tables on their way into a merged file, gathered into row groups of about ``rows``
    rows (a table larger than that is a row group of its own), each made to fit the
    file's schema."""

    def __init__(self, pa: Any, writer: Any, schema: Any, rows: int) -> None:
        self._pa, self._writer, self._schema, self._target = pa, writer, schema, rows
        self._held: list[Any] = []
        self._rows = 0

    def add(self, table: Any) -> None:
        if table.num_rows == 0:
            return
        self._held.append(_conform(self._pa, table, self._schema))
        self._rows += table.num_rows
        if self._rows >= self._target:
            self.flush()

    def flush(self) -> None:
        if not self._held:
            return
        table = self._pa.concat_tables(self._held)
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._held, self._rows = [], 0


def _from_pylist(pa: Any, rows: Sequence[Any], schema: Any) -> Any:
    """``pa.Table.from_pylist``, whose columns, without a schema, are the keys of the first
    row alone: a field that first row lacks would be dropped from the whole batch, without
    a word. The first row is given every key of the batch (None where it has none: what a
    missing key is anyway)."""
    if schema is None and rows and type(rows[0]) is dict:
        first = rows[0]
        names = dict.fromkeys(first)
        for row in rows:
            if type(row) is dict and not row.keys() <= names.keys():  # (no set is built)
                names.update(dict.fromkeys(row))
        if len(names) > len(first):
            rows = [{name: first.get(name) for name in names}, *rows[1:]]
    table = pa.Table.from_pylist(rows, schema=schema)
    if table.num_rows != len(rows):
        # records without a field ({}) make a table without columns, and pyarrow gives it
        # no rows: they would be committed and lost. Rows without columns, they become
        # rows of nulls once a batch has columns (see _conform, _columnless).
        table = pa.table({"_": pa.nulls(len(rows))}).drop_columns(["_"])
    return table


def _conform(pa: Any, table: Any, schema: Any) -> Any:
    """``table`` with its columns made to fit ``schema`` (cast, or null when missing)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _unify(pa: Any, schemas: list[Any]) -> Any:
    return pa.unify_schemas(schemas, promote_options="permissive")


def _plain(pa: Any, t: Any) -> bool:
    """Whether a column of type ``t`` holds JSON's types alone (null, bool, numbers,
    text, and lists and structs of them): what Python's builtins become either way."""
    types = pa.types
    if types.is_list(t) or types.is_large_list(t):
        return _plain(pa, t.value_type)
    if types.is_struct(t):
        return all(_plain(pa, t.field(i).type) for i in range(t.num_fields))
    return bool(
        types.is_null(t)
        or types.is_boolean(t)
        or types.is_integer(t)
        or types.is_floating(t)
        or types.is_string(t)
        or types.is_large_string(t)
    )


# ---------------------------------------------------------------------- Struct → Arrow


def struct_schema(cls: type[msgspec.Struct]) -> pyarrow.Schema:
    """The Arrow schema of a msgspec Struct type: a column a field, under its encoded name."""
    pa = _pyarrow()
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return pa.schema(_fields(pa, info, cls.__name__))


def _fields(pa: Any, info: mi.StructType, where: str) -> list[Any]:
    if info.array_like:
        raise ConfigurationError(
            f"Parquet(schema=...): {where} is array_like, so its records are lists, not "
            "columns; pass a pyarrow.Schema"
        )
    return _struct_of(pa, info.fields, where)


def _struct_of(pa: Any, fields: Sequence[mi.Field], where: str) -> list[Any]:
    return [pa.field(f.encode_name, _arrow_type(pa, f.type, f"{where}.{f.name}")) for f in fields]


def _arrow_type(pa: Any, t: mi.Type, where: str) -> Any:
    """The Arrow type of a msgspec type, as ``msgspec.to_builtins`` delivers its values."""
    simple = {
        mi.IntType: pa.int64(),
        mi.FloatType: pa.float64(),
        mi.StrType: pa.string(),
        mi.BoolType: pa.bool_(),
        mi.BytesType: pa.binary(),
        mi.ByteArrayType: pa.binary(),
        mi.DateType: pa.date32(),
        mi.TimeType: pa.time64("us"),
        mi.TimeDeltaType: pa.duration("us"),
        mi.UUIDType: pa.string(),  # to_builtins gives its text
        mi.DecimalType: pa.string(),  # exact, whatever its precision
        mi.NoneType: pa.null(),
    }
    found = simple.get(type(t))
    if found is not None:
        return found
    if isinstance(t, mi.DateTimeType):
        return pa.timestamp("us") if t.tz is False else pa.timestamp("us", tz="UTC")
    if isinstance(t, mi.Metadata):
        return _arrow_type(pa, t.type, where)
    if isinstance(t, mi.UnionType):
        rest = [u for u in t.types if not isinstance(u, mi.NoneType)]
        if len(rest) == 1:  # X | None: a nullable X (every column is nullable)
            return _arrow_type(pa, rest[0], where)
    elif isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        return pa.list_(_arrow_type(pa, t.item_type, where + "[]"))
    elif isinstance(t, mi.TupleType) and t.item_types:
        items = {str(_arrow_type(pa, i, where + "[]")) for i in t.item_types}
        if len(items) == 1:
            return pa.list_(_arrow_type(pa, t.item_types[0], where + "[]"))
    elif isinstance(t, mi.DictType):
        key = _arrow_type(pa, t.key_type, where + "{key}")
        return pa.map_(key, _arrow_type(pa, t.value_type, where + "{}"))
    elif isinstance(t, mi.StructType):
        return pa.struct(_fields(pa, t, where))
    elif isinstance(t, mi.TypedDictType | mi.DataclassType):
        return pa.struct(_struct_of(pa, t.fields, where))
    elif isinstance(t, mi.LiteralType | mi.EnumType):
        values = t.values if isinstance(t, mi.LiteralType) else [m.value for m in t.cls]
        if values and all(isinstance(v, str) for v in values):
            return pa.string()
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return pa.int64()
    raise ConfigurationError(
        f"Parquet(schema=...): no Arrow type for {where} ({t!r}); pass a pyarrow.Schema"
    )

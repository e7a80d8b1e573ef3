"""Parquet with pyarrow: one row group per committed batch, exactly once under SIGKILL.

A Parquet file cannot be appended to (its footer, written last, indexes it), and a file
killed mid-write has no footer at all. So while a stream runs, the output is kept in pieces
beside ``path``, and ``path`` itself only ever appears or changes by an atomic rename:

``<path>.parts/part-000042.parquet``
    Each ``write(records)`` becomes one complete Parquet file (one row group), fsynced.
``<path>.journal``
    Each ``commit`` then appends ``{"name", "parts", "checkpoint"}`` (one JSON line) and
    fsyncs it: from that moment the parts it names are committed. A part file that no
    journal line names was written and not committed: the next ``open`` deletes it. A torn
    last line (a crash mid-append) is not a commit; ``open`` cuts the journal back to the end
    of the last whole line, so that later commits append cleanly.
``<path>``
    ``close()`` (called after every run, failed or not) merges the committed parts that
    ``path`` does not hold yet into ``<path>.merging``, fsyncs it and renames it over
    ``path`` with ``os.replace``: one row group per part, the rows of the old ``path`` first.
    The file records in its key-value metadata (``streampage.parts``) the last part it
    holds, so a crash between the rename and the deletion of the merged parts cannot merge
    them twice. After ``close``, ``path`` is a plain Parquet file with every committed row.
    A merge that fails (disk full) or is killed leaves ``path`` as it was and the parts in
    place; the next run's ``close`` merges them.

The journal stays beside ``path`` after a run (as with ``JSONLines``): it is what lets
``resume=True`` go on, adding row groups to the same ``path``. A ``path`` that exists
without its journal was not written by this sink (or its journal was removed): ``open``
refuses it rather than overwrite it. After a SIGKILL, ``path`` holds what the last
``close`` merged and the parts directory the rest; the next run (with ``resume=True``)
merges it all when it closes.

Records are dicts or msgspec Structs (their fields under their encoded names, defaults
included). The schema is given (a ``pyarrow.Schema``, or a msgspec Struct type whose fields
are mapped to Arrow types), or inferred from each batch and widened across batches (a
column that was all null gets the type of later values, ints widen to floats, a missing
column is null); a conflict (text in a column of numbers) fails that write, before its
commit. With a given schema, keys that are not in it are dropped, as ``pyarrow`` does.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import anyio.to_thread
import msgspec
import msgspec.inspect as mi

from .._errors import ConfigurationError
from ._base import missing_extra

if TYPE_CHECKING:
    import pyarrow

__all__ = ["Parquet"]

#: the key, in the merged file's metadata, of the last part number the file holds
_PARTS_KEY = b"streampage.parts"
_PART_NAME = re.compile(r"part-(\d+)\.parquet")
#: values msgspec.to_builtins leaves alone, for pyarrow to store as native Arrow types
_NATIVE = (bytes, bytearray, _dt.datetime, _dt.date, _dt.time, _dt.timedelta)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise missing_extra("pyarrow", "parquet") from None
    return pyarrow


class _Entry(msgspec.Struct, omit_defaults=True):
    """One journal line: a commit of ``parts`` with ``checkpoint`` under ``name``."""

    name: str
    checkpoint: msgspec.Raw
    parts: list[int] = []


class Parquet:
    """Records into the Parquet file ``path``, a row group per committed batch.

    ``schema``: a ``pyarrow.Schema``, a msgspec Struct type, or None (inferred from the
    records). ``compression``: any codec Parquet knows (``"zstd"``, ``"snappy"``, ``"none"``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: pyarrow.Schema | type | None = None,
        compression: str = "zstd",
    ) -> None:
        self._pa = _pyarrow()
        self.path = Path(path)
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.journal = self.path.with_name(self.path.name + ".journal")
        self._merging = self.path.with_name(self.path.name + ".merging")
        self.compression = compression
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
        self._struct_fields: dict[type, list[tuple[str, str]]] = {}
        self._reset()

    def __repr__(self) -> str:
        return f"Parquet({str(self.path)!r})"

    def _reset(self) -> None:
        self._opened = False
        self._journal_file: BinaryIO | None = None
        self._merged = 0  # the last part number ``path`` holds
        self._committed: list[int] = []  # committed parts not in ``path`` yet
        self._pending: list[int] = []  # parts written since the last commit
        self._next_part = 1
        self._inferred: Any = None  # the schema of the rows so far, when none is given

    # ------------------------------------------------------------------ the Sink protocol

    async def open(self, name: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._open, name)

    async def write(self, records: Sequence[Any]) -> None:
        if records:
            await anyio.to_thread.run_sync(self._write, records)

    async def commit(self, name: str, checkpoint: bytes) -> None:
        await anyio.to_thread.run_sync(self._commit, name, checkpoint)

    async def close(self) -> None:
        if self._opened:
            await anyio.to_thread.run_sync(self._close)

    # ------------------------------------------------------------------ open

    def _open(self, name: str) -> bytes | None:
        if self._opened:
            self._close()
        pa = self._pa
        entries: list[_Entry] = []
        if self.journal.exists():
            entries = self._read_journal()
        elif self._has_output():
            raise ConfigurationError(
                f"{self.path} exists and has no journal ({self.journal.name}) from an earlier "
                "run, so it cannot be resumed or added to: remove it or choose another path"
            )
        merged, schemas = 0, []
        if self._has_output():
            meta = pa.parquet.read_schema(self.path)
            found = (meta.metadata or {}).get(_PARTS_KEY)
            if found is None:
                raise ConfigurationError(
                    f"{self.path} was not written by streampage's Parquet sink, though "
                    f"{self.journal.name} is beside it: remove both or choose another path"
                )
            merged = int(found)
            schemas.append(meta.remove_metadata())
        committed = sorted({k for entry in entries for k in entry.parts if k > merged})
        if not self.parts_dir.is_dir():
            self.parts_dir.mkdir(parents=True)
            _fsync_dir(self.parts_dir.parent)  # so that the parts in it outlive a power cut
        for part in self.parts_dir.iterdir():
            match = _PART_NAME.fullmatch(part.name)
            if match and int(match[1]) not in committed:
                part.unlink()  # written and never committed, or merged into ``path`` already
        self._merging.unlink(missing_ok=True)  # a merge that was killed before its rename
        for k in committed:
            part = self._part(k)
            if not part.exists():
                raise ConfigurationError(
                    f"{part} is committed in {self.journal.name} but missing, so {self.path} "
                    "cannot be completed: remove the journal, the parts and the file, and "
                    "run again"
                )
            if self._schema is None:
                schemas.append(pa.parquet.read_schema(part).remove_metadata())
        if not self.journal.exists():
            self.journal.touch(mode=0o600)  # it holds checkpoints: the owner's alone
            _fsync_dir(self.journal.parent)
        self._journal_file = open(self.journal, "ab")  # noqa: SIM115 - held open across calls
        self._merged = merged
        self._committed = committed
        self._next_part = max([merged, *committed]) + 1
        if self._schema is None and schemas:
            self._inferred = _unify(pa, schemas)
        self._opened = True
        for entry in reversed(entries):
            if entry.name == name:
                return bytes(entry.checkpoint)
        return None

    def _read_journal(self) -> list[_Entry]:
        """The whole lines of the journal; a torn last line is cut off the file."""
        data = self.journal.read_bytes()
        entries: list[_Entry] = []
        good = 0
        decode = msgspec.json.Decoder(_Entry).decode
        while good < len(data):
            end = data.find(b"\n", good)
            if end < 0:
                break  # no newline: the append was cut short, the commit did not happen
            try:
                entries.append(decode(data[good:end]))
            except msgspec.DecodeError:
                break
            good = end + 1
        if good < len(data):
            with open(self.journal, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
        return entries

    def _has_output(self) -> bool:
        """Whether ``path`` holds a file (an empty one, as a temporary file is, does not count)."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def _part(self, k: int) -> Path:
        return self.parts_dir / f"part-{k:06d}.parquet"

    # ------------------------------------------------------------------ write and commit

    def _write(self, records: Sequence[Any]) -> None:
        if not self._opened:
            raise RuntimeError(f"{self!r}: open() first")
        pa = self._pa
        rows = msgspec.to_builtins(
            [self._row(r) if isinstance(r, msgspec.Struct) else r for r in records],
            builtin_types=_NATIVE,
        )
        inferred = None
        try:
            table = pa.Table.from_pylist(rows, schema=self._schema)
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
        with open(self._part(k), "wb") as f:
            pa.parquet.write_table(
                table, f, row_group_size=max(1, table.num_rows), compression=self.compression
            )
            f.flush()
            os.fsync(f.fileno())
        self._next_part = k + 1
        self._pending.append(k)
        if self._schema is None:
            self._inferred = inferred

    def _row(self, record: msgspec.Struct) -> dict[str, Any]:
        """A Struct as a dict under its encoded names, every field (even omitted defaults)."""
        cls = type(record)
        fields = self._struct_fields.get(cls)
        if fields is None:
            fields = [(f.name, f.encode_name) for f in msgspec.structs.fields(cls)]
            self._struct_fields[cls] = fields
        return {key: getattr(record, attr) for attr, key in fields}

    def _commit(self, name: str, checkpoint: bytes) -> None:
        journal = self._journal_file
        if journal is None:
            raise RuntimeError(f"{self!r}: open() first")
        try:
            msgspec.json.decode(checkpoint)
        except msgspec.DecodeError:
            raise ValueError(f"{self!r}: a checkpoint must be JSON, got {checkpoint!r}") from None
        if self._pending:
            _fsync_dir(self.parts_dir)  # the parts' names are durable before the journal names them
        entry = _Entry(name=name, checkpoint=msgspec.Raw(checkpoint), parts=self._pending)
        journal.write(msgspec.json.encode(entry) + b"\n")
        journal.flush()
        os.fsync(journal.fileno())
        self._committed.extend(self._pending)
        self._pending = []

    # ------------------------------------------------------------------ close: the merge

    def _close(self) -> None:
        try:
            if self._journal_file is not None:
                self._journal_file.close()
            for k in self._pending:  # uncommitted: discarded, as after a crash
                self._part(k).unlink(missing_ok=True)
            self._pending = []
            self._merge()
        finally:
            self._reset()

    def _merge(self) -> None:
        pa = self._pa
        parts = self._committed
        exists = self._has_output()
        if not parts and (exists or self._schema is None):
            self._remove_parts_dir()
            return  # nothing new, or nothing at all and no schema to write an empty file with
        old = pa.parquet.ParquetFile(self.path) if exists else None
        try:
            try:
                last = self._write_merged(parts, old)
            finally:
                if old is not None:
                    old.close()  # before the rename: Windows renames no open file
            os.replace(self._merging, self.path)
        except Exception:
            self._merging.unlink(missing_ok=True)  # a kill leaves it instead: open removes it
            raise
        _fsync_dir(self.path.parent)
        self._merged, self._committed = last, []
        for k in parts:
            self._part(k).unlink(missing_ok=True)
        self._remove_parts_dir()

    def _write_merged(self, parts: list[int], old: Any) -> int:
        """Write ``old``'s row groups and then the ``parts`` to ``<path>.merging``, fsynced;
        return the last part number it holds."""
        pa = self._pa
        target = self._schema
        if target is None:
            schemas = [pa.parquet.read_schema(self._part(k)) for k in parts]
            if old is not None:
                schemas.insert(0, old.schema_arrow)
            target = _unify(pa, [s.remove_metadata() for s in schemas])
        last = max([self._merged, *parts])
        metadata = {**(target.metadata or {}), _PARTS_KEY: str(last).encode()}
        with open(self._merging, "wb") as f:
            writer = pa.parquet.ParquetWriter(
                f, target.with_metadata(metadata), compression=self.compression
            )
            try:
                if old is not None:
                    for i in range(old.num_row_groups):
                        _write_group(pa, writer, old.read_row_group(i), target)
                for k in parts:
                    with pa.parquet.ParquetFile(self._part(k)) as part:
                        _write_group(pa, writer, part.read(), target)
            finally:
                writer.close()
            f.flush()
            os.fsync(f.fileno())
        return last

    def _remove_parts_dir(self) -> None:
        with contextlib.suppress(OSError):  # not empty (someone else's file), or gone
            self.parts_dir.rmdir()


def _write_group(pa: Any, writer: Any, table: Any, schema: Any) -> None:
    """Write ``table`` as one row group, its columns made to fit ``schema``."""
    if table.num_rows == 0:
        return
    if not table.schema.equals(schema, check_metadata=False):
        columns = []
        for field in schema:
            if field.name in table.column_names:
                column = table.column(field.name)
                columns.append(column if column.type == field.type else column.cast(field.type))
            else:
                columns.append(pa.nulls(table.num_rows, field.type))
        table = pa.Table.from_arrays(columns, schema=schema)
    writer.write_table(table, row_group_size=table.num_rows)


def _unify(pa: Any, schemas: list[Any]) -> Any:
    return pa.unify_schemas(schemas, promote_options="permissive")


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return  # directories cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

"""PostgreSQL through asyncpg: records by COPY, checkpoint in the same transaction.

The first ``write`` after a commit opens a transaction; each ``write`` COPYs its records
into the table (one COPY, not an INSERT a row); ``commit`` upserts the checkpoint row in
that same transaction and commits it. After a crash the table holds exactly the records of
the pages its checkpoint names: an open transaction dies with its connection. ``into()``
hands a batch over with ``commit_staged``, which does both: one COPY of what ``stage`` made
of each page as it arrived (the records' JSON, in COPY's text format), the checkpoint, the
COMMIT; the stream goes on fetching while the database commits.

Without ``columns`` the table is ``(id bigserial primary key, data jsonb)``, one record a
row. With ``columns=SomeStruct`` (a ``msgspec.Struct``) it has one column per field
(int: bigint, float: double precision, str: text, bool: boolean, anything else: jsonb;
NOT NULL unless the field may be None), and records (dicts, or Structs) are converted to
that Struct first: validated, defaults filled, unknown keys dropped.

Upserts. With ``primary_key="id"`` (a top-level field of the records; a tuple of fields for
a composite key) the table holds one row per key, the newest version of its record: a record
changed between runs is there once, in its new form. COPY cannot upsert, so the records are
COPYed into a temporary table of the sink's own session (``pg_temp.streampage_staging``,
created by ``open``, emptied by every commit: ``ON COMMIT DELETE ROWS``), and the commit
moves them into the table with one ``INSERT ... SELECT DISTINCT ON (key) ... ORDER BY key,
seq DESC ON CONFLICT (key) DO UPDATE``, in the checkpoint's transaction: rows and checkpoint
are still committed together or not at all, and a session that dies takes its staged rows
with it. ``DISTINCT ON`` keeps the last staged version of each key (``seq``: the order of
delivery), as ``ON CONFLICT DO UPDATE`` refuses to touch one row twice in a statement (the
same key twice in a batch); it also inserts in key order, so that two runs into one table
(two checkpoints, the shards of a job) lock rows in one order. The conflict target needs a
unique index, created with the table: without ``columns``, ``<table>_<key>_key`` on the
expression ``(data ->> 'id')`` (the key's JSON text: ``1`` and ``"1"`` are one key; a query
``WHERE data ->> 'id' = '42'`` uses it too), beside the ``id bigserial`` column, which is
then the row's first insertion, not its last change; with ``columns``, the key is a column
and the table's PRIMARY KEY. A table that was there without such an index is refused by
``open`` (the server plans the upsert, ``EXPLAIN``, and finds nothing to conflict on), with
the ``CREATE UNIQUE INDEX`` that adds it. A record without its key, or with null in it, is
refused by ``stage``, before anything of its batch is sent: PostgreSQL would insert it
again and again (a unique index holds any number of NULLs). Without ``primary_key`` the
records go by plain COPY into the table, as before.

Checkpoints are rows of ``streampage_checkpoints`` in the table's schema, keyed
``"<table>/<name>"``: the same checkpoint name on two tables is two checkpoints. An
unqualified table name is resolved once, at ``open``, to a schema: the one the server finds
the table in through ``search_path``, or (a table to create) the one ``CREATE TABLE`` would
put it in, the first schema of ``search_path`` that exists. From then on every statement
names that schema: the table, its ``streampage_checkpoints``, the COPY and the lock keys.
``items`` and ``public.items`` are one table, one set of checkpoints and one set of locks,
whatever ``search_path`` finds first.

One writer per checkpoint: ``open`` takes a session-level advisory lock
(``pg_try_advisory_lock``) keyed by a 64-bit hash of ``schema.table/name``, on the sink's
own connection, and holds it until ``close``. A session's locks end with it, so a run that
dies, by SIGKILL too, frees its checkpoint as soon as the server sees its connection close
(at once for a dead process: its kernel closes the socket; a lost host or network is
noticed by TCP keepalive, ``tcp_keepalives_idle`` on the server). A second run gets
``CheckpointInUseError``, naming the holder from ``pg_locks`` and ``pg_stat_activity``:
the sink connects with ``application_name`` ``streampage pid P on H`` (never the DSN),
and the holder's ``backend_start`` is the since. Needs a session of its own: through a
pooler in transaction mode (PgBouncer ``pool_mode=transaction``) a session lock means
nothing, so connect to the server, or to a session-mode pool.

One replace per table, and no other run beside it. A replace empties the table and drops
every checkpoint of it, those of other checkpoint names included: a run on another
checkpoint that went on writing would commit pages whose rows are gone. So before its
checkpoint's lock, ``open`` takes a *shared* advisory lock on the table
(``pg_try_advisory_lock_shared``, keyed by ``schema.table``), held until ``close`` too: two
runs on two checkpoints of one table still write at once. ``replace`` takes that key
exclusively (``pg_try_advisory_lock``: a session's own shared lock is no obstacle), without
waiting: when another run holds the table, it fails at once with ``CheckpointInUseError``,
before anything is deleted, naming the other sessions (and their checkpoints, those
committed once: the checkpoint lock keys they hold are matched against the names stored
for the table). A replacing run keeps the table to itself until ``close``: a run that
starts meanwhile fails at once in ``open``, naming it.

``replace(name)`` starts the table over in the first commit's transaction (DELETE, not
TRUNCATE: TRUNCATE is not MVCC-safe, so a reader whose snapshot predates it would find the
table empty, and it locks readers out until the commit). ``finish(name)`` has nothing to
do: every commit is already the table's final state.

Needs ``pip install 'streampage[postgres]'``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import msgspec.inspect as mi
from yarl import URL

from .._errors import ConfigurationError, SinkError, StreamPageError
from .._redact import REDACTED, redact_url
from ._base import Configured, check_keys, key_fields, missing_extra
from ._lock import holder_text, in_use

__all__ = ["Postgres"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_CHECKPOINTS = "streampage_checkpoints"
#: the session's own table that an upsert's records are COPYed into (pg_temp: per connection)
_STAGING = "streampage_staging"
#: the staging table's order of delivery: a name no field of a Struct can have
_SEQ = '"streampage$seq"'

_SCALARS: dict[type[mi.Type], str] = {
    mi.IntType: "bigint",
    mi.FloatType: "double precision",
    mi.StrType: "text",
    mi.BoolType: "boolean",
}


#: what a sink's connection is called in pg_stat_activity: its process, never its DSN
_APPLICATION = re.compile(r"streampage pid (\d+) on (.*)")


def application_name() -> str:
    """``streampage pid P on HOST``, cut to the 63 bytes PostgreSQL keeps (NAMEDATALEN)."""
    name = f"streampage pid {os.getpid()} on {socket.gethostname()}"
    return name.encode()[:63].decode(errors="ignore")


def lock_key(text: str) -> int:
    """A stable signed 64-bit advisory lock key for ``text`` (the first 8 bytes of its
    BLAKE2b): the same in every process, unlike ``hash()``."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _signed(key: int) -> int:
    """A 64-bit advisory lock key read back from pg_locks (unsigned halves), as signed."""
    return key - (1 << 64) if key >= 1 << 63 else key


def _literal(text: str) -> str:
    """``text`` as an SQL string literal, for a statement shown in a message."""
    return "'" + text.replace("'", "''") + "'"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _column_type(t: mi.Type) -> tuple[str, bool]:
    """The SQL type of a Struct field's type, and whether it may be NULL."""
    while isinstance(t, mi.Metadata):
        t = t.type
    nullable = False
    if isinstance(t, mi.UnionType):
        others = [a for a in t.types if not isinstance(a, mi.NoneType)]
        nullable = len(others) < len(t.types)
        t = others[0] if len(others) == 1 else t
        while isinstance(t, mi.Metadata):
            t = t.type
    if isinstance(t, mi.AnyType | mi.NoneType):
        nullable = True
    return _SCALARS.get(type(t), "jsonb"), nullable


class Postgres(Configured):
    """Records into ``table`` (``"name"`` or ``"schema.name"``) of the database ``dsn``.

    ``dsn`` is a ``postgresql://user:password@host:port/database`` URL (asyncpg's form).
    ``create=True`` creates the table when it is absent; ``create=False`` requires it. The
    checkpoints live in ``streampage_checkpoints`` in the table's schema (created when
    absent), one row per table and checkpoint name (``"<table>/<name>"``).
    ``primary_key`` (a field name, or a tuple of them) upserts: one row per key, the
    newest version (see the module's docstring).
    """

    def __init__(
        self,
        dsn: str,
        table: str = "items",
        *,
        columns: type | None = None,
        create: bool = True,
        primary_key: str | Sequence[str] | None = None,
        version: str | None = None,
    ) -> None:
        self._configured(
            dsn,
            table,
            columns=columns,
            create=create,
            primary_key=primary_key,
            version=version,
        )
        if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
            # never echo it: a keyword DSN ("host=... password=...") would show the password
            raise ConfigurationError(
                "Postgres dsn must be a URL: postgresql://user:password@host:port/database"
            )
        parts = table.split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(p) for p in parts):
            raise ConfigurationError(
                f"Postgres table {table!r} must be an identifier or schema.identifier"
            )
        if parts[-1] == _CHECKPOINTS:
            raise ConfigurationError(f"Postgres table name {table!r} is reserved")
        self.schema: str | None = parts[0] if len(parts) == 2 else None
        self.table = parts[-1]
        self.dsn = dsn
        self.create = create
        self.columns = columns
        self._secrets = self._find_secrets(dsn)
        # (column name, SQL type, nullable), and how a record becomes a row
        self._layout: list[tuple[str, str, bool]]
        self._to_row: Callable[[Any], tuple[Any, ...]]
        if columns is None:
            self._layout = [("data", "jsonb", True)]
            self._to_row = lambda record: (record,)  # unused: stage() encodes the records
        else:
            self._layout, self._to_row = self._typed(columns)
        self.primary_key = primary_key
        self._keys = key_fields(primary_key, "Postgres")
        if columns is not None:
            fields = [col for col, _, _ in self._layout]
            for key in self._keys:
                if key not in fields:
                    raise ConfigurationError(
                        f"Postgres primary_key {key!r} is not a field of columns="
                        f"{columns.__name__} (its fields: {', '.join(fields)})"
                    )
        if version is not None and not self._keys:
            raise ConfigurationError(
                f"Postgres version={version!r} says which of two rows with one key is newer: "
                "it needs primary_key= too"
            )
        self.version: str | None = None
        self.keep_newest(version)
        self._staged = False  # records COPYed into the staging table, not upserted yet
        self._conn: Any = None
        self._tx: Any = None
        self._lock: int | None = None  # the checkpoint's advisory lock key, held exclusively
        self._table_key: int | None = None  # the table's, held shared (exclusive: replace)
        self._schema: str | None = None  # the table's schema, resolved by open
        self._replacing = False
        self._unclaimed: str | None = None  # an earlier version's checkpoint in the way
        self._encode_lines = msgspec.json.Encoder().encode_lines

    # ------------------------------------------------------------------ configuration

    @staticmethod
    def _typed(
        columns: type,
    ) -> tuple[list[tuple[str, str, bool]], Callable[[Any], tuple[Any, ...]]]:
        if not (isinstance(columns, type) and issubclass(columns, msgspec.Struct)):
            raise ConfigurationError(
                f"Postgres columns must be a msgspec.Struct class, not {columns!r}"
            )
        info = mi.type_info(columns)
        assert isinstance(info, mi.StructType)
        if not info.fields:
            raise ConfigurationError(f"Postgres columns {columns.__name__} has no fields")
        layout = []
        for field in info.fields:
            sql, nullable = _column_type(field.type)
            layout.append((field.encode_name, sql, nullable))
        astuple = msgspec.structs.astuple
        convert = msgspec.convert
        to_builtins = msgspec.to_builtins

        def to_row(record: Any) -> tuple[Any, ...]:
            if type(record) is not columns:
                if isinstance(record, msgspec.Struct):
                    record = to_builtins(record)
                record = convert(record, columns)
            return astuple(record)

        return layout, to_row

    @staticmethod
    def _find_secrets(dsn: str) -> list[str]:
        try:
            url = URL(dsn)
        except ValueError:
            return []
        found = [url.password or "", url.raw_password or ""]
        found += [v for k, v in url.query.items() if k.lower() == "password"]
        return sorted({s for s in found if s}, key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    @property
    def _where(self) -> str:
        name = self.table if self.schema is None else f"{self.schema}.{self.table}"
        return f"table {name} at {redact_url(self.dsn)}"

    def _qualified(self, name: str) -> str:
        """``name`` in the table's schema (resolved by ``open``), quoted: names are
        case-sensitive, as COPY has them."""
        schema = self._schema or self.schema
        return _quote(name) if schema is None else f"{_quote(schema)}.{_quote(name)}"

    def __repr__(self) -> str:
        table = self.table if self.schema is None else f"{self.schema}.{self.table}"
        key = "" if self.primary_key is None else f", primary_key={self.primary_key!r}"
        return f"Postgres({redact_url(self.dsn)!r}, table={table!r}{key})"

    # ------------------------------------------------------------------ upserts

    @property
    def _key_sql(self) -> str:
        """The key of a row, as the conflict target, DISTINCT ON and the unique index name
        it: ``(data ->> 'id')`` (jsonb layout: a key's text), or ``"id"`` (a column)."""
        if self.columns is None:
            return ", ".join(f"(data ->> {_literal(k)})" for k in self._keys)
        return ", ".join(_quote(k) for k in self._keys)

    def _index_sql(self, if_not_exists: bool = False) -> str:
        """The unique index an upsert needs, as the statement that creates it (named
        ``<table>_<key>_key``, as PostgreSQL names a UNIQUE constraint, cut to 63 bytes)."""
        name = f"{self.table}_{'_'.join(self._keys)}_key".encode()[:63].decode(errors="ignore")
        exists = " IF NOT EXISTS" if if_not_exists else ""
        return (
            f"CREATE UNIQUE INDEX{exists} {_quote(name)} ON {self._qualified(self.table)} "
            f"({self._key_sql})"
        )

    def keep_newest(self, version: str | None) -> None:
        """Upserts keep the row whose ``version`` (a dotted path into the jsonb, or a column
        of ``columns=``) is the highest, not the one written last: pages arrive in any
        order, and a page fetched before a record changed can be committed after the page
        with its new form. A row whose version is null gives way. Set by
        into(incremental=...) to its field when the sink upserts and has no version of its
        own; without primary_key it does nothing."""
        if self.version is not None or not self._keys or version is None:
            return
        if self.columns is not None and version not in [c for c, _, _ in self._layout]:
            raise ConfigurationError(
                f"Postgres version {version!r} is not a field of columns="
                f"{self.columns.__name__}: name the column that says when a row changed"
            )
        self.version = version

    def _version_of(self, row: str) -> str:
        """The version of ``row`` (a table or an alias), comparable (jsonb orders numbers as
        numbers and strings as strings)."""
        assert self.version is not None
        if self.columns is not None:
            return f"{row}.{_quote(self.version)}"
        path = ",".join(
            '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
            for part in self.version.split(".")
        )
        return f"({row}.data #> {_literal('{' + path + '}')})"

    def _upsert_sql(self) -> str:
        """What moves the staged records into the table: one version of each key (the
        newest by ``version``, else the last staged: ``_SEQ``, the order of delivery;
        INSERT ... ON CONFLICT refuses to touch a row twice in one statement), inserted,
        or replacing the row of its key (with ``version``: only an older one)."""
        columns = ", ".join(_quote(col) for col, _, _ in self._layout)
        keys = self._key_sql
        updates = ", ".join(
            f"{_quote(col)} = excluded.{_quote(col)}"
            for col, _, _ in self._layout
            if col not in self._keys
        )
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        order = f"{_SEQ} DESC"
        if self.version is not None:
            order = f"{self._version_of(_STAGING)} DESC NULLS LAST, {order}"
            if updates:
                old = self._version_of("streampage_row")
                action += f" WHERE {old} IS NULL OR {self._version_of('excluded')} >= {old}"
        return (
            f"INSERT INTO {self._qualified(self.table)} AS streampage_row ({columns}) "
            f"SELECT DISTINCT ON ({keys}) {columns} FROM pg_temp.{_STAGING} "
            f"ORDER BY {keys}, {order} ON CONFLICT ({keys}) {action}"
        )

    async def _prepare_upserts(self, conn: Any) -> None:
        """The session's staging table (a temporary one, emptied by every commit), and the
        check that the table has the unique index the upsert's conflict target needs: the
        server plans the statement (EXPLAIN, nothing runs) and says when it has none."""
        import asyncpg

        body = ", ".join(f"{_quote(col)} {sql}" for col, sql, _ in self._layout)
        await conn.execute(
            f"CREATE TEMPORARY TABLE {_STAGING} ({_SEQ} bigint GENERATED ALWAYS AS IDENTITY, "
            f"{body}) ON COMMIT DELETE ROWS"
        )
        try:
            await conn.execute(f"EXPLAIN {self._upsert_sql()}")
        except asyncpg.InvalidColumnReferenceError:
            # "no unique or exclusion constraint matching the ON CONFLICT specification"
            what = "column" + ("s " if len(self._keys) > 1 else " ") + self._key_sql
            if self.columns is None:
                what = self._key_sql + " (the key of each record's jsonb)"
            raise ConfigurationError(
                f"Postgres {self._where} has no unique index on {what}, which "
                f"primary_key={self.primary_key!r} upserts by: add one with "
                f"{self._index_sql()} (rows with the same key must go first), or write to "
                "a new table"
            ) from None

    # ------------------------------------------------------------------ the Sink protocol

    async def open(self, name: str) -> bytes | None:
        try:
            import asyncpg
        except ImportError:
            raise missing_extra("asyncpg", "postgres") from None
        if self._conn is not None:
            raise RuntimeError(f"{self!r} is open already")
        try:
            conn = await asyncpg.connect(
                self.dsn, server_settings={"application_name": application_name()}
            )
        except Exception as exc:
            message = self._scrub(f"{type(exc).__name__}: {exc}")
            error = SinkError(f"cannot connect to PostgreSQL at {redact_url(self.dsn)}: {message}")
            if message != f"{type(exc).__name__}: {exc}":
                raise error from None  # the cause would show the password
            raise error from exc
        try:
            if self.columns is not None:
                # the jsonb columns of typed rows (records go as COPY's text without
                # columns): binary jsonb is a version byte (1) and the JSON text
                encode = msgspec.json.Encoder().encode
                decode = msgspec.json.decode
                await conn.set_type_codec(
                    "jsonb",
                    schema="pg_catalog",
                    encoder=lambda value: b"\x01" + encode(value),
                    decoder=lambda data: decode(data[1:]),
                    format="binary",
                )
            self._schema = await self._resolve_schema(conn)
            # first the locks: a second run stops here, before it reads or writes
            table_key, key = await self._take_locks(conn, name)
            await self._ensure_tables(conn)
            if self._keys:
                await self._prepare_upserts(conn)
            stored = await conn.fetchval(
                f"SELECT checkpoint::text FROM {self._qualified(_CHECKPOINTS)} WHERE name = $1",
                self._key(name),
            )
            unclaimed = None
            if stored is None:
                unclaimed = await self._unscoped(conn, name) or await self._elsewhere(conn, name)
        except BaseException as exc:
            conn.terminate()  # the session ends, and its lock with it
            if isinstance(exc, Exception) and not isinstance(exc, StreamPageError):
                exc.add_note(f"while opening the Postgres sink ({self._where})")
            raise
        self._conn, self._lock, self._table_key, self._replacing = conn, key, table_key, False
        self._unclaimed = unclaimed
        return None if stored is None else str(stored).encode()

    def _key(self, name: str) -> str:
        """The checkpoint ``name`` of this table, as stored in ``streampage_checkpoints``
        (which is in the table's schema)."""
        return f"{self.table}/{name}"

    async def _resolve_schema(self, conn: Any) -> str:
        """The table's schema: as named, or the one the server finds the table in through
        ``search_path``, or, for a table still to create, the one ``CREATE TABLE`` would
        create it in (``current_schema()``: the first schema of the path that exists)."""
        if self.schema is not None:
            return self.schema
        schema: str | None = await conn.fetchval(
            "SELECT coalesce((SELECT n.nspname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)), current_schema())",
            _quote(self.table),
        )
        if schema is None:
            path = await conn.fetchval("SHOW search_path")
            raise ConfigurationError(
                f"Postgres {self._where}: no schema of search_path ({path}) exists to create "
                "the table in: name its schema (schema.table), or create one"
            )
        return schema

    async def _take_locks(self, conn: Any, name: str) -> tuple[int, int]:
        """Take the session's shared advisory lock on this table and its exclusive one on
        checkpoint ``name`` of it, or raise CheckpointInUseError naming who is in the way
        (a replace holding the table, another run holding the checkpoint). The keys hash
        the table's resolved schema, so that two spellings of one table (``items``,
        ``public.items``) are one lock."""
        table_key = lock_key(f"{self._schema}.{self.table}")
        if not await conn.fetchval("SELECT pg_try_advisory_lock_shared($1)", table_key):
            holder = await self._holder(conn, table_key)
            raise in_use(f"{self._where} to replace it", holder)
        key = lock_key(f"{self._schema}.{self.table}/{name}")
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            holder = await self._holder(conn, key)
            raise in_use(f"checkpoint {name!r} of {self._where}", holder)
        return table_key, key

    #: granted advisory locks of bigint keys (objsubid 1; the key is classid << 32 | objid)
    #: in this database, with the session that holds each
    _ADVISORY = (
        "SELECT a.application_name, a.backend_start, l.pid, "
        "((l.classid::bigint << 32) | l.objid::bigint) AS key FROM pg_locks l "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    )

    @classmethod
    async def _holder(cls, conn: Any, key: int) -> str | None:
        """``since T, pid P on host H`` of the session holding advisory lock ``key``: a bigint
        key shows in pg_locks as its high half (classid) and low half (objid), objsubid 1."""
        row = await conn.fetchrow(
            cls._ADVISORY + "AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid "
            "AND l.pid <> pg_backend_pid() LIMIT 1",
            (key >> 32) & 0xFFFFFFFF,
            key & 0xFFFFFFFF,
        )
        if row is None:
            return None  # released this instant
        return cls._session(row)

    async def _writers(self, conn: Any) -> str | None:
        """The other sessions that hold this table (``checkpoint 'c', since T, pid P on
        host H``, joined by ``; ``), or None when they are gone. Each also holds the lock of
        its checkpoint: of the checkpoints stored for the table, the one whose key it holds
        (a run that has not committed yet has none stored: then its checkpoint is not told)."""
        table_key = self._table_key
        assert table_key is not None
        holders = await conn.fetch(
            self._ADVISORY + "AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid "
            "AND l.pid <> pg_backend_pid() ORDER BY l.pid",
            (table_key >> 32) & 0xFFFFFFFF,
            table_key & 0xFFFFFFFF,
        )
        if not holders:
            return None
        prefix = self._key("")
        stored = await conn.fetch(
            f"SELECT substr(name, char_length($1) + 1) AS name FROM "
            f"{self._qualified(_CHECKPOINTS)} WHERE left(name, char_length($1)) = $1",
            prefix,
        )
        names = {lock_key(f"{self._schema}.{self.table}/{r['name']}"): r["name"] for r in stored}
        held = await conn.fetch(
            self._ADVISORY + "AND l.pid = any($1::int[])", [r["pid"] for r in holders]
        )
        found = []
        for row in holders:
            keys = [_signed(r["key"]) for r in held if r["pid"] == row["pid"]]
            which = [f"checkpoint {names[k]!r}" for k in keys if k in names]
            found.append(", ".join([*which, self._session(row)]))
        return "; ".join(found)

    @staticmethod
    def _session(row: Any) -> str:
        """``since T, pid P on host H`` of a session (a row of pg_stat_activity)."""
        started: _dt.datetime | None = row["backend_start"]  # None: not ours to see
        since = None if started is None else started.astimezone().isoformat(timespec="seconds")
        found = _APPLICATION.fullmatch(row["application_name"] or "")
        if found:
            return holder_text(since, found[1], found[2])
        backend = f"server process {row['pid']}"
        return f"{holder_text(since, None, None)}, {backend}" if since else backend

    async def _unscoped(self, conn: Any, name: str) -> str | None:
        """Earlier versions keyed a checkpoint by its name alone, for every table of the
        schema. Such a row beside rows in this table may be this table's checkpoint (then
        starting afresh would write its pages twice) or another table's: only the user can
        say which. The error for it (raised by the first write or commit, unless the table
        is replaced: ``open`` cannot know that a replace follows), or None."""
        checkpoints = self._qualified(_CHECKPOINTS)
        old = await conn.fetchval(f"SELECT 1 FROM {checkpoints} WHERE name = $1", name)
        if old is None or not await self._has_rows(conn):
            return None
        key, bare = _literal(self._key(name)), _literal(name)
        return (
            f"Postgres {self._where}: {checkpoints} holds a checkpoint {name!r} of an earlier "
            "streampage version, kept for every table, and the table holds rows: if they "
            f"are that checkpoint's, claim it for the table with UPDATE {checkpoints} SET "
            f"name = {key} WHERE name = {bare}; if not, DELETE FROM {checkpoints} WHERE "
            f"name = {bare}; or start the table over (mode='replace', --replace)"
        )

    async def _elsewhere(self, conn: Any, name: str) -> str | None:
        """Earlier versions found the ``streampage_checkpoints`` of an unqualified table
        through ``search_path``: the first schema of the path that has one, which need not
        be the table's (``search_path=etl,data`` and a table of ``data``). A checkpoint of
        this table there, beside rows in the table, is likely this table's (then starting
        afresh would write its pages twice); the error for it (raised by the first write or
        commit, unless the table is replaced), or None."""
        if self.schema is not None:
            return None  # a qualified table always had its checkpoints beside it
        ours = self._qualified(_CHECKPOINTS)
        found = await conn.fetchrow(
            "SELECT n.nspname, c.oid <> to_regclass($2) AS other FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
            _quote(_CHECKPOINTS),
            ours,
        )
        if found is None or not found["other"]:
            return None
        theirs = f"{_quote(found['nspname'])}.{_quote(_CHECKPOINTS)}"
        key = self._key(name)
        import asyncpg

        try:
            old = await conn.fetchval(f"SELECT 1 FROM {theirs} WHERE name = $1", key)
        except asyncpg.PostgresError:
            return None  # not ours to read (privileges), or not a table of ours (columns)
        if old is None or not await self._has_rows(conn):
            return None
        where = f"WHERE name = {_literal(key)}"
        return (
            f"Postgres {self._where}: its checkpoint {name!r} is in {theirs}, where an earlier "
            f"streampage version kept it (the one search_path finds first), not in {ours}, "
            f"beside the table in schema {self._schema}, where it is kept now. If it is this "
            f"table's, move it with INSERT INTO {ours} SELECT * FROM {theirs} {where}; "
            f"DELETE FROM {theirs} {where}; if it is not (a table {self.table} of schema "
            f"{found['nspname']} wrote it), name the table with its schema "
            f"({self._schema}.{self.table}); or start the table over (mode='replace', --replace)"
        )

    async def _has_rows(self, conn: Any) -> bool:
        found = await conn.fetchval(f"SELECT 1 FROM {self._qualified(self.table)} LIMIT 1")
        return found is not None

    async def _ensure_tables(self, conn: Any) -> None:
        table = self._qualified(self.table)
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            if not self.create:
                raise ConfigurationError(
                    f"Postgres {self._where} does not exist (create=False): create it, "
                    "or pass create=True"
                )
            if self.columns is None:
                body = "id bigserial PRIMARY KEY, data jsonb"
            else:
                body = ", ".join(
                    f"{_quote(col)} {sql}{'' if nullable else ' NOT NULL'}"
                    for col, sql, nullable in self._layout
                )
                if self._keys:
                    body += f", PRIMARY KEY ({self._key_sql})"
            ddl = [f"CREATE TABLE IF NOT EXISTS {table} ({body})"]
            if self._keys and self.columns is None:
                # the table and its index at once: none is ever seen without the other
                ddl.append(self._index_sql(if_not_exists=True))
            await self._create(conn, *ddl)
        checkpoints = self._qualified(_CHECKPOINTS)
        if await conn.fetchval("SELECT to_regclass($1)", checkpoints) is None:
            await self._create(
                conn,
                f"CREATE TABLE IF NOT EXISTS {checkpoints} (name text PRIMARY KEY, "
                "checkpoint jsonb NOT NULL, updated_at timestamptz DEFAULT now())",
            )

    @staticmethod
    async def _create(conn: Any, *ddl: str) -> None:
        import asyncpg

        # created at the same moment by another connection (the shards of a job): IF NOT
        # EXISTS can race, on the table's name or on its row type's ("type ... exists")
        with contextlib.suppress(
            asyncpg.UniqueViolationError, asyncpg.DuplicateTableError, asyncpg.DuplicateObjectError
        ):
            async with conn.transaction():
                for statement in ddl:
                    await conn.execute(statement)

    def _connection(self) -> Any:
        if self._conn is None:
            raise RuntimeError(f"{self!r} is not open: call open() first")
        return self._conn

    async def replace(self, name: str) -> None:
        """Start the table over: the next transaction (that of the first commit) first
        deletes every row of the table and every checkpoint of it. Until that commit,
        readers see the old rows (never an empty table), and a crash leaves the old rows
        and checkpoint as they were. Takes the table to itself until ``close``, or fails
        with CheckpointInUseError when another run writes it."""
        conn = self._connection()
        if self._tx is not None:
            raise RuntimeError(f"{self!r}: replace() comes before write(), not after")
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._table_key):
            # another run writes the table: deleting its rows under it would leave its
            # checkpoint naming pages it no longer holds
            raise in_use(f"{self._where} to write into it", await self._writers(conn))
        self._replacing = True
        self._unclaimed = None  # whoever's it was, the table starts over

    async def _begin(self, conn: Any) -> None:
        """Open the transaction of the next commit, if none is open; after ``replace``, it
        starts by emptying the table."""
        if self._unclaimed is not None:
            raise ConfigurationError(self._unclaimed)
        if self._tx is not None:
            return
        tx = conn.transaction()
        await tx.start()
        self._tx = tx
        if self._replacing:
            await conn.execute(f"DELETE FROM {self._qualified(self.table)}")
            prefix = self._key("")
            await conn.execute(
                f"DELETE FROM {self._qualified(_CHECKPOINTS)} "
                "WHERE left(name, char_length($1)) = $1",
                prefix,
            )

    async def finish(self, name: str) -> None:
        """Nothing to do: each commit left the table whole (no parts to merge or rename)."""

    async def write(self, records: Sequence[Any]) -> None:
        self._connection()
        if not records:
            return
        try:
            staged = self.stage(records)
        except Exception as exc:
            exc.add_note(f"while writing {len(records)} records to Postgres {self._where}")
            raise
        await self._copy([staged], len(records))

    def stage(self, records: Sequence[Any]) -> Any:
        """One page's records as COPY will send them, for ``commit_staged`` (``into()`` calls
        it on the event loop as each page arrives, so that a batch waits for its commit in
        that form): without ``columns``, lines of COPY's text format, each a record's JSON
        (msgspec's, as the jsonb codec encodes it; backslashes doubled, as that format
        escapes them: JSON text has no raw tab or newline to escape); with ``columns``, the
        rows. Nothing is sent. With ``primary_key``, a record without its key (or with null
        in it) is a ValueError, raised here: before anything of its batch is sent."""
        if self._keys:
            check_keys(records, self._keys)
        if self.columns is None:
            return self._encode_lines(records).replace(b"\\", b"\\\\")
        return [self._to_row(r) for r in records]

    async def _copy(self, chunks: Sequence[Any], rows: int) -> None:
        """COPY what ``stage`` made of ``rows`` records into the table, in the transaction
        of the next commit; with ``primary_key``, into the staging table, which that
        commit upserts into the table."""
        if not chunks:
            return
        conn = self._connection()
        table, schema = self.table, self._schema
        if self._keys:
            table, schema = _STAGING, "pg_temp"
        try:
            await self._begin(conn)
            columns = [col for col, _, _ in self._layout]
            if self.columns is None:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                await conn.copy_to_table(
                    table,
                    source=memoryview(data),  # bytes would be taken for a file name
                    columns=columns,
                    schema_name=schema,
                    format="text",
                )
            else:
                await conn.copy_records_to_table(
                    table,
                    records=[row for chunk in chunks for row in chunk],
                    columns=columns,
                    schema_name=schema,
                )
            self._staged = bool(self._keys)
        except Exception as exc:
            exc.add_note(f"while writing {rows} records to Postgres {self._where}")
            raise

    async def commit_staged(
        self, name: str, checkpoint: bytes, batches: Sequence[Sequence[Any]]
    ) -> None:
        """``write`` and ``commit`` at once, for ``batches`` of what ``stage`` returned: one
        COPY, the checkpoint, one transaction."""
        chunks = [chunk for batch in batches for chunk in batch]
        rows = sum(len(c) if self.columns is not None else c.count(b"\n") for c in chunks)
        await self._copy(chunks, rows)
        await self.commit(name, checkpoint)

    async def commit(self, name: str, checkpoint: bytes) -> None:
        conn = self._connection()
        try:
            await self._begin(conn)
            if self._staged:
                # the batch's records into the table, in the checkpoint's transaction
                await conn.execute(self._upsert_sql())
                self._staged = False
            await conn.execute(
                f"INSERT INTO {self._qualified(_CHECKPOINTS)} (name, checkpoint, updated_at) "
                "VALUES ($1, $2::text::jsonb, now()) ON CONFLICT (name) DO UPDATE SET "
                "checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
                self._key(name),
                checkpoint.decode(),
            )
            tx, self._tx = self._tx, None
            await tx.commit()
            self._replacing = False  # done, durably: a later transaction keeps what it finds
        except Exception as exc:
            exc.add_note(f"while committing checkpoint {name!r} to Postgres {self._where}")
            raise

    async def close(self) -> None:
        conn, tx = self._conn, self._tx
        self._conn = self._tx = self._lock = self._table_key = None
        self._staged = False  # a rollback empties the staging table, and the session ends
        if conn is None:
            return
        try:
            if not conn.is_closed():
                if tx is not None:
                    await tx.rollback()  # uncommitted records are discarded, as after a crash
                # the checkpoint's lock and the table's (shared, and exclusive after a
                # replace): unlocked when this returns, so a run that starts right after
                # the close finds them free (the session's end is noticed a moment later)
                await conn.execute("SELECT pg_advisory_unlock_all()")
        except Exception:
            conn.terminate()  # the server rolls back what the connection had open
            return
        try:
            await conn.close(timeout=10)
        except Exception:
            conn.terminate()

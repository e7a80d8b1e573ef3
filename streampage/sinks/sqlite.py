"""SQLite from the standard library, off the event loop, checkpoint in the same transaction.

Records go in as JSON text (``data`` column; query them with SQLite's JSON functions). Each
commit is one transaction holding the batch *and* the checkpoint row, so after a crash the
database holds exactly the pages its checkpoint names.

Upserts. With ``primary_key="id"`` (a top-level field of the records; a tuple of fields for
a composite key) the table holds one row per key, the newest version of its record. Every
INSERT then ends with ``ON CONFLICT (json_extract(data, '$.id')) DO UPDATE SET data =
excluded.data`` (SQLite 3.24 and later), in the checkpoint's transaction as before, against
a unique index on that expression created with the table, ``<table>_<key>_key``. SQLite
runs a statement's rows in order, so the same key twice in a batch keeps the last version.
``json_extract`` gives the key's SQL value: ``1`` and ``"1"`` are two keys (PostgreSQL's
``->>`` makes them one). SQLite matches the conflict target with an index by its text, so
the path is written as a person would (``$.id``; ``$."odd name"``), and a query written the
same way, ``WHERE json_extract(data, '$.id') = 42``, uses the index. A table that was there
without that index is refused by ``open`` (the upsert is prepared, not run, and SQLite finds
nothing to conflict on), with the ``CREATE UNIQUE INDEX`` that adds it. A record without its
key, or with null in it, is refused by ``stage``, before anything of its batch is written:
the index would take any number of NULL keys. The ``id`` column is then the row's first
insertion, not its last change.

Checkpoints are rows of ``streampage_checkpoints``, keyed ``"<table>/<name>"`` (the table
in lower case, as SQLite folds names: ``Items`` and ``items`` are one table). The same
checkpoint name on two tables of one database is two checkpoints.

One writer per checkpoint, by a file lock rather than SQLite's own locks. SQLite locks the
whole database, and only for a transaction: between two commits a run holds nothing that
would stop a second run on its checkpoint, and a lock held for a whole run would stop a
run into *another* table of the same database, which must go. So ``open`` takes an
exclusive ``flock`` (``_lock.FileLock``) on a file of its own per table and checkpoint,
``.<db file>.streampage/<table>.<name>.lock`` beside the database, held until ``close``.
The kernel drops it when the process dies, by SIGKILL too: no stale lock, no timeout. A
second run on the checkpoint gets ``CheckpointInUseError`` naming the holder (since, pid,
host); two runs into two tables take two lock files, and their transactions take turns at
SQLite's write lock (WAL mode; a writer waits up to ``busy_timeout`` seconds for the
other's commit, which holds one batch). ``flock`` on a network file system (NFS, SMB) may
not be shared between hosts: keep the database on a local disk.

One replace per table, and no other run beside it. ``replace(name)`` empties the table and
drops every checkpoint of it, those of other checkpoint names included: a run on another
checkpoint that went on writing would commit pages whose rows are gone, and its
checkpoint would still name them. So every run also holds its *table* for its whole life,
by a shared ``flock`` on ``.<db file>.streampage/<table>.lock`` (two runs on two checkpoints
of one table still write at once), and ``replace`` makes it exclusive, without waiting: when
another run holds the table, ``replace`` fails at once with ``CheckpointInUseError``
(naming the run, from its checkpoint's lock file, when it can tell), before it has deleted
anything. A replacing run keeps the table to itself until ``close``: a run that starts
meanwhile fails at once in ``open``, naming it.

``replace(name)`` starts the table over, in the first commit's transaction: until it
commits, readers see the old rows and a crash leaves them and their checkpoint in place.
``finish(name)`` has nothing to do: every commit is already the table's final state.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import anyio.to_thread
import msgspec

from .._errors import ConfigurationError
from ._base import Configured, check_keys, key_fields
from ._lock import FileLock, in_use, state_dir

__all__ = ["SQLite"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CHECKPOINTS = "streampage_checkpoints"
#: seconds a transaction waits for another connection's (another table's run) to commit
_BUSY_TIMEOUT = 30.0
#: rows an INSERT statement holds at most (a power of two; its variables stay below 999,
#: the limit of SQLite before 3.32)
_ROWS = 256


def _file_safe(name: str) -> str:
    """``name`` as part of a file name, one to one: percent-encoded (``/`` too), and past
    80 characters cut, with a hash of the whole name to tell long names apart."""
    safe = quote(name, safe="")
    if len(safe) > 80:
        safe = safe[:60] + "~" + hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    return safe


def _json_path(field: str) -> str:
    """The JSON path of a top-level field, as a person would write it: ``$.id``, or
    ``$."odd name"`` (a path is matched as text: the index's and the upsert's must agree)."""
    if _IDENTIFIER.fullmatch(field):
        return f"$.{field}"
    if '"' in field or "\\" in field or any(ord(c) < 0x20 for c in field):
        # SQLite matches a path against the key as escaped in the JSON text: such a key
        # would read as null, and a unique index holds any number of nulls
        raise ConfigurationError(
            f"SQLite primary_key {field!r}: a JSON path cannot name a field with a double "
            "quote, a backslash or a control character"
        )
    return f'$."{field}"'


def _json_dotted(path: str) -> str:
    """The JSON path of a dotted path into a record (``meta.updated_at``)."""
    return "$" + "".join(_json_path(part)[1:] for part in path.split("."))


def _literal(text: str) -> str:
    """``text`` as an SQL string literal, for a statement shown in a message."""
    return "'" + text.replace("'", "''") + "'"


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_dict_get = dict.get


def _within_int64(records: Sequence[Any], keys: tuple[str, ...]) -> None:
    """SQLite reads a JSON integer past 64 bits as a float: ids one apart would be one key,
    and one record would replace the other. Refused: a ValueError, as check_keys raises."""
    if len(keys) == 1:
        # At C speed for one key (the loop below is ~1.4 µs a page): the lowest and the
        # highest of the keys, when they compare (numbers; or text, which holds no
        # integer, as text and numbers do not compare), inside 64 bits or text mean no
        # integer past it. Anything else (records that are not dicts, keys of mixed
        # kinds, a bound crossed, even by a float) is for the loop to judge.
        try:
            values: list[Any] = list(map(_dict_get, records, repeat(keys[0])))
            low, high = min(values), max(values)
            if type(low) is str or (low >= _INT64_MIN and high <= _INT64_MAX):
                return
        except Exception:  # TypeError, ValueError (no records), a Decimal
            pass  # NaN's InvalidOperation...: whatever the comparison raises, the loop judges
    for record in records:
        if type(record) is dict:
            for key in keys:
                value = record.get(key)
                if type(value) is int and not -(2**63) <= value < 2**63:
                    raise ValueError(
                        f"a record's {key!r} is an integer past 64 bits, which SQLite's JSON "
                        "functions read as a float (two ids could be one key): use "
                        "PostgreSQL, or a key of text"
                    )


class SQLite(Configured):
    """Records into ``table`` (created when absent) of the database file ``path``.

    ``busy_timeout`` is how long (seconds) a commit waits while another run commits into
    another table of the same database. ``primary_key`` (a field name, or a tuple of them)
    upserts: one row per key, the newest version (see the module's docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        table: str = "items",
        *,
        busy_timeout: float = _BUSY_TIMEOUT,
        primary_key: str | Sequence[str] | None = None,
        version: str | None = None,
    ) -> None:
        self._configured(
            path, table, busy_timeout=busy_timeout, primary_key=primary_key, version=version
        )
        if not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(f"SQLite table name {table!r} must be a plain identifier")
        if table.lower() == _CHECKPOINTS or table.lower().startswith("sqlite_"):
            raise ConfigurationError(f"SQLite table name {table!r} is reserved")
        self.path = Path(path)
        self.table = table
        self.busy_timeout = busy_timeout
        self.primary_key = primary_key
        self._keys = key_fields(primary_key, "SQLite")
        if self._keys and sqlite3.sqlite_version_info < (3, 24, 0):
            raise ConfigurationError(
                f"SQLite primary_key= needs SQLite 3.24 or later (its upsert); this Python has "
                f"{sqlite3.sqlite_version}"
            )
        #: a row's key (``json_extract(data, '$.id')``, a composite's joined by commas): the
        #: unique index's expressions, and the upsert's conflict target (the same text)
        self._key_sql = ", ".join(
            f"json_extract(data, {_literal(_json_path(k))})" for k in self._keys
        )
        if version is not None and not self._keys:
            raise ConfigurationError(
                f"SQLite version={version!r} says which of two rows with one key is newer: "
                "it needs primary_key= too"
            )
        self.version: str | None = None
        self._inserts: dict[int, str] = {}
        self.keep_newest(version)
        self._db: sqlite3.Connection | None = None
        self._lock: FileLock | None = None  # the checkpoint's, exclusive
        self._table_lock: FileLock | None = None  # the table's: shared, exclusive to replace
        self._replacing = False
        self._unclaimed: str | None = None  # an earlier version's checkpoint in the way
        self._encoder = msgspec.json.Encoder()
        # one thread at a time uses the connection; a limiter of 1 keeps calls in order
        self._limiter = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        key = "" if self.primary_key is None else f", primary_key={self.primary_key!r}"
        return f"SQLite({str(self.path)!r}, table={self.table!r}{key})"

    def keep_newest(self, version: str | None) -> None:
        """Upserts keep the row whose ``version`` (a dotted path: ``updated_at``) is the
        highest, not the one written last: pages arrive in any order, and a page fetched
        before a record changed can be committed after the page with its new form. A row
        whose version is missing gives way. Set by into(incremental=...) to its field when
        the sink upserts and has no version of its own; without primary_key it does
        nothing."""
        if self.version is None and self._keys:
            self.version = version
        version = self.version
        upsert = ""
        if self._keys:
            upsert = f" ON CONFLICT ({self._key_sql}) DO UPDATE SET data = excluded.data"
            if version is not None:
                path = _literal(_json_dotted(version))
                old = f"json_extract({self.table}.data, {path})"
                upsert += f" WHERE {old} IS NULL OR json_extract(excluded.data, {path}) >= {old}"
        #: INSERT statements by rows: _ROWS, _ROWS / 2, ..., 1
        self._inserts = {
            n: f"INSERT INTO {self.table} (data) VALUES " + ", ".join(["(?)"] * n) + upsert
            for n in (_ROWS >> k for k in range(_ROWS.bit_length()))
        }

    def _index_sql(self) -> str:
        """The unique index an upsert needs, as the statement that creates it (named
        ``<table>_<key>_key``)."""
        name = f"{self.table}_{'_'.join(self._keys)}_key".replace('"', '""')
        return f'CREATE UNIQUE INDEX "{name}" ON {self.table} ({self._key_sql})'

    def _ensure_table(self, db: sqlite3.Connection) -> None:
        """The table, created when absent: with ``primary_key``, with its unique index, in
        the same transaction (no one ever sees the one without the other); a table that
        was there must have that index already (checked: the upsert is prepared, not run)."""
        create = f"CREATE TABLE IF NOT EXISTS {self.table} (id INTEGER PRIMARY KEY, data TEXT)"
        if not self._keys:
            db.execute(create)
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            there = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                (self.table,),
            ).fetchone()
            if there is None:
                db.execute(create)
                db.execute(self._index_sql())
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute(f"EXPLAIN {self._inserts[1]}", (None,))
        except sqlite3.OperationalError as exc:
            if "ON CONFLICT clause does not match" not in str(exc):
                raise
            raise ConfigurationError(
                f"SQLite table {self.table} in {self.path} has no unique index on "
                f"{self._key_sql}, which primary_key={self.primary_key!r} upserts by: add one "
                f"with {self._index_sql()} (rows with the same key must go first), or write "
                "to a new table"
            ) from None

    def _key(self, name: str) -> str:
        """The checkpoint ``name`` of this table, as stored in ``streampage_checkpoints``."""
        return f"{self.table.lower()}/{name}"

    def lock_path(self, name: str) -> Path:
        """The lock file of checkpoint ``name`` of this table (held from open to close)."""
        return state_dir(self.path) / f"{self.table.lower()}.{_file_safe(name)}.lock"

    def table_lock_path(self) -> Path:
        """The lock file of this table: shared by every run into it, exclusive to a replace.
        Its name cannot be a checkpoint's (``<table>.<name>.lock``: a name is never empty)."""
        return state_dir(self.path) / f"{self.table.lower()}.lock"

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self!r} is not open: call open() first")
        return self._db

    # ------------------------------------------------------------------ the Sink protocol

    async def open(self, name: str) -> bytes | None:
        return await self._run(self._open, name)  # type: ignore[no-any-return]

    def _open(self, name: str) -> bytes | None:
        if self._db is not None:
            raise RuntimeError(f"{self!r} is open already")
        if str(self.path) != ":memory:":  # a database of its own connection: no one to stop
            # first: a second run stops here, before it reads or writes. The table, then
            # the checkpoint: a run started while a replace holds the table names the replace
            table = FileLock(
                self.table_lock_path(),
                f"table {self.table} in {self.path} to replace it",
                shared=True,
            )
            table.acquire()
            self._table_lock = table
            lock = FileLock(
                self.lock_path(name), f"checkpoint {name!r} of table {self.table} in {self.path}"
            )
            try:
                lock.acquire()
            except BaseException:
                self._release()
                raise
            self._lock = lock
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout,
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._ensure_table(db)
            # the layout of every version: a key scoped to the table is still a name
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {_CHECKPOINTS} "
                "(name TEXT PRIMARY KEY, checkpoint TEXT NOT NULL)"
            )
            row = db.execute(
                f"SELECT checkpoint FROM {_CHECKPOINTS} WHERE name = ?", (self._key(name),)
            ).fetchone()
            unclaimed = None if row is not None else self._unscoped_checkpoint(db, name)
        except BaseException:
            if db is not None:
                db.close()
            self._release()
            raise
        self._db = db
        self._replacing = False
        self._unclaimed = unclaimed
        return None if row is None else str(row[0]).encode()

    def _unscoped_checkpoint(self, db: sqlite3.Connection, name: str) -> str | None:
        """Earlier versions keyed a checkpoint by its name alone, for every table of the
        database. Such a row beside rows in this table may be this table's checkpoint (then
        starting afresh would write its pages twice) or another table's: only the user can
        say which. The error for it (raised by the first write or commit, unless the table
        is replaced: ``open`` cannot know that a replace follows), or None."""
        old = db.execute(f"SELECT 1 FROM {_CHECKPOINTS} WHERE name = ?", (name,)).fetchone()
        if old is None or db.execute(f"SELECT 1 FROM {self.table} LIMIT 1").fetchone() is None:
            return None
        key, bare = _literal(self._key(name)), _literal(name)
        return (
            f"{self.path} holds a checkpoint {name!r} of an earlier streampage version, kept "
            f"for the whole database, and table {self.table} holds rows: if they are that "
            f"checkpoint's, claim it for the table with UPDATE {_CHECKPOINTS} SET name = "
            f"{key} WHERE name = {bare}; if not, DELETE FROM {_CHECKPOINTS} WHERE name = {bare}"
            "; or start the table over (mode='replace', --replace)"
        )

    async def replace(self, name: str) -> None:
        """Start the table over: the next transaction (that of the first commit) first
        deletes every row of the table and every checkpoint of it. Until that commit,
        readers see the old rows (never an empty table), and a crash leaves the old rows
        and checkpoint as they were. DELETE, not DROP: the table keeps its definition."""
        await self._run(self._replace, name)

    def _replace(self, name: str) -> None:
        if self._connection().in_transaction:
            raise RuntimeError(f"{self!r}: replace() comes before write(), not after")
        table = self._table_lock
        if table is not None and not table.exclusive():
            # another run writes the table: deleting its rows under it would leave its
            # checkpoint naming pages it no longer holds
            raise in_use(f"table {self.table} in {self.path} to write into it", self._writers(name))
        self._replacing = True
        self._unclaimed = None  # whoever's it was, the table starts over

    async def write(self, records: Sequence[Any]) -> None:
        await self._run(self._write, [self.stage(records)])

    def _write(self, chunks: Sequence[bytes]) -> None:
        """Insert the records of ``chunks`` (JSON lines: a row a line) in the transaction,
        many rows a statement (``VALUES (?), (?), ...``): SQLite then steps once for
        _ROWS rows, not once a row (with the GIL let go and taken again, and SQLite's
        mutexes, each time). The statements are of _ROWS rows and of its halves, so that
        a batch of any size needs only those few, prepared once (the connection's
        statement cache)."""
        db = self._begin()
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        lines = data.decode().split("\n")
        lines.pop()  # the empty string after the last newline
        at, size = 0, _ROWS
        while at < len(lines):
            while at + size > len(lines):
                size //= 2
            db.execute(self._inserts[size], lines[at : at + size])
            at += size

    def stage(self, records: Sequence[Any]) -> bytes:
        """One page's records as JSON lines (a row a line), for ``commit_staged``: ``into()``
        calls it on the event loop as each page arrives, so that a batch waits for its
        commit as bytes, not as Python objects. Nothing is written. With ``primary_key``, a
        record without its key (or with null in it) is a ValueError, raised here: before
        anything of its batch is written."""
        if self._keys:
            check_keys(records, self._keys)
            _within_int64(records, self._keys)
        return self._encoder.encode_lines(records)

    async def commit_staged(
        self, name: str, checkpoint: bytes, batches: Sequence[Sequence[bytes]]
    ) -> None:
        """``write`` and ``commit`` at once, for ``batches`` of what ``stage`` returned:
        inserted and committed with the checkpoint in one transaction, in one call to the
        connection's thread."""
        chunks = [chunk for batch in batches for chunk in batch]
        await self._run(self._commit_staged, name, checkpoint.decode(), chunks)

    def _commit_staged(self, name: str, checkpoint: str, chunks: Sequence[bytes]) -> None:
        self._write(chunks)
        self._commit(name, checkpoint)

    def _begin(self) -> sqlite3.Connection:
        """The connection, in a write transaction (begun here if none is open): IMMEDIATE
        takes the database's write lock at once, waiting for another run's commit."""
        db = self._connection()
        if self._unclaimed is not None:
            raise ConfigurationError(self._unclaimed)
        if not db.in_transaction:
            db.execute("BEGIN IMMEDIATE")
            if self._replacing:
                db.execute(f"DELETE FROM {self.table}")
                prefix = self._key("")
                db.execute(
                    f"DELETE FROM {_CHECKPOINTS} WHERE substr(name, 1, ?) = ?",
                    (len(prefix), prefix),
                )
        return db

    async def commit(self, name: str, checkpoint: bytes) -> None:
        await self._run(self._commit, name, checkpoint.decode())

    def _commit(self, name: str, checkpoint: str) -> None:
        db = self._begin()
        db.execute(
            f"INSERT INTO {_CHECKPOINTS} (name, checkpoint) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET checkpoint = excluded.checkpoint",
            (self._key(name), checkpoint),
        )
        db.execute("COMMIT")
        self._replacing = False  # done, durably: a later transaction keeps what it finds

    async def finish(self, name: str) -> None:
        """Nothing to do: each commit left the table whole (no parts to merge or rename)."""

    async def close(self) -> None:
        await self._run(self._close)

    def _close(self) -> None:
        db, self._db = self._db, None
        try:
            if db is not None:
                try:
                    if db.in_transaction:
                        db.execute("ROLLBACK")  # uncommitted records go, as after a crash
                finally:
                    db.close()
        finally:
            self._release()

    def _writers(self, name: str) -> str | None:
        """Who else writes the table, as their checkpoints' lock files say (``checkpoint
        'c', since T, pid P on host H``, joined by ``; ``), or None when they cannot tell
        (a holder between its lock and its note, or a run of an earlier version)."""
        prefix, own = f"{self.table.lower()}.", self.lock_path(name)
        found = []
        for path in sorted(state_dir(self.path).glob(f"{prefix}*.lock")):
            if path == own or path == self.table_lock_path():
                continue
            holder = FileLock.holder_of(path)
            if holder is not None:
                checkpoint = unquote(path.name[len(prefix) : -len(".lock")])
                found.append(f"checkpoint {checkpoint!r}, {holder}")
        return "; ".join(found) or None

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        table, self._table_lock = self._table_lock, None
        try:
            if lock is not None:
                lock.release()
        finally:
            if table is not None:
                table.release()

"""SQLite from the standard library, off the event loop, checkpoint in the same transaction.

Records go in as JSON text (``data`` column; query them with SQLite's JSON functions). Each
commit is one transaction holding the batch *and* the checkpoint row, so after a crash the
database holds exactly the pages its checkpoint names.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec

from .._errors import ConfigurationError

__all__ = ["SQLite"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SQLite:
    """Records into ``table`` (created when absent) of the database file ``path``."""

    def __init__(self, path: str | os.PathLike[str], table: str = "items") -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(f"SQLite table name {table!r} must be a plain identifier")
        self.path = Path(path)
        self.table = table
        self._db: sqlite3.Connection | None = None
        self._encoder = msgspec.json.Encoder()
        # one thread at a time uses the connection; a limiter of 1 keeps calls in order
        self._limiter = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"SQLite({str(self.path)!r}, table={self.table!r})"

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def open(self, name: str) -> bytes | None:
        return await self._run(self._open, name)  # type: ignore[no-any-return]

    def _open(self, name: str) -> bytes | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (id INTEGER PRIMARY KEY, data TEXT)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS streampage_checkpoints "
            "(name TEXT PRIMARY KEY, checkpoint TEXT NOT NULL)"
        )
        self._db = db
        row = db.execute(
            "SELECT checkpoint FROM streampage_checkpoints WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else str(row[0]).encode()

    async def write(self, records: Sequence[Any]) -> None:
        encode = self._encoder.encode
        rows = [(encode(r).decode(),) for r in records]
        await self._run(self._write, rows)

    def _write(self, rows: list[tuple[str]]) -> None:
        db = self._db
        assert db is not None, "open() first"
        if not db.in_transaction:
            db.execute("BEGIN")
        db.executemany(f"INSERT INTO {self.table} (data) VALUES (?)", rows)

    async def commit(self, name: str, checkpoint: bytes) -> None:
        await self._run(self._commit, name, checkpoint.decode())

    def _commit(self, name: str, checkpoint: str) -> None:
        db = self._db
        assert db is not None, "open() first"
        if not db.in_transaction:
            db.execute("BEGIN")
        db.execute(
            "INSERT INTO streampage_checkpoints (name, checkpoint) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET checkpoint = excluded.checkpoint",
            (name, checkpoint),
        )
        db.execute("COMMIT")

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(self._close, db)

    @staticmethod
    def _close(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            db.execute("ROLLBACK")  # uncommitted records are discarded, as after a crash
        db.close()

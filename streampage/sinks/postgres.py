"""PostgreSQL through asyncpg: records by COPY, checkpoint in the same transaction.

The first ``write`` after a commit opens a transaction; each ``write`` COPYs its records
into the table (binary COPY, not an INSERT a row); ``commit`` upserts the checkpoint row in
that same transaction and commits it. After a crash the table holds exactly the records of
the pages its checkpoint names: an open transaction dies with its connection.

Without ``columns`` the table is ``(id bigserial primary key, data jsonb)``, one record a
row. With ``columns=SomeStruct`` (a ``msgspec.Struct``) it has one column per field
(int: bigint, float: double precision, str: text, bool: boolean, anything else: jsonb;
NOT NULL unless the field may be None), and records (dicts, or Structs) are converted to
that Struct first: validated, defaults filled, unknown keys dropped.

Needs ``pip install 'streampage[postgres]'``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import msgspec.inspect as mi
from yarl import URL

from .._errors import ConfigurationError, SinkError
from .._redact import REDACTED, redact_url
from ._base import missing_extra

__all__ = ["Postgres"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_CHECKPOINTS = "streampage_checkpoints"

_SCALARS: dict[type[mi.Type], str] = {
    mi.IntType: "bigint",
    mi.FloatType: "double precision",
    mi.StrType: "text",
    mi.BoolType: "boolean",
}


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


class Postgres:
    """Records into ``table`` (``"name"`` or ``"schema.name"``) of the database ``dsn``.

    ``dsn`` is a ``postgresql://user:password@host:port/database`` URL (asyncpg's form).
    ``create=True`` creates the table when it is absent; ``create=False`` requires it. The
    checkpoints live in ``streampage_checkpoints`` in the table's schema (created when
    absent), one row per checkpoint name.
    """

    def __init__(
        self,
        dsn: str,
        table: str = "items",
        *,
        columns: type | None = None,
        create: bool = True,
    ) -> None:
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
            self._to_row = lambda record: (record,)  # the jsonb codec encodes it
        else:
            self._layout, self._to_row = self._typed(columns)
        self._conn: Any = None
        self._tx: Any = None

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
        """``name`` in the table's schema, quoted: names are case-sensitive, as COPY has them."""
        return _quote(name) if self.schema is None else f"{_quote(self.schema)}.{_quote(name)}"

    def __repr__(self) -> str:
        table = self.table if self.schema is None else f"{self.schema}.{self.table}"
        return f"Postgres({redact_url(self.dsn)!r}, table={table!r})"

    # ------------------------------------------------------------------ the Sink protocol

    async def open(self, name: str) -> bytes | None:
        try:
            import asyncpg
        except ImportError:
            raise missing_extra("asyncpg", "postgres") from None
        try:
            conn = await asyncpg.connect(
                self.dsn, server_settings={"application_name": "streampage"}
            )
        except Exception as exc:
            message = self._scrub(f"{type(exc).__name__}: {exc}")
            error = SinkError(f"cannot connect to PostgreSQL at {redact_url(self.dsn)}: {message}")
            if message != f"{type(exc).__name__}: {exc}":
                raise error from None  # the cause would show the password
            raise error from exc
        try:
            encode = msgspec.json.Encoder().encode
            decode = msgspec.json.decode
            # binary jsonb is a version byte (1) and the JSON text
            await conn.set_type_codec(
                "jsonb",
                schema="pg_catalog",
                encoder=lambda value: b"\x01" + encode(value),
                decoder=lambda data: decode(data[1:]),
                format="binary",
            )
            await self._ensure_tables(conn)
            stored = await conn.fetchval(
                f"SELECT checkpoint::text FROM {self._qualified(_CHECKPOINTS)} WHERE name = $1",
                name,
            )
        except BaseException as exc:
            conn.terminate()
            if isinstance(exc, Exception) and not isinstance(exc, ConfigurationError):
                exc.add_note(f"while opening the Postgres sink ({self._where})")
            raise
        self._conn = conn
        return None if stored is None else str(stored).encode()

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
            await self._create(conn, f"CREATE TABLE IF NOT EXISTS {table} ({body})")
        checkpoints = self._qualified(_CHECKPOINTS)
        if await conn.fetchval("SELECT to_regclass($1)", checkpoints) is None:
            await self._create(
                conn,
                f"CREATE TABLE IF NOT EXISTS {checkpoints} (name text PRIMARY KEY, "
                "checkpoint jsonb NOT NULL, updated_at timestamptz DEFAULT now())",
            )

    @staticmethod
    async def _create(conn: Any, ddl: str) -> None:
        import asyncpg

        # created at the same moment by another connection: IF NOT EXISTS can race
        with contextlib.suppress(asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
            await conn.execute(ddl)

    def _connection(self) -> Any:
        if self._conn is None:
            raise RuntimeError(f"{self!r} is not open: call open() first")
        return self._conn

    async def write(self, records: Sequence[Any]) -> None:
        conn = self._connection()
        if not records:
            return
        try:
            rows = [self._to_row(r) for r in records]
            if self._tx is None:
                self._tx = conn.transaction()
                await self._tx.start()
            await conn.copy_records_to_table(
                self.table,
                records=rows,
                columns=[col for col, _, _ in self._layout],
                schema_name=self.schema,
            )
        except Exception as exc:
            exc.add_note(f"while writing {len(records)} records to Postgres {self._where}")
            raise

    async def commit(self, name: str, checkpoint: bytes) -> None:
        conn = self._connection()
        try:
            if self._tx is None:
                self._tx = conn.transaction()
                await self._tx.start()
            await conn.execute(
                f"INSERT INTO {self._qualified(_CHECKPOINTS)} (name, checkpoint, updated_at) "
                "VALUES ($1, $2::text::jsonb, now()) ON CONFLICT (name) DO UPDATE SET "
                "checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
                name,
                checkpoint.decode(),
            )
            tx, self._tx = self._tx, None
            await tx.commit()
        except Exception as exc:
            exc.add_note(f"while committing checkpoint {name!r} to Postgres {self._where}")
            raise

    async def close(self) -> None:
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        if conn is None:
            return
        try:
            if tx is not None and not conn.is_closed():
                await tx.rollback()  # uncommitted records are discarded, as after a crash
        except Exception:
            conn.terminate()  # the server rolls back what the connection had open
            return
        try:
            await conn.close(timeout=10)
        except Exception:
            conn.terminate()

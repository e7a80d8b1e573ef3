"""Sinks: where ``stream(...).records(...).into(sink)`` puts records, exactly once.

Built in: JSON Lines (optionally gzip), SQLite (standard library), PostgreSQL (asyncpg,
``pip install 'streampage[postgres]'``) and Parquet (pyarrow, ``streampage[parquet]``).
A sink of your own implements the four methods of ``Sink``; ``FileLock`` and ``state_dir``
give it the built-in file sinks' lock (one writer per checkpoint) and hidden state folder.
"""

from typing import Any

from ._base import Sink
from ._lock import FileLock, state_dir
from .jsonl import JSONLines
from .sqlite import SQLite

__all__ = ["FileLock", "JSONLines", "Parquet", "Postgres", "SQLite", "Sink", "state_dir"]


def __getattr__(name: str) -> Any:
    # The sinks with optional dependencies load on first use, so that importing
    # streampage.sinks never needs asyncpg or pyarrow.
    if name == "Postgres":
        from .postgres import Postgres

        return Postgres
    if name == "Parquet":
        from .parquet import Parquet

        return Parquet
    raise AttributeError(f"module 'streampage.sinks' has no attribute {name!r}")

"""Output targets (``-o``): the sink a target names, checked before anything is fetched."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._redact import redact_url
from . import UsageError


@dataclass
class _Target:
    """Where the records go: a sink, or stdout (sink None)."""

    sink: Any
    shown: str
    checkpointed: bool = True
    #: one Parquet file: written when a run completes, committed batches wait hidden
    merged_at_end: bool = False


_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")


def _target(
    text: str, create_dirs: bool = False, form: str | None = None, primary_key: str | None = None
) -> _Target:
    """The sink an ``-o`` target names; a one-line UsageError for anything else.
    ``primary_key`` (``--primary-key``) goes to a database sink, which upserts by it."""
    from .. import sinks

    keyed: dict[str, Any] = {} if primary_key is None else {"primary_key": primary_key}
    if primary_key is not None and not text.lower().startswith(
        ("sqlite:", "postgresql://", "postgres://")
    ):
        raise UsageError(
            "--primary-key applies to sqlite:/// and postgresql:// targets, not "
            f"{redact_url(text)!r}: a file or folder keeps every version of a record, in the "
            "order they came; leave --primary-key out and read the newest version of each "
            "key as docs/upserts.md shows"
        )

    if form is not None and not text.endswith(("/", os.sep)):
        raise UsageError(
            f"--format applies to a folder target (-o out/items/), not {text!r}, whose "
            "name says its format"
        )
    if text == "-":
        return _Target(None, "stdout", checkpointed=False)
    lowered = text.lower()
    if lowered.startswith("sqlite:"):
        parts = urlsplit(text)
        path = parts.netloc + (parts.path[1:] if parts.path.startswith("/") else parts.path)
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        table = options.pop("table", "items")
        if not path or options:
            raise UsageError(
                f"output {text!r}: write sqlite:///relative/path.db?table=NAME or "
                "sqlite:////absolute/path.db?table=NAME (table is the only option)"
            )
        _check_file(path, text, create_dirs)
        sqlite = sinks.SQLite(path, table=table, **keyed)
        return _Target(sqlite, f"{path} (SQLite, table {table})")
    if lowered.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(text)
        query = parse_qsl(parts.query, keep_blank_values=True)
        tables = [v for k, v in query if k == "table"]
        dsn = urlunsplit(
            parts._replace(query=urlencode([(k, v) for k, v in query if k != "table"]))
        )
        table = tables[-1] if tables else "items"
        try:
            sink = sinks.Postgres(dsn, table, **keyed)
        except ImportError as exc:
            raise UsageError(f"PostgreSQL output is not available here: {exc}") from None
        return _Target(sink, f"{redact_url(dsn)} (PostgreSQL, table {table})")
    if "://" in text:
        raise UsageError(_unknown_target(text, redact_url(text)))
    if text.endswith(("/", os.sep)):
        return _folder(text, form or "parquet", create_dirs)
    if Path(text).is_dir():
        raise UsageError(
            f"output {text!r} is a directory: end it with / to write a folder of part files "
            f"(-o {text.rstrip('/')}/), or name a file in it"
        )
    if lowered.endswith(_JSONL_SUFFIXES):
        _check_file(text, text, create_dirs)
        return _Target(sinks.JSONLines(text), f"{text} (JSON Lines)")
    if lowered.endswith(".parquet"):
        _check_file(text, text, create_dirs)
        try:
            sink = sinks.Parquet(text)
        except ImportError as exc:
            raise UsageError(f"Parquet output is not available here: {exc}") from None
        return _Target(sink, f"{text} (Parquet)", merged_at_end=True)
    raise UsageError(_unknown_target(text, text))


def _folder(text: str, form: str, create_dirs: bool) -> _Target:
    """A dataset folder: one part file per run, added without rewriting the others."""
    from .. import sinks

    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"output {text!r} is a file, not a folder: drop the trailing /")
    _check_file(str(folder), text, create_dirs, folder=True)
    if form == "parquet":
        try:
            return _Target(sinks.Parquet(text), f"{text} (folder of Parquet parts)")
        except ImportError as exc:
            raise UsageError(f"Parquet output is not available here: {exc}") from None
    sink = sinks.JSONLines(text, gzip=form == "jsonl.gz")
    return _Target(sink, f"{text} (folder of JSON Lines parts)")


def _unknown_target(text: str, shown: str) -> str:
    return (
        f"cannot tell what output {shown!r} is: write a .jsonl, .jsonl.gz, .ndjson or .parquet "
        "file, sqlite:///file.db?table=NAME, postgresql://user@host/db?table=NAME, or - for "
        "stdout"
    )


def _check_file(path: str, text: str, create_dirs: bool = False, folder: bool = False) -> None:
    p = Path(path)
    if p.is_dir() and not folder:
        raise UsageError(f"output {text!r} is a directory; name a file in it")
    parent = p.parent
    if not parent.exists() and not create_dirs:
        raise UsageError(
            f"output {text!r}: the folder {parent} does not exist; create it, or pass --create-dirs"
        )
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"output {text!r}: {parent} is not a writable directory")

"""A fetch for tests/test_crash_resume.py to SIGKILL: a paginated API into a sink, resumable.

    python tests/crash_job.py URL SINK_KIND TARGET [--resume] [--pages number|total|cursor]
        [--batch N] [--concurrency N] [--table NAME] [--tag TAG] [--die WHEN:CALL:PATTERN:N]

streams ``URL`` with ``.records("items").into(sink, batch=N, checkpoint="crash",
resume=...)`` under ``streampage.run``. ``SINK_KIND`` is jsonl, jsonl.gz, sqlite, parquet
(``TARGET`` a path) or postgres (``TARGET`` a DSN, ``--table`` the table). ``--pages``:
``number`` (the end is the first empty page), ``total`` (``total_pages`` in the first
page's body) or ``cursor`` (a Cursor walk over ``next_cursor``).

After each commit returns, the job prints ``commit`` and flushes, so that the test can tell
how far it got; at the end ``done <records> <committed pages>``. ``--tag`` is sent as the
``X-Crash-Run`` header, so that the API can count the pages of each run apart (a killed
run's requests may still be answered).
``--die after:fsync:*.journal:2`` makes the process SIGKILL itself as soon as the second
``os.fsync`` of a file matching ``*.journal`` has returned (``before:replace:*:1``: at its
first ``os.replace``, before the rename): a crash at an exact point of a file sink's commit
or close.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import streampage
from streampage import Cursor, PageNumber
from streampage.sinks import JSONLines, SQLite

KINDS = ("jsonl", "jsonl.gz", "sqlite", "postgres", "parquet")
PAGES = ("number", "total", "cursor")


class Reporting:
    """Passes every call to ``sink``; says on stdout when a commit has returned."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.pages = 0

    def __repr__(self) -> str:
        return repr(self.sink)

    async def open(self, name: str) -> bytes | None:
        return await self.sink.open(name)  # type: ignore[no-any-return]

    async def write(self, records: Sequence[Any]) -> None:
        await self.sink.write(records)

    async def commit(self, name: str, checkpoint: bytes) -> None:
        await self.sink.commit(name, checkpoint)
        print("commit", flush=True)

    async def finish(self, name: str) -> None:
        # the run delivered every page: a file sink merges or publishes (Parquet's file is
        # made here, not at close)
        finish = getattr(self.sink, "finish", None)
        if finish is not None:
            await finish(name)

    async def close(self) -> None:
        await self.sink.close()


def make_sink(kind: str, target: str, table: str) -> Any:
    if kind in ("jsonl", "jsonl.gz"):
        return JSONLines(target, gzip=kind == "jsonl.gz")
    if kind == "sqlite":
        return SQLite(target, table)
    if kind == "postgres":
        from streampage.sinks import Postgres

        return Postgres(target, table)
    if kind == "parquet":
        from streampage.sinks import Parquet

        return Parquet(target)
    raise SystemExit(f"unknown sink kind {kind!r}: one of {', '.join(KINDS)}")


def paginator(pages: str) -> Any:
    if pages == "number":
        return PageNumber()
    if pages == "total":
        return PageNumber(total_pages="total_pages")
    return Cursor(field="next_cursor")


def fd_path(fd: int) -> str:
    """The path of the file (or directory) open as ``fd``."""
    if sys.platform == "darwin":
        import fcntl

        raw = fcntl.fcntl(fd, fcntl.F_GETPATH, b"\0" * 1024)
        return raw.split(b"\0", 1)[0].decode()
    return os.readlink(f"/proc/self/fd/{fd}")


def die(spec: str) -> None:
    """SIGKILL this process at the point ``spec`` names: ``WHEN:CALL:PATTERN:N``, the N-th
    call of ``os.fsync`` (on a file whose path matches the glob PATTERN) or ``os.replace``
    (of a source path matching it), just ``before`` or ``after`` it. ``after:fsync:*.journal:1``:
    as soon as the journal's first fsync has returned."""
    when, call, rest = spec.split(":", 2)
    pattern, _, count = rest.rpartition(":")
    if when not in ("before", "after") or call not in ("fsync", "replace") or not pattern:
        raise SystemExit(f"--die {spec!r}: before|after:fsync|replace:PATTERN:N")
    real, n, calls = getattr(os, call), int(count), 0

    def wrapper(*args: Any) -> Any:
        nonlocal calls
        path = fd_path(args[0]) if call == "fsync" else os.fspath(args[0])
        hit = fnmatch.fnmatch(path, pattern) and (calls := calls + 1) == n
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(os, call, wrapper)


async def job(args: argparse.Namespace) -> None:
    sink = Reporting(make_sink(args.kind, args.target, args.table))
    stats = await (
        streampage.stream(
            args.url,
            pages=paginator(args.pages),
            concurrency=args.concurrency,
            headers={"X-Crash-Run": args.tag},
        )
        .records("items")
        .into(sink, batch=args.batch, checkpoint="crash", resume=args.resume)
    )
    print("done", stats.records, stats.committed_pages, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("target")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pages", choices=PAGES, default="number")
    parser.add_argument("--batch", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--table", default="items")
    parser.add_argument("--tag", default="", help="sent as the X-Crash-Run header")
    parser.add_argument("--die", default="", help="before|after:fsync|replace:PATTERN:N")
    args = parser.parse_args(argv)
    if args.die:
        die(args.die)
    streampage.run(job(args))


if __name__ == "__main__":
    main()

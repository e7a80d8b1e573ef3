"""Appending to an output that is already big: does it cost the new rows, or the whole output?

Issue 10. A scheduled job that runs ``streampage fetch ... --resume`` every hour against an
API that keeps growing adds a little to an output that keeps getting bigger. That is only
sustainable if an append costs time in proportion to the rows it adds, not to the rows the
output already holds. The issue's targets:

- ``append at 10^6 rows / append at 10^4 rows ~ 1.0`` for dataset folders
  (``Parquet("out/items/")``, ``JSONLines("out/items/")``: part files, one more a run),
  SQLite and PostgreSQL; the single Parquet file (``Parquet("out/items.parquet")``), which
  is merged into one file at the end of every complete run, rewrites the whole file, and is
  shown beside them as the contrast (a single JSON Lines file is appended in place);
- ``streampage fetch ... --resume`` on a finished 10^4-page output (nothing new to fetch)
  takes less than 1 s beyond the command's own start-up (``streampage --version``).

The append measured is the realistic one: a ``mode="resume"`` run of a finished page-number
run after the API grew. The server (aiohttp, in its own process) serves ``GET
/items?page=N`` as ``{"items": [100 records], "total_pages": P}``; ``/_pages?set=P`` changes
P between runs. An output of S rows is built once per sink by a complete run over S / 100
pages (``mode="new"``, not timed); then, in every round, a byte-for-byte copy of it (a copied
folder; for PostgreSQL a database created with ``TEMPLATE``) is made, P is raised by 10
pages (1,000 rows), and ``stream(url, pages=PageNumber(total_pages="total_pages",
items="items")).records("items").into(sink, mode="resume")`` runs in a fresh interpreter,
which times the ``await ... into(...)`` call alone (its imports are not timed): page 1 (for
the new total) and the 10 new pages are fetched, 1,000 rows committed, and the sink's
``finish`` (the Parquet file's merge) and ``close`` done. Afterwards, not timed, the client
counts the output's rows: every run must leave exactly S + 1,000 rows and a completeness
status of ``verified``, or the benchmark stops. The client also reports the bytes its
process read and wrote during the call (``rchar``/``wchar`` of ``/proc/self/io``: every
``read`` and ``write``, sockets included; PostgreSQL's own I/O is in its server and not
counted), which shows what an append touches, and the seconds spent in each kind of sink
call (``open``, ``write`` + ``commit``, ``finish`` + ``close``), which shows where a cost
that grows with the output comes from.

The CLI's resume runs ``streampage fetch URL --pages page --total-pages total_pages
--records items -o TARGET --resume`` (plus ``--no-progress --stats-json FILE``, to check
what it did) as a subprocess on a copy of the finished 10^6-row (10^4-page) Parquet folder
and SQLite outputs, with the API unchanged, interleaved with ``streampage --version``; the
wall time of the whole process, from spawn to exit, minus that of ``--version``, is what
the resume costs beyond start-up.

Sinks, in the order of the table: Parquet folder, JSON Lines folder, Parquet file, JSON Lines
file, SQLite (``SQLite(path, table="items")``, WAL, ``synchronous=FULL``) and PostgreSQL
(a throwaway cluster started as the tests start theirs, ``tests/pg_server.py``: fsync off;
skipped, with a note, when it cannot be started). A sink the library cannot write yet (the
Parquet folder, while it is being written) is skipped with a note.

The server runs on CPU 0 (with PostgreSQL and this parent, which mostly waits or copies),
the clients on CPU 1; rounds are interleaved and the order of the runs rotated each round.
Outputs are on the disk of the temporary directory and warm in the page cache (just copied),
as they would be right after the run that built them; every dirty page is written out
(``sync``) before each timed run, so that writing back a big copy never slows an append.

Usage::

    python benchmarks/sinks_append.py            # 10^4 and 10^6 rows, 7 rounds: ~4 min
    python benchmarks/sinks_append.py --quick    # 10^4 and 10^5 rows, 1 round: a smoke run

Writes the tables to ``results/sinks_append.md`` (``--quick``: ``results/sinks_append-quick.md``,
so a smoke run never replaces a real one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from _harness import (
    entry,
    has_uvloop,
    machine,
    serve_forever,
    snapshot_streampage,
    stop_server,
    write_result,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

PER_PAGE = 100  # records on each page
GROWTH = 10  # pages the API grows by before each timed resume: 1,000 rows
CHECKPOINT = "default"  # the CLI's checkpoint name, so that the CLI resumes the same outputs
FLAT_GOAL = 1.5  # append at the big size / at the small size, for the sinks meant to be flat
CLI_GOAL = 1.0  # seconds beyond start-up for a CLI resume of a finished run

#: sink kind: (as shown, the target as written in code, meant to be flat)
SINKS: dict[str, tuple[str, str, bool]] = {
    "parquet-folder": ("Parquet folder", 'Parquet("out/items/")', True),
    "jsonl-folder": ("JSON Lines folder", 'JSONLines("out/items/")', True),
    "parquet-file": ("Parquet file", 'Parquet("out/items.parquet")', False),
    "jsonl-file": ("JSON Lines file", 'JSONLines("out/items.jsonl")', True),
    "sqlite": ("SQLite", 'SQLite("out/items.db", table="items")', True),
    "postgres": ("PostgreSQL", 'Postgres(dsn, table="items")', True),
}
CLI_SINKS = ("parquet-folder", "sqlite")


# ---------------------------------------------------------------------- server (subprocess)


def record(number: int) -> dict[str, Any]:
    """One ~130-byte record; ``id`` is unique across pages, every type stays the same."""
    return {
        "id": number,
        "name": f"item{number:07d}",
        "email": f"user{number:07d}@example.com",
        "created": "2024-05-01T12:00:00Z",
        "score": number % 997 / 10,
        "active": number % 7 != 0,
    }


def serve_main(argv: Sequence[str]) -> None:
    """Serve the growing API until stdin closes (the parent exited) or SIGTERM.

    ``/items?page=N``: page N of P (``{"items": [...], "total_pages": P}``, an empty list past
    P). ``/_pages?set=P`` sets P (the API grew); ``/_stats`` says P, the requests served and
    the process's CPU seconds. Pages are encoded on demand: 10^4 pages of 100 records are
    130 MB, more than is worth holding."""
    parser = argparse.ArgumentParser(prog="sinks_append.py _serve")
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    from aiohttp import web

    state = {"pages": 1, "requests": 0}

    def rows(number: int) -> bytes:
        first = (number - 1) * PER_PAGE + 1
        found = [record(first + k) for k in range(PER_PAGE)]
        return json.dumps(found, separators=(",", ":")).encode()

    async def items(request: web.Request) -> web.Response:
        state["requests"] += 1
        raw = request.query.get("page", "1")
        number = int(raw) if raw.isdigit() else 0
        total = state["pages"]
        found = rows(number) if 1 <= number <= total else b"[]"
        body = b'{"items":%s,"total_pages":%d}' % (found, total)
        return web.Response(body=body, content_type="application/json")

    async def pages_view(request: web.Request) -> web.Response:
        state["pages"] = int(request.query["set"])
        return web.json_response({"pages": state["pages"]})

    async def stats_view(request: web.Request) -> web.Response:
        return web.json_response({**state, "cpu": time.process_time()})

    app = web.Application()
    app.router.add_get("/items", items)
    app.router.add_get("/_pages", pages_view)
    app.router.add_get("/_stats", stats_view)
    serve_forever(app)


# ---------------------------------------------------------------------- client (subprocess)


def make_sink(kind: str, target: str) -> Any:
    from streampage import sinks

    if kind in ("parquet-folder", "parquet-file"):
        return sinks.Parquet(target)
    if kind in ("jsonl-folder", "jsonl-file"):
        return sinks.JSONLines(target)
    if kind == "sqlite":
        return sinks.SQLite(target, table="items")
    if kind == "postgres":
        return sinks.Postgres(target, table="items")
    raise SystemExit(f"no sink {kind!r}")


#: the sink calls timed one by one, to say where an append's time goes
SINK_CALLS = ("open", "replace", "write", "commit", "finish", "close")


class TimedSink:
    """A sink that passes every call on to ``inner`` and adds up the seconds of each kind of
    call (``finish`` and ``replace`` exist only when ``inner`` has them, as ``into()`` looks
    them up by name)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = {}

    def __repr__(self) -> str:
        return repr(self.inner)

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if name not in SINK_CALLS:
            return found

        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await found(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

        return timed


def count_lines(paths: Sequence[Path]) -> int:
    lines = 0
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                lines += chunk.count(b"\n")
    return lines


def count_rows(kind: str, target: str) -> tuple[int, int | None]:
    """(rows in a file output as its readers see it, visible part files of a folder)."""
    if kind == "parquet-folder" or kind == "parquet-file":
        import pyarrow.parquet as pq

        if kind == "parquet-file":
            return pq.read_metadata(target).num_rows, None
        parts = sorted(Path(target).glob("part-*.parquet"))
        return sum(pq.read_metadata(p).num_rows for p in parts), len(parts)
    if kind == "jsonl-folder":
        parts = sorted(Path(target).glob("part-*.jsonl"))
        return count_lines(parts), len(parts)
    if kind == "jsonl-file":
        return count_lines([Path(target)]), None
    with contextlib.closing(sqlite3.connect(target)) as db:
        return int(db.execute("SELECT count(*) FROM items").fetchone()[0]), None


async def count_table(dsn: str) -> tuple[int, None]:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM items")), None
    finally:
        await connection.close()


def proc_io() -> dict[str, int]:
    """This process's read and written bytes so far (Linux), all threads included."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/io").read_text().splitlines():
            key, _, value = line.partition(":")
            found[key] = int(value)
    return found


def client_main(argv: Sequence[str]) -> None:
    """One run into one sink, timed in-process; prints one JSON line.

    ``--mode new`` builds an output (every page the server has), ``--mode resume`` goes on
    from its checkpoint. Only the ``await ... into(...)`` call is timed; the rows are counted
    after it."""
    parser = argparse.ArgumentParser(prog="sinks_append.py _client")
    parser.add_argument("kind", choices=tuple(SINKS))
    parser.add_argument("--target", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("new", "resume"), required=True)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import streampage

    sink = TimedSink(make_sink(args.kind, args.target))

    async def run() -> dict[str, Any]:
        stream = streampage.stream(
            args.url, pages=streampage.PageNumber(total_pages="total_pages", items="items")
        )
        before = proc_io()
        t0 = time.perf_counter()
        stats = await stream.records("items").into(sink, checkpoint=CHECKPOINT, mode=args.mode)
        wall = time.perf_counter() - t0
        after = proc_io()
        if args.kind == "postgres":
            rows, parts = await count_table(args.target)
        else:
            rows, parts = count_rows(args.kind, args.target)
        return {
            "wall": wall,
            "requests": stats.requests,
            "records": stats.records,
            "committed_pages": stats.committed_pages,
            "resumed_pages": stats.resumed_pages,
            "status": stream.completeness.status,
            "read": after.get("rchar", 0) - before.get("rchar", 0) if after else None,
            "written": after.get("wchar", 0) - before.get("wchar", 0) if after else None,
            "rows": rows,
            "parts": parts,
            "sink_seconds": sink.seconds,
        }

    out = streampage.run(run(), use_uvloop=False)
    out["streampage"] = streampage.__file__
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    """A throwaway cluster, started by the tests' own fixture (``tests/pg_server.py``)."""

    server: str  # postgresql://postgres@127.0.0.1:PORT/
    psql: Path
    version: str
    stop: Callable[[], None]

    def run(self, sql: str, *, attempts: int = 20) -> str:
        """Run ``sql`` on the ``postgres`` database; a ``TEMPLATE`` copy right after the
        client that wrote the template exits may find its session still closing: retry."""
        base = self.server.rstrip("/")
        for attempt in range(attempts):
            done = subprocess.run(
                [str(self.psql), f"{base}/postgres", "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                return done.stdout.strip()
            if "being accessed by other users" not in done.stderr or attempt == attempts - 1:
                raise SystemExit(f"psql {sql!r} failed: {done.stderr.strip()}")
            time.sleep(0.1)
        raise AssertionError("unreachable")


def start_postgres() -> Postgres | str:
    """The cluster, or why there is none (a note to print)."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import pg_server
        import pytest
    except ImportError as exc:
        return f"PostgreSQL skipped: tests/pg_server.py needs {exc.name} ({exc})"
    finally:
        sys.path.pop(0)
    fixture: Any = pg_server.postgres_dsn
    started: Generator[str] = getattr(fixture, "__wrapped__", fixture)()
    try:
        dsn = next(started)
        psql = pg_server._bin_dir() / "psql"
    except (pytest.fail.Exception, Exception) as exc:
        started.close()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL skipped: the server could not be started ({first[:200]})"

    def stop() -> None:
        with contextlib.suppress(Exception, pytest.fail.Exception):
            started.close()

    pg = Postgres(server=dsn.rsplit("/", 1)[0] + "/", psql=psql, version="", stop=stop)
    pg.version = pg.run("SHOW server_version").split()[0]
    return pg


# ---------------------------------------------------------------------- parent


@dataclass
class Run:
    """One timed resume (or build) into one sink, as its client reported it."""

    kind: str
    size: int  # rows in the output before the run
    round: int
    wall: float
    requests: int
    records: int
    rows: int
    parts: int | None
    read: int | None
    written: int | None
    sink_seconds: dict[str, float]

    def calls(self, *names: str) -> float:
        return sum(self.sink_seconds.get(name, 0.0) for name in names)


@dataclass
class CliRun:
    what: str  # "version", or a sink kind
    round: int
    wall: float
    requests: int | None
    records: int | None
    status: str | None  # the run's completeness status, from --stats-json


@dataclass
class Setup:
    """Everything a run needs to know, fixed for the whole invocation."""

    base: str
    src: Path
    work: Path
    sizes: tuple[int, int]
    kinds: list[str]
    client_cpu: int | None
    timeout: float
    pg: Postgres | None
    notes: list[str] = field(default_factory=list)
    #: 1-minute load average when the rounds began and when they ended: the machine is shared
    load: list[float] = field(default_factory=list)
    builds: dict[tuple[str, int], Run] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    cli_runs: list[CliRun] = field(default_factory=list)


def get_json(url: str) -> dict[str, Any]:
    """GET a JSON object over plain HTTP (urllib: the parent imports nothing it measures)."""
    with urllib.request.urlopen(url, timeout=30) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def set_pages(setup: Setup, pages: int) -> None:
    if get_json(f"{setup.base}/_pages?set={pages}")["pages"] != pages:
        raise SystemExit("the server did not take its new page count")


def pin_client(setup: Setup) -> Callable[[], None] | None:
    cpu = setup.client_cpu
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def target_in(setup: Setup, kind: str, place: str) -> str:
    """The target of ``kind`` at ``place`` (a folder under the work dir, or a database)."""
    if kind == "postgres":
        assert setup.pg is not None
        return setup.pg.server + place
    where = setup.work / place
    return {
        "parquet-folder": f"{where / 'items'}/",
        "jsonl-folder": f"{where / 'items'}/",
        "parquet-file": str(where / "items.parquet"),
        "jsonl-file": str(where / "items.jsonl"),
        "sqlite": str(where / "items.db"),
    }[kind]


def template_name(kind: str, size: int) -> str:
    return f"tpl_{size}" if kind == "postgres" else f"templates/{kind}-{size}"


def make_place(setup: Setup, kind: str, place: str, template: str | None) -> None:
    """An empty place for an output (``template=None``), or a copy of a built one."""
    if kind == "postgres":
        assert setup.pg is not None
        copy = f" TEMPLATE {template}" if template else ""
        setup.pg.run(f"CREATE DATABASE {place}{copy}")
    elif template is None:
        (setup.work / place).mkdir(parents=True)
    else:
        shutil.copytree(setup.work / template, setup.work / place, symlinks=True)


def drop_place(setup: Setup, kind: str, place: str) -> None:
    if kind == "postgres":
        assert setup.pg is not None
        setup.pg.run(f"DROP DATABASE {place}")
    else:
        shutil.rmtree(setup.work / place)


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def settle() -> None:
    """Write every dirty page out before a timed run. A copy of 10^6 rows leaves 100+ MB
    dirty in the page cache; on ext4 (data=ordered) a timed run's fsync could wait for
    the writeback of those, so that a bigger copy would read as a slower append."""
    if hasattr(os, "sync"):
        os.sync()


def run_client(setup: Setup, kind: str, target: str, mode: str) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "_client", kind]
    argv += ["--target", target, "--url", f"{setup.base}/items", "--mode", mode]
    env = {**os.environ, "PYTHONPATH": str(setup.src)}
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        timeout=setup.timeout,
        check=False,
        preexec_fn=pin_client(setup),
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"client {kind} ({mode}) failed (exit {done.returncode}):\n"
            f"{done.stderr.strip()[-3000:] or done.stdout.strip()[-3000:]}"
        )
    out: dict[str, Any] = json.loads(lines[-1])
    if not Path(out["streampage"]).is_relative_to(setup.src):
        raise SystemExit(f"client {kind} imported {out['streampage']}, not the copy")
    return out


def as_run(kind: str, size: int, rnd: int, out: dict[str, Any]) -> Run:
    return Run(
        kind=kind,
        size=size,
        round=rnd,
        wall=out["wall"],
        requests=out["requests"],
        records=out["records"],
        rows=out["rows"],
        parts=out["parts"],
        read=out["read"],
        written=out["written"],
        sink_seconds=out["sink_seconds"],
    )


def probe_parquet_folder(setup: Setup) -> str | None:
    """Why ``Parquet("folder/")`` cannot be measured with this streampage, or None if it can:
    a two-page run into it must leave its rows in ``part-*.parquet`` files in the folder."""
    set_pages(setup, 2)
    place = "probe"
    make_place(setup, "parquet-folder", place, None)
    target = target_in(setup, "parquet-folder", place)
    try:
        out = run_client(setup, "parquet-folder", target, "new")
    except SystemExit as exc:
        last = str(exc).strip().splitlines()[-1]
        return f'`Parquet("out/items/")` failed with this streampage: {last[:200]}'
    finally:
        drop_place(setup, "parquet-folder", place)
    if out["rows"] != 2 * PER_PAGE or not out["parts"]:
        return (
            '`Parquet("out/items/")` wrote no part-*.parquet files into the folder with this '
            "streampage (dataset folders are not in its Parquet sink yet)"
        )
    return None


def build_templates(setup: Setup) -> None:
    """Every sink's output at each size, by one complete run (not timed by the rounds)."""
    for size in setup.sizes:
        set_pages(setup, size // PER_PAGE)
        for kind in setup.kinds:
            place = template_name(kind, size)
            make_place(setup, kind, place, None)
            out = run_client(setup, kind, target_in(setup, kind, place), "new")
            if out["rows"] != size or out["status"] != "verified":
                raise SystemExit(
                    f"building {kind} at {size:,} rows left {out['rows']:,} rows ({out['status']})"
                )
            setup.builds[(kind, size)] = as_run(kind, size, -1, out)
            print(
                f"built {SINKS[kind][0]:>17} at {size:>9,} rows: {out['wall']:6.2f} s "
                f"({size / out['wall']:,.0f} rows/s, not timed in the rounds)",
                flush=True,
            )


def measure_appends(setup: Setup, rounds: dict[int, int]) -> None:
    """Each (sink, size) once per round on a fresh copy, the order rotated each round."""
    combos = [(kind, size) for size in setup.sizes for kind in setup.kinds]
    most = max(rounds.values())
    for r in range(most):
        shift = r * len(combos) // most
        order = combos[shift:] + combos[:shift]
        for kind, size in order:
            if r >= rounds[size]:
                continue
            place = f"r{r}_{size}" if kind == "postgres" else f"runs/{kind}-{size}-{r}"
            make_place(setup, kind, place, template_name(kind, size))
            set_pages(setup, size // PER_PAGE + GROWTH)
            settle()
            try:
                out = run_client(setup, kind, target_in(setup, kind, place), "resume")
            finally:
                drop_place(setup, kind, place)
            grown = size + GROWTH * PER_PAGE
            if (
                out["rows"] != grown
                or out["records"] != GROWTH * PER_PAGE
                or out["status"] != "verified"
            ):
                raise SystemExit(
                    f"{kind} at {size:,} rows: the resume left {out['rows']:,} rows (expected "
                    f"{grown:,}), delivered {out['records']:,} records, status {out['status']}"
                )
            run = as_run(kind, size, r, out)
            setup.runs.append(run)
            io = (
                f"  read {mb(run.read)}, wrote {mb(run.written)}" if run.written is not None else ""
            )
            print(
                f"round {r + 1}/{most} {SINKS[kind][0]:>17} at {size:>9,} rows: "
                f"{run.wall * 1000:8.1f} ms (open {run.calls('open') * 1000:.1f}, "
                f"finish + close {run.calls('finish', 'close') * 1000:.1f})  "
                f"{run.requests} requests{io}",
                flush=True,
            )


def streampage_command() -> list[str]:
    """The console script beside this interpreter (the installed ``streampage``), else
    ``python -m streampage``."""
    script = Path(sys.executable).with_name("streampage")
    return [str(script)] if script.exists() else [sys.executable, "-m", "streampage"]


def cli_argv(setup: Setup, kind: str, target: str, stats: Path) -> list[str]:
    output = f"sqlite:///{target}?table=items" if kind == "sqlite" else target
    return [
        *streampage_command(),
        "fetch",
        f"{setup.base}/items",
        "--pages",
        "page",
        "--total-pages",
        "total_pages",
        "--records",
        "items",
        "-o",
        output,
        "--resume",
        "--no-progress",
        "--stats-json",
        str(stats),
    ]


def measure_cli(setup: Setup, rounds: int) -> None:
    """``streampage --version`` and a CLI resume of each finished output, interleaved."""
    size = setup.sizes[1]
    set_pages(setup, size // PER_PAGE)  # the API as the finished run left it: nothing new
    kinds = [k for k in CLI_SINKS if k in setup.kinds]
    whats = ["version", *kinds]
    env = {**os.environ, "PYTHONPATH": str(setup.src)}
    where = subprocess.run(
        [sys.executable, "-c", "import streampage; print(streampage.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=setup.work,  # not the repository: -c and -m put the current folder first
        check=True,
    ).stdout.strip()
    if not Path(where).is_relative_to(setup.src):
        raise SystemExit(f"the command would import {where}, not the copy")
    for r in range(rounds):
        order = whats[r % len(whats) :] + whats[: r % len(whats)]
        for what in order:
            place = f"cli/{what}-{r}"
            stats = setup.work / f"cli-stats-{what}-{r}.json"
            if what == "version":
                argv = [*streampage_command(), "--version"]
            else:
                make_place(setup, what, place, template_name(what, size))
                argv = cli_argv(setup, what, target_in(setup, what, place), stats)
            settle()
            t0 = time.perf_counter()
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=env,
                cwd=setup.work,
                timeout=setup.timeout,
                check=False,
                preexec_fn=pin_client(setup),
            )
            wall = time.perf_counter() - t0
            if what != "version":
                drop_place(setup, what, place)
            if done.returncode != 0:
                raise SystemExit(
                    f"`{' '.join(argv)}` exited {done.returncode}:\n"
                    f"{(done.stderr or done.stdout).strip()[-3000:]}"
                )
            requests = records = status = None
            if what != "version":
                document = json.loads(stats.read_text())
                stats.unlink()
                requests, records = document["requests"], document["records"]
                status = document["completeness"]["status"]
                if records != 0:
                    raise SystemExit(
                        f"the CLI resume of a finished {what} output delivered {records} "
                        "records: expected none (the API did not grow)"
                    )
            setup.cli_runs.append(CliRun(what, r, wall, requests, records, status))
            shown = "streampage --version" if what == "version" else f"fetch --resume {what}"
            asked = "" if requests is None else f"  {requests} request(s), {status}"
            print(f"round {r + 1}/{rounds} {shown:>30}: {wall:6.3f} s{asked}", flush=True)


# ---------------------------------------------------------------------- report


def mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def power(n: int) -> str:
    exponent = len(str(n)) - 1
    return f"10^{exponent}" if n == 10**exponent else f"{n:,}"


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def median_of(runs: Sequence[Run], pick: Callable[[Run], float | int | None]) -> float | None:
    values = [v for v in (pick(r) for r in runs) if v is not None]
    return statistics.median(values) if values else None


def report(setup: Setup, args: argparse.Namespace, code: str, rounds: dict[int, int]) -> str:
    small, big = setup.sizes
    by: dict[tuple[str, int], list[Run]] = {}
    for run in setup.runs:
        by.setdefault((run.kind, run.size), []).append(run)
    med = {key: statistics.median(r.wall for r in runs) for key, runs in by.items()}
    versions = [f"SQLite {sqlite3.sqlite_version}"]
    with contextlib.suppress(PackageNotFoundError):
        versions.insert(0, f"pyarrow {version('pyarrow')}")
    if setup.pg is not None:
        versions.append(f"PostgreSQL {setup.pg.version} (fsync off)")
    rounds_text = ", ".join(f"{rounds[s]} at {power(s)} rows" for s in setup.sizes)
    load = " to ".join(f"{x:.1f}" for x in setup.load)

    lines = [
        f'## Appending {GROWTH * PER_PAGE:,} rows ({GROWTH} new pages, `mode="resume"`) to an '
        f"output of {power(small)} and of {power(big)} rows",
        "",
        f"streampage {code}; {machine()}; {', '.join(versions)}; rounds: {rounds_text}, "
        f"interleaved; load average {load} over the rounds.",
        "",
        f"| sink | target | {power(small)} rows: ms | spread | {power(big)} rows: ms | spread "
        f"| x ({power(big)} / {power(small)}) | read, {power(big)} | written, {power(big)} "
        "| goal | |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]

    def spread(key: tuple[str, int]) -> str:
        walls = [r.wall for r in by[key]]
        return f"±{(max(walls) - min(walls)) / 2 / med[key]:.0%}"

    for kind in setup.kinds:
        name, written_as, flat = SINKS[kind]
        ratio = med[(kind, big)] / med[(kind, small)]
        pg = kind == "postgres"
        read = median_of(by[(kind, big)], lambda r: r.read)
        wrote = median_of(by[(kind, big)], lambda r: r.written)
        goal = f"about 1x (<= {FLAT_GOAL:g}x)" if flat else "(grows: the contrast)"
        lines.append(
            f"| {name} | `{written_as}` "
            f"| {med[(kind, small)] * 1000:,.1f} | {spread((kind, small))} "
            f"| {med[(kind, big)] * 1000:,.1f} | {spread((kind, big))} | {ratio:.2f}x "
            f"| {mb(None if read is None else int(read))}{' (client)' if pg else ''} "
            f"| {mb(None if wrote is None else int(wrote))}{' (client)' if pg else ''} "
            f"| {goal} | {verdict(ratio <= FLAT_GOAL) if flat else ''} |"
        )

    lines += [
        "",
        "| where the time went (medians, ms) | rows | whole call | `open` | `write` + `commit` "
        "| `finish` + `close` | outside the sink |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for kind in setup.kinds:
        for size in setup.sizes:
            runs = by[(kind, size)]

            def ms(pick: Callable[[Run], float], runs: list[Run] = runs) -> str:
                return f"{statistics.median(pick(r) for r in runs) * 1000:,.1f}"

            lines.append(
                f"| {SINKS[kind][0]} | {power(size)} | {ms(lambda r: r.wall)} "
                f"| {ms(lambda r: r.calls('open'))} "
                f"| {ms(lambda r: r.calls('write', 'commit'))} "
                f"| {ms(lambda r: r.calls('finish', 'close'))} "
                f"| {ms(lambda r: r.wall - r.calls(*SINK_CALLS))} |"
            )

    lines += [
        "",
        "| sink | build at " + " | build at ".join(power(s) for s in setup.sizes) + " |",
        "|---|" + "--:|" * len(setup.sizes),
    ]
    for kind in setup.kinds:
        cells = []
        for size in setup.sizes:
            built = setup.builds[(kind, size)]
            cells.append(f"{built.wall:.2f} s ({size / built.wall:,.0f} rows/s)")
        lines.append(f"| {SINKS[kind][0]} | " + " | ".join(cells) + " |")

    cli = report_cli(setup) if setup.cli_runs else []
    lines += cli
    requests = sorted({r.requests for r in setup.runs})
    lines += [
        "",
        f"*ms* is the median over rounds of the wall time of `await stream(url, pages="
        f'PageNumber(total_pages="total_pages", items="items")).records("items").into(sink, '
        f'mode="resume")`, timed in a fresh interpreter, on a byte-for-byte copy (made before, '
        f'not timed) of an output built by one complete run (`mode="new"`, the *build* table) '
        f"after the API grew by {GROWTH} pages of {PER_PAGE} records: each run sent "
        f"{' or '.join(str(n) for n in requests)} requests (page 1 for the new total, then the "
        f"new pages), committed {GROWTH * PER_PAGE:,} rows in batches of 1,000, left "
        f"exactly the old rows plus {GROWTH * PER_PAGE:,} (counted after the run) and was "
        f"`verified` complete. *spread* is half the min-max range; *x ({power(big)} / "
        f"{power(small)})* the ratio of the medians. *read* and *written* are the bytes the "
        f"client process read and wrote during the call at {power(big)} rows (`rchar`/`wchar` "
        "of /proc/self/io, sockets included; PostgreSQL's own reads and writes are in its "
        "server, not counted). *Where the time went* splits the same call by the sink's "
        "methods (each timed around its `await`; a batch commits while the next pages are "
        "fetched, so *outside the sink* is the rest of the call: fetching, decoding, waiting). "
        "Server: aiohttp"
        + (" on uvloop" if has_uvloop() else "")
        + " in its own process"
        + (f" on CPU 0, clients on CPU {setup.client_cpu}" if setup.client_cpu is not None else "")
        + "; clients on asyncio's loop. Outputs in a temporary directory on the local disk, "
        "warm in the page cache, written out (`sync`) before each timed run. The machine is "
        "shared: the load average says how busy it was.",
    ]
    if setup.notes:
        lines += ["", *[f"Note: {note}." for note in setup.notes]]

    lines += ["", "### For the README", "", *readme_table(setup, args, med, rounds)]
    return "\n".join(lines) + "\n"


def cli_medians(setup: Setup) -> dict[str, float]:
    whats = sorted({c.what for c in setup.cli_runs})
    return {w: statistics.median(c.wall for c in setup.cli_runs if c.what == w) for w in whats}


def report_cli(setup: Setup) -> list[str]:
    med = cli_medians(setup)
    start = med["version"]
    pages = setup.sizes[1] // PER_PAGE
    lines = [
        "",
        f"| `streampage fetch URL --pages page --total-pages total_pages --records items "
        f"-o TARGET --resume`, finished {pages:,}-page output, nothing new | wall s | beyond "
        f"start-up | requests | completeness | goal | |",
        "|---|--:|--:|--:|---|--:|---|",
        f"| start-up: `streampage --version` | {start:.3f} | - | - | - | | |",
    ]
    for kind in CLI_SINKS:
        if kind not in med:
            continue
        runs = [c for c in setup.cli_runs if c.what == kind]
        requests = statistics.median(c.requests or 0 for c in runs)
        statuses = ", ".join(sorted({c.status or "?" for c in runs}))
        beyond = med[kind] - start
        target = "out/items/" if kind == "parquet-folder" else "sqlite:///out/items.db?table=items"
        lines.append(
            f"| {SINKS[kind][0]} (`-o {target}`) | {med[kind]:.3f} | {beyond:.3f} "
            f"| {requests:g} | {statuses} | < {CLI_GOAL:g} s | {verdict(beyond < CLI_GOAL)} |"
        )
    lines += [
        "",
        "The CLI rows are the median wall time of the whole process (spawn to exit, pinned as "
        "the clients are), interleaved with `streampage --version` in the same rounds; "
        "*beyond start-up* is the difference of the medians. The command also had "
        "`--no-progress --stats-json FILE`, to check that it delivered no record; "
        "*requests* and *completeness* are from that file.",
    ]
    return lines


def readme_table(
    setup: Setup,
    args: argparse.Namespace,
    med: dict[tuple[str, int], float],
    rounds: dict[int, int],
) -> list[str]:
    small, big = setup.sizes
    low, high = min(rounds.values()), max(rounds.values())
    counted = (
        "1 round" if high == 1 else f"{low}-{high} rounds" if low != high else f"{high} rounds"
    )
    lines = [f"`make bench-sinks` (`benchmarks/sinks_append.py`; same machine, {counted}"]
    lines[0] += (
        f'): a `mode="resume"` run after the API grew by {GROWTH} pages '
        f"({GROWTH * PER_PAGE:,} rows), into an output of {power(small)} and of {power(big)} "
        "rows, outputs built beforehand:"
    )
    lines += [
        "",
        f"| append {GROWTH * PER_PAGE:,} rows to | {power(small)} rows | {power(big)} rows | x |",
        "|---|--:|--:|--:|",
    ]
    for kind in setup.kinds:
        name, written_as, _ = SINKS[kind]
        lines.append(
            f"| {name} (`{written_as}`) | {med[(kind, small)] * 1000:,.0f} ms "
            f"| {med[(kind, big)] * 1000:,.0f} ms | {med[(kind, big)] / med[(kind, small)]:.2f}x |"
        )
    if setup.cli_runs:
        cm = cli_medians(setup)
        start = cm["version"]
        cells = [f"{SINKS[k][0]} {cm[k] - start:.2f} s" for k in CLI_SINKS if k in cm]
        lines += [
            "",
            f"`streampage fetch ... --resume` on a finished {big // PER_PAGE:,}-page output "
            f"(nothing new): {', '.join(cells)} beyond the command's start-up "
            f"(`streampage --version`, {start:.2f} s).",
        ]
    if setup.notes:
        lines += ["", *[f"{note}." for note in setup.notes]]
    return lines


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description="appending 1,000 rows to outputs of 10^4 and 10^6 rows, per sink"
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds at the small size (7)")
    parser.add_argument(
        "--big-rounds", type=int, default=None, help="rounds at the big size (default: --rounds)"
    )
    parser.add_argument("--small", type=int, default=10_000, help="rows (default 10,000)")
    parser.add_argument("--big", type=int, default=1_000_000, help="rows (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10^4, 10^5, 1 round")
    parser.add_argument(
        "--sinks",
        default=",".join(SINKS),
        help=f"the sinks to measure, comma-separated (default: all: {','.join(SINKS)})",
    )
    parser.add_argument("--no-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument("--no-cli", action="store_true", help="leave the CLI resume out")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and clients")
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args()
    if args.quick:
        args.small, args.big, args.rounds, args.big_rounds = 10_000, 100_000, 1, 1
    big_rounds = args.rounds if args.big_rounds is None else args.big_rounds
    if args.rounds < 1 or big_rounds < 1:
        parser.error("--rounds and --big-rounds must be at least 1")
    if args.small % PER_PAGE or args.big % PER_PAGE or not 0 < args.small < args.big:
        parser.error(f"--small < --big, both multiples of {PER_PAGE}")
    chosen = [k.strip() for k in args.sinks.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in SINKS]
    if unknown or not chosen:
        parser.error(f"--sinks: unknown {', '.join(unknown)}; choose from {', '.join(SINKS)}")
    if "postgres" not in chosen:
        args.no_postgres = True
    rounds = {args.small: args.rounds, args.big: big_rounds}
    output: Path = args.output or RESULTS / (
        "sinks_append-quick.md" if args.quick else "sinks_append.md"
    )

    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {0})  # the parent mostly waits: keep it off the client's core
    t_start = time.perf_counter()
    notes: list[str] = []
    pg: Postgres | None = None
    with contextlib.ExitStack() as cleanup:  # on the way out: server, work folder, PostgreSQL
        if args.no_postgres:
            if "postgres" in chosen:
                notes.append("PostgreSQL left out (--no-postgres)")
        else:
            started = start_postgres()  # started from CPU 0: the server's side of the machine
            if isinstance(started, str):
                notes.append(started)
                print(f"note: {started}", flush=True)
            else:
                pg = started
                cleanup.callback(pg.stop)
        tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="streampage-sinks-"))
        src = Path(tmp) / "src"
        work = Path(tmp) / "work"
        src.mkdir()
        work.mkdir()
        code = snapshot_streampage(src)
        server = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_serve",
                *(["--cpu", "0"] if pin else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        cleanup.callback(stop_server, server)
        assert server.stdout is not None
        first = server.stdout.readline()
        if not first:
            raise SystemExit(f"the server did not start (exit {server.wait()})")
        base = f"http://127.0.0.1:{json.loads(first)['port']}"
        kinds = [k for k in SINKS if k in chosen and (k != "postgres" or pg is not None)]
        setup = Setup(
            base=base,
            src=src,
            work=work,
            sizes=(args.small, args.big),
            kinds=kinds,
            client_cpu=1 if pin else None,
            timeout=600.0,
            pg=pg,
            notes=notes,
        )
        print(f"streampage {code}\nserver {base}/items, work in {work}", flush=True)
        why = probe_parquet_folder(setup) if "parquet-folder" in kinds else None
        if why is not None:
            setup.kinds.remove("parquet-folder")
            notes.append(f"Parquet folder skipped: {why}")
            print(f"note: Parquet folder skipped: {why}", flush=True)
        build_templates(setup)
        settle()
        setup.load.append(load_average())
        measure_appends(setup, rounds)
        if args.no_cli or not any(k in setup.kinds for k in CLI_SINKS):
            notes.append("CLI resume left out")
        else:
            measure_cli(setup, args.rounds)
        setup.load.append(load_average())
    if big_rounds != args.rounds:
        notes.append(
            f"{big_rounds} round(s) at {power(args.big)} rows, {args.rounds} at "
            f"{power(args.small)} (--big-rounds)"
        )
    table = report(setup, args, code, rounds)
    print()
    print(table, end="")
    print(f"\n(whole benchmark: {time.perf_counter() - t_start:.0f} s)")
    write_result(output, table)


if __name__ == "__main__":
    entry(main, serve=serve_main, client=client_main)

"""One benchmark client run, in a fresh process: fetch pages 1..N and report measurements as JSON.

Run by ``bench.py`` once per measurement, so that peak RSS (``ru_maxrss``) and CPU time
belong to one client and one run only. Each client imports only what it uses, for the same
reason. Usage::

    python benchmarks/clients.py CLIENT --url URL --pages N [--concurrency C] [--cpu K]
        [--retry-backoff SECONDS] [--sources S] [--target T --table X --batch B]
    python benchmarks/clients.py verify KIND --target T [--table X] --pages N

Clients (``--client``):

- ``streampage`` / ``streampage-uvloop``: ``streampage.stream(url, pages=PageNumber(1, N))``,
  with its default retry policy (``--retry-backoff`` changes only ``RetryPolicy.backoff``)
  and ``on_error="raise"``: a page that fails after its retries ends the stream, and every
  page not delivered counts as lost.
- ``handloop`` / ``handloop-uvloop``: the reference, a minimal hand-written worker loop: a
  bounded queue fed with page numbers, C workers, one keep-alive session, msgspec decode,
  nothing kept.
- ``gather``: one task per page, ``asyncio.gather``, ``TCPConnector(limit=C)``, ``resp.json()``.
- ``threads``: ``ThreadPoolExecutor(C).map`` with one ``requests.Session`` per thread.

Many sources (``--sources S``: pages 1..N are S cursor walks of N/S pages each, served as
``URL?src=K`` then ``URL?src=K&cursor=C`` with C each page's ``next_cursor``):

- ``sources-streampage``: one ``streampage.stream`` over the S sources
  (``Source(url, params={"src": K}, key=K)``), ``pages=Cursor(field="next_cursor",
  param="cursor")``, ``concurrency=C``, on asyncio's loop.
- ``sources-handloop``: the hand-written reference: per source a coroutine that walks its
  cursor chain, one request at a time under a shared ``asyncio.Semaphore(C)``, all S started
  with ``asyncio.gather``, one session with ``TCPConnector(limit=C)``, msgspec decode.

Both count the pages of each source; a source that delivered more or fewer than N/S pages is
reported as an error (and missing pages as lost).

Sinks (``--target T``; pages 1..N, each with its records under ``"items"``):

- ``sink-none``: the baseline, ``streampage.stream(...).records("items")`` drained by a plain
  ``async for`` that counts the records (the same extraction as ``.into()``, no sink).
- ``sink-jsonl``, ``sink-jsonl-gz``, ``sink-sqlite``, ``sink-postgres``, ``sink-parquet``:
  ``stream(...).records("items").into(sink, batch=B)`` (``--batch``, default 1000) into
  ``JSONLines(T)``, ``JSONLines(T, gzip=True)``, ``SQLite(T)``, ``Postgres(T, table=TABLE)``
  (``--table``) and ``Parquet(T)``. The target must be fresh: a new file, a new table.

``python clients.py verify KIND --target T [--table TABLE] --pages N`` then reads the target
back in another fresh process and reports how many of the N x 14 expected records it holds
(``lost``) and how many rows are not one of them, or a second copy (``extra``).

Only streampage retries. The hand-written loop and the gather pattern count a failed page
(HTTP error or exception) and go on, as they are usually written, so against the flaky
endpoint their failed pages are lost pages.

Time to first page is from the start of the fetch (before the session exists) to the first
decoded page being available to the code that consumes pages: for ``gather`` that is when
``gather`` returns, because that is when the caller first sees a page.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from collections.abc import Callable, Coroutine
from time import perf_counter, process_time
from typing import Any


class Meter:
    """Start/stop clock, CPU clock, page count and first-page time of one run."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.c0 = 0.0
        self.wall = 0.0
        self.cpu = 0.0
        self.first: float | None = None
        self.pages = 0
        self.errors = 0
        self.first_error: str | None = None
        self.retries = 0
        self.requests: int | None = None  # responses received, where the client counts them
        self.lost: int | None = None  # many sources: pages missing, summed source by source
        self.records: int | None = None  # sinks: records extracted (and, with a sink, committed)

    def start(self) -> None:
        self.c0 = process_time()
        self.t0 = perf_counter()

    def page(self) -> None:
        if self.first is None:
            self.first = perf_counter()
        self.pages += 1

    def error(self, what: object) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = repr(what)[:300]

    def stop(self) -> None:
        self.wall = perf_counter() - self.t0
        self.cpu = process_time() - self.c0


# ---------------------------------------------------------------------- asyncio clients


async def streampage_client(
    url: str, n: int, concurrency: int, meter: Meter, *, backoff: float | None = None
) -> None:
    """The library under test, used the way its README says."""
    import streampage

    pages = streampage.PageNumber(start=1, stop=n)
    retry = True if backoff is None else streampage.RetryPolicy(backoff=backoff)
    open_stream = streampage.stream  # imported here, as the hand loop imports aiohttp
    meter.start()
    stream = open_stream(url, pages=pages, concurrency=concurrency, retry=retry)
    try:
        async with stream:
            async for _page in stream:
                meter.page()
    except streampage.StreamPageError as exc:  # a page error ends the stream: count the rest lost
        meter.error(exc)
    meter.stop()
    meter.retries = stream.stats.total_retries
    meter.requests = stream.stats.requests


async def handloop_client(url: str, n: int, concurrency: int, meter: Meter) -> None:
    """The reference: what a careful programmer writes by hand for one known range of pages."""
    import asyncio

    import aiohttp
    import msgspec

    decode = msgspec.json.decode
    meter.start()
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while True:
                number = await queue.get()
                if number is None:
                    return
                try:
                    async with session.get(url, params={"page": number}) as resp:
                        body = await resp.read()
                        status = resp.status
                    if status != 200:
                        meter.error(f"page {number}: HTTP {status}")
                        continue
                    decode(body)
                except (aiohttp.ClientError, OSError, msgspec.DecodeError) as exc:
                    meter.error(exc)  # a worker that died here would hang the producer
                    continue
                meter.page()

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        for number in range(1, n + 1):
            await queue.put(number)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    meter.stop()


async def gather_client(url: str, n: int, concurrency: int, meter: Meter) -> None:
    """The common pattern: one task per page, gathered; every page is held until the last."""
    import asyncio

    import aiohttp

    meter.start()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(number: int) -> Any:
            async with session.get(url, params={"page": number}) as resp:
                resp.raise_for_status()
                return await resp.json()

        results = await asyncio.gather(
            *(fetch(number) for number in range(1, n + 1)), return_exceptions=True
        )
    for result in results:
        if isinstance(result, BaseException):
            meter.error(result)
        else:
            meter.page()
    meter.stop()


# ---------------------------------------------------------------------- many sources


def check_sources(counts: list[int], per_source: int, meter: Meter) -> None:
    """Every source must have delivered exactly its pages: report any that did not, and count
    the missing ones source by source (an extra page of one source hides no loss of another)."""
    meter.lost = 0
    for key, count in enumerate(counts):
        if count != per_source:
            meter.error(f"source {key}: {count} pages, expected {per_source}")
            meter.lost += max(0, per_source - count)


async def sources_streampage_client(
    url: str, n: int, sources: int, concurrency: int, meter: Meter
) -> None:
    """The library under test: one stream over every source, each walked by its cursor."""
    import streampage

    per_source = n // sources
    counts = [0] * sources
    pages = streampage.Cursor(field="next_cursor", param="cursor")
    open_stream = streampage.stream  # imported here, as the hand loop imports aiohttp
    meter.start()
    stream = open_stream(
        [streampage.Source(url, params={"src": k}, key=k) for k in range(sources)],
        pages=pages,
        concurrency=concurrency,
    )
    try:
        async with stream:
            async for page in stream:
                counts[page.source.key] += 1
                meter.page()
    except streampage.StreamPageError as exc:  # a page error ends the stream: count the rest lost
        meter.error(exc)
    meter.stop()
    meter.retries = stream.stats.total_retries
    meter.requests = stream.stats.requests
    check_sources(counts, per_source, meter)


async def sources_handloop_client(
    url: str, n: int, sources: int, concurrency: int, meter: Meter
) -> None:
    """The reference: a coroutine per source walking its cursor chain, a semaphore bounding
    the requests in flight, all sources gathered; what one writes by hand for this."""
    import asyncio

    import aiohttp
    import msgspec

    decode = msgspec.json.decode
    per_source = n // sources
    counts = [0] * sources
    meter.start()
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def walk(key: int) -> None:
            params: dict[str, str | int] = {"src": key}
            while True:
                try:
                    async with sem:
                        async with session.get(url, params=params) as resp:
                            body = await resp.read()
                            status = resp.status
                        if status != 200:
                            meter.error(f"source {key} {params}: HTTP {status}")
                            return  # without its page, the rest of the chain is out of reach
                        data = decode(body)
                except (aiohttp.ClientError, OSError, msgspec.DecodeError) as exc:
                    meter.error(exc)
                    return
                counts[key] += 1
                meter.page()
                cursor = data["next_cursor"]
                if not cursor:
                    return
                params = {"src": key, "cursor": cursor}

        await asyncio.gather(*(walk(key) for key in range(sources)))
    meter.stop()
    check_sources(counts, per_source, meter)


# ---------------------------------------------------------------------- sinks

#: the sink clients, and the sink each writes to (None: the no-sink baseline)
SINK_CLIENTS = {
    "sink-none": None,
    "sink-jsonl": "jsonl",
    "sink-jsonl-gz": "jsonl-gz",
    "sink-sqlite": "sqlite",
    "sink-postgres": "postgres",
    "sink-parquet": "parquet",
}
#: where the records are in each page (bench.py checks that the page files have it)
RECORDS_PATH = "items"
#: records per page, as bench.py writes them; record ``id`` is ``page * 100 + i``
PER_PAGE = 14


def make_sink(kind: str | None, target: str, table: str) -> Any:
    """The sink of a sink client (its module imported before the baseline RSS)."""
    from streampage import sinks

    if kind is None:
        return None
    if kind == "jsonl":
        return sinks.JSONLines(target, gzip=False)
    if kind == "jsonl-gz":
        return sinks.JSONLines(target, gzip=True)
    if kind == "sqlite":
        return sinks.SQLite(target, table=table)
    if kind == "postgres":
        return sinks.Postgres(target, table=table)
    if kind == "parquet":
        return sinks.Parquet(target)
    raise ValueError(kind)


def import_sink(kind: str | None) -> None:
    """Import what the sink needs, so that RSS after imports (and the timed span) leaves it out."""
    import importlib

    needs = {
        "sqlite": ["sqlite3"],
        "postgres": ["asyncpg", "streampage.sinks.postgres"],
        "parquet": ["pyarrow", "pyarrow.parquet", "streampage.sinks.parquet"],
    }
    for module in ["streampage.sinks", *needs.get(kind or "", [])]:
        importlib.import_module(module)


async def sink_client(
    kind: str | None,
    url: str,
    n: int,
    concurrency: int,
    target: str,
    table: str,
    batch: int,
    meter: Meter,
) -> None:
    """pages 1..n, records by path, into a sink (or counted by a plain async for, no sink).

    The timed span covers everything a user waits for: the sink's open (connect, create the
    table), every batch and commit, and its close (Parquet merges its parts there)."""
    import streampage

    sink = make_sink(kind, target, table)
    pages = streampage.PageNumber(start=1, stop=n)
    open_stream = streampage.stream  # imported here, as the hand loop imports aiohttp
    meter.start()
    stream = open_stream(url, pages=pages, concurrency=concurrency, retry=True)
    records = stream.records(RECORDS_PATH)
    counted = 0
    try:
        if sink is None:
            async with records:
                async for _record in records:
                    counted += 1
        else:
            await records.into(sink, batch=batch)
    except streampage.StreamPageError as exc:  # SinkError too: the rest counts as lost
        meter.error(exc)
    meter.stop()
    stats = stream.stats
    # pages delivered without a sink; pages whose records a commit made durable with one
    meter.pages = stats.pages if sink is None else stats.committed_pages
    meter.records = counted if sink is None else stats.records
    meter.retries = stats.total_retries
    meter.requests = stats.requests


def expected_ids(n: int) -> set[int]:
    return {page * 100 + i for page in range(1, n + 1) for i in range(PER_PAGE)}


def read_ids(kind: str, target: str, table: str) -> list[int]:
    """The ``id`` of every row the target holds, read back as a user would."""
    if kind in ("jsonl", "jsonl-gz"):
        import gzip

        import msgspec

        with open(target, "rb") as f:
            data = f.read()
        if kind == "jsonl-gz":
            data = gzip.decompress(data)  # every commit ends a gzip member: all of them
        return [msgspec.json.decode(line)["id"] for line in data.splitlines() if line]
    if kind == "sqlite":
        import sqlite3

        db = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            query = f"SELECT json_extract(data, '$.id') FROM {table}"
            return [row[0] for row in db.execute(query)]
        finally:
            db.close()
    if kind == "postgres":
        import asyncio

        import asyncpg

        async def fetch() -> list[int]:
            conn = await asyncpg.connect(target)
            try:
                rows = await conn.fetch(f"SELECT (data->>'id')::bigint FROM {table}")
                return [row[0] for row in rows]
            finally:
                await conn.close()

        return asyncio.run(fetch())
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(target, columns=["id"]).column("id").to_pylist()  # type: ignore[no-any-return]
    raise ValueError(kind)


def verify_main(argv: list[str]) -> None:
    """``verify KIND --target T [--table X] --pages N``: count the records in a sink's target."""
    parser = argparse.ArgumentParser(prog="clients.py verify")
    parser.add_argument("kind", choices=[k for k in SINK_CLIENTS.values() if k])
    parser.add_argument("--target", required=True)
    parser.add_argument("--table", default="items")
    parser.add_argument("--pages", type=int, required=True)
    args = parser.parse_args(argv)
    want = expected_ids(args.pages)
    try:
        ids = read_ids(args.kind, args.target, args.table)
    except Exception as exc:  # no target at all: every record is lost
        report: dict[str, Any] = {"rows": 0, "lost": len(want), "extra": 0, "error": repr(exc)}
    else:
        found = want.intersection(ids)
        report = {"rows": len(ids), "lost": len(want) - len(found), "extra": len(ids) - len(found)}
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


# ---------------------------------------------------------------------- threads client


def threads_client(url: str, n: int, concurrency: int, meter: Meter) -> None:
    """The synchronous pattern: a thread pool, one requests.Session per thread, map in order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    local = threading.local()

    def fetch(number: int) -> Any:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        try:
            resp = session.get(url, params={"page": number}, timeout=60)
            resp.raise_for_status()
            return resp.json()
        except Exception as exc:  # reported, not raised: map() would stop at the first one
            return exc

    meter.start()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for result in pool.map(fetch, range(1, n + 1)):
            if isinstance(result, Exception):
                meter.error(result)
            else:
                meter.page()
    meter.stop()


# ---------------------------------------------------------------------- driver

AsyncClient = Callable[[str, int, int, Meter], Coroutine[Any, Any, None]]

ASYNC_CLIENTS: dict[str, tuple[AsyncClient, str]] = {
    "streampage": (streampage_client, "asyncio"),
    "streampage-uvloop": (streampage_client, "uvloop"),
    "handloop": (handloop_client, "asyncio"),
    "handloop-uvloop": (handloop_client, "uvloop"),
    "gather": (gather_client, "asyncio"),
}
SourcesClient = Callable[[str, int, int, int, Meter], Coroutine[Any, Any, None]]

#: the many-sources clients (``--sources S``), both on asyncio's loop
SOURCES_CLIENTS: dict[str, SourcesClient] = {
    "sources-streampage": sources_streampage_client,
    "sources-handloop": sources_handloop_client,
}
CLIENTS = [*ASYNC_CLIENTS, "threads", *SOURCES_CLIENTS, *SINK_CLIENTS]


def run_async(
    client: str, url: str, n: int, concurrency: int, meter: Meter, backoff: float | None = None
) -> None:
    """Run an asyncio client on its loop: streampage.run for streampage, asyncio.Runner else."""
    func, loop = ASYNC_CLIENTS[client]
    if client.startswith("streampage"):
        import streampage

        coro = streampage_client(url, n, concurrency, meter, backoff=backoff)
        streampage.run(coro, use_uvloop=loop == "uvloop")
        return
    coro = func(url, n, concurrency, meter)
    import asyncio

    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)


def run_sources(
    client: str, url: str, n: int, sources: int, concurrency: int, meter: Meter
) -> None:
    """Run a many-sources client on asyncio's loop (streampage's through streampage.run)."""
    coro = SOURCES_CLIENTS[client](url, n, sources, concurrency, meter)
    if client == "sources-streampage":
        import streampage

        streampage.run(coro, use_uvloop=False)
        return
    import asyncio

    with asyncio.Runner() as runner:
        runner.run(coro)


def run_sink(args: argparse.Namespace, meter: Meter) -> None:
    """Run a sink client on asyncio's loop, through streampage.run."""
    import streampage

    coro = sink_client(
        SINK_CLIENTS[args.client],
        args.url,
        args.pages,
        args.concurrency,
        args.target or "",
        args.table,
        args.batch,
        meter,
    )
    streampage.run(coro, use_uvloop=False)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    if sys.argv[1:2] == ["verify"]:
        verify_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument(
        "--retry-backoff",
        type=float,
        default=None,
        help="streampage: RetryPolicy(backoff=...) instead of the default policy",
    )
    parser.add_argument(
        "--sources",
        type=int,
        default=None,
        help="sources-* clients: the pages are this many cursor walks of pages/sources each",
    )
    parser.add_argument("--target", help="sink clients: the file, or PostgreSQL's DSN")
    parser.add_argument("--table", default="items", help="sink clients: SQLite/PostgreSQL table")
    parser.add_argument("--batch", type=int, default=1000, help="sink clients: into(batch=)")
    args = parser.parse_args()
    is_sources = args.client in SOURCES_CLIENTS
    is_sink = args.client in SINK_CLIENTS
    if is_sink and SINK_CLIENTS[args.client] and not args.target:
        parser.error(f"{args.client} needs --target")
    if is_sources and (not args.sources or args.pages % args.sources):
        parser.error(f"{args.client} needs --sources S, with S dividing --pages")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    meter = Meter()
    if args.client == "threads":
        import requests  # noqa: F401  (imported before the baseline RSS, like the others)
    else:
        import aiohttp  # noqa: F401
        import msgspec  # noqa: F401

        if "streampage" in args.client:
            import streampage  # noqa: F401
        if args.client.endswith("uvloop"):
            import uvloop  # noqa: F401
        if is_sink:
            import_sink(SINK_CLIENTS[args.client])
    rss_before = _rss_mb()
    module_file = sys.modules["streampage"].__file__ if "streampage" in sys.modules else None

    if args.client == "threads":
        threads_client(args.url, args.pages, args.concurrency, meter)
    elif is_sources:
        run_sources(args.client, args.url, args.pages, args.sources, args.concurrency, meter)
    elif is_sink:
        run_sink(args, meter)
    else:
        run_async(args.client, args.url, args.pages, args.concurrency, meter, args.retry_backoff)

    json.dump(
        {
            "client": args.client,
            "pages_expected": args.pages,
            "pages": meter.pages,
            "lost": args.pages - meter.pages if meter.lost is None else meter.lost,
            "errors": meter.errors,
            "first_error": meter.first_error,
            "retries": meter.retries,
            "requests": meter.requests,
            "records": meter.records,
            "wall_s": meter.wall,
            "cpu_s": meter.cpu,
            "ttfp_ms": None if meter.first is None else (meter.first - meter.t0) * 1000,
            "peak_rss_mb": _rss_mb(),
            "rss_before_mb": rss_before,
            "streampage_file": module_file,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

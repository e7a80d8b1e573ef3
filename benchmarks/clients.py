"""One benchmark client run, in a fresh process: fetch pages 1..N and report measurements as JSON.

Run by ``bench.py`` once per measurement, so that peak RSS (``ru_maxrss``) and CPU time
belong to one client and one run only. Each client imports only what it uses, for the same
reason. Usage::

    python benchmarks/clients.py CLIENT --url URL --pages N [--concurrency C] [--cpu K]
        [--retry-backoff SECONDS] [--sources S]

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
    meter.start()
    stream = streampage.stream(url, pages=pages, concurrency=concurrency, retry=retry)
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
    meter.start()
    stream = streampage.stream(
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
CLIENTS = [*ASYNC_CLIENTS, "threads", *SOURCES_CLIENTS]


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


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
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
    args = parser.parse_args()
    is_sources = args.client in SOURCES_CLIENTS
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
    rss_before = _rss_mb()
    module_file = sys.modules["streampage"].__file__ if "streampage" in sys.modules else None

    if args.client == "threads":
        threads_client(args.url, args.pages, args.concurrency, meter)
    elif is_sources:
        run_sources(args.client, args.url, args.pages, args.sources, args.concurrency, meter)
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

"""Throttling with defaults: does a stream converge on the concurrency the server accepts?

Issue 9's throttle scenario. Many APIs refuse work beyond a number of concurrent requests
with ``429 Too Many Requests`` and a ``Retry-After``. A client that asks for more than that
gets 429s; one that reacts to a 429 by pausing everything and coming back all at once trips
the limit again, and again. The issue asks the defaults (``stream(url, concurrency=50)``,
adaptive concurrency on) to settle near the server's limit and stay there:

- ``429s < 5% of pages``: the stream stops asking for more than the server gives;
- ``streampage / careful <= 1.5``: and still finishes within 1.5x of the time that K
  requests in flight take (the careful client below, which knows K, is that reference; the
  arithmetic floor ``latency x pages / K`` is printed beside it).

The server is aiohttp in its own process (pinned to CPU 0 on 2+ cores, the clients to CPU 1),
so that its CPU never competes with the client's event loop: ``GET /items?page=N`` answers
``{"page": N, "items": [20 records]}`` after ``--latency-ms`` (``asyncio.sleep``), and
answers at once ``429`` with ``Retry-After: 1`` when ``--k`` requests are already being
served, so at most K are ever in flight (a 429 is answered immediately and is not counted as
in flight). It records every request (arrival, end, status, requests in flight on arrival)
and hands the log to the parent at ``/_stats`` (``/_reset`` clears it); neither is counted.
The numbers are therefore the server's, not what each client says about itself.

Three clients, each in a fresh interpreter (so one client's imports, caches and sockets never
help another), interleaved over ``--rounds`` rounds with the order rotated each round (so
drift on a shared machine hits every client alike):

- ``streampage``: ``stream(url, pages=PageNumber(stop=PAGES), concurrency=50)``, every other
  setting at its default: the defaults are what is measured;
- ``careful``: the reference, a hand-written pool of exactly K asyncio workers over one
  aiohttp session (``TCPConnector(limit=K)``): it knows K, so it never asks for more, and
  would retry a 429 after its ``Retry-After``;
- ``naive``: what a typical user writes: 50 workers over one session, a 429 sleeps its
  ``Retry-After`` and tries again.

Every client must deliver every page exactly once (distinct page numbers counted; a page
whose body names another page is an error). A run that ends with a streampage error (a page
that failed after its retries) is reported as failed, not hidden: the issue says the
defaults do fail here today.

Usage::

    python benchmarks/throttle.py            # 500 pages, K=8, 3 rounds: ~1 min when
                                             # streampage converges, minutes while it does not
    python benchmarks/throttle.py --quick    # 200 pages, 1 round: a smoke run

Writes the table to ``results/throttle.md`` (``--quick``: ``results/throttle-quick.md``, so
a smoke run never replaces a real one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
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

CLIENTS = ("streampage", "careful", "naive")
PER_PAGE = 20  # records on each page
CONCURRENCY = 50  # what streampage and the naive client are given
RETRY_AFTER = 1  # seconds, in every 429
MAX_ATTEMPTS = 100  # the hand-written clients' bound per page: a hang must end, not stall
GOAL_429_SHARE = 0.05  # 429s / pages, from the issue
GOAL_TIME_RATIO = 1.5  # streampage time / careful time, from the issue
CANCELLED = 499  # logged status of a request whose client went away before its answer


# ---------------------------------------------------------------------- server (subprocess)


def record(number: int) -> dict[str, Any]:
    """One small record (~60 bytes); ``id`` is unique across pages."""
    return {"id": number, "name": f"item{number:06d}", "value": number % 97}


def serve_main(argv: Sequence[str]) -> None:
    """Serve the throttled API until stdin closes (the parent exited) or SIGTERM.

    Prints ``{"port": P}`` on stdout once listening. Every ``/items`` request is logged as
    ``[arrival, end, status, in_flight]`` (monotonic seconds; ``in_flight``: requests being
    served when it arrived, not counting itself). ``/_stats`` returns the log since the last
    ``/_reset`` and the process's CPU seconds; ``/_reset`` clears the log and says how many
    requests are still in flight, so the parent can wait for a killed client's leftovers.
    """
    parser = argparse.ArgumentParser(prog="throttle.py _serve")
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, required=True)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    from aiohttp import web

    last: int = args.pages
    limit: int = args.k
    delay = args.latency_ms / 1000
    # The pages never change: encode each once, so a request costs a lookup, not a dumps.
    bodies = [b""] + [
        json.dumps(
            {"page": n, "items": [record((n - 1) * PER_PAGE + k + 1) for k in range(PER_PAGE)]},
            separators=(",", ":"),
        ).encode()
        for n in range(1, last + 1)
    ]
    too_many = b'{"error":"too many requests in flight"}'
    not_found = b'{"error":"no such page"}'
    throttle_headers = {"Retry-After": str(RETRY_AFTER)}
    log: list[tuple[float, float, int, int]] = []
    in_flight = 0

    async def items(request: web.Request) -> web.Response:
        nonlocal in_flight
        arrival = time.monotonic()
        already = in_flight
        if already >= limit:  # serving this one would make more than K in flight
            log.append((arrival, time.monotonic(), 429, already))
            return web.Response(
                status=429, body=too_many, content_type="application/json", headers=throttle_headers
            )
        raw = request.query.get("page", "")
        number = int(raw) if raw.isdigit() else 0
        in_flight += 1
        status = CANCELLED
        try:
            await asyncio.sleep(delay)
            status = 200 if 1 <= number <= last else 404
        finally:
            # Leave the in-flight count before the answer is written: a client can only send
            # its next request after this one is answered, so a pool of exactly K never trips.
            in_flight -= 1
            log.append((arrival, time.monotonic(), status, already))
        if status == 404:
            return web.Response(status=404, body=not_found, content_type="application/json")
        return web.Response(body=bodies[number], content_type="application/json")

    async def stats_view(request: web.Request) -> web.Response:
        return web.json_response(
            {"requests": log, "in_flight": in_flight, "cpu": time.process_time()}
        )

    async def reset_view(request: web.Request) -> web.Response:
        log.clear()
        return web.json_response({"in_flight": in_flight})

    app = web.Application()
    app.router.add_get("/items", items)
    app.router.add_get("/_stats", stats_view)
    app.router.add_get("/_reset", reset_view)
    serve_forever(app)


# ---------------------------------------------------------------------- clients (subprocess)


@dataclass
class Delivered:
    """What a client handed to its caller: page numbers in order, and how it ended."""

    numbers: list[int] = field(default_factory=list)
    error: str | None = None
    seen_429: int = 0  # as the client counted them (the server's count is the one reported)
    extra: dict[str, Any] = field(default_factory=dict)


async def streampage_client(url: str, pages: int, out: Delivered) -> None:
    """The defaults under test: only ``pages=`` and ``concurrency=`` are given.

    A ``StreamPageError`` (a page that failed after its retries, with ``on_error="raise"``,
    the default) ends the run and is reported as the run's outcome, with the pages delivered
    before it; any other exception is a crash and fails the benchmark.
    """
    import streampage

    stream = streampage.stream(
        url, pages=streampage.PageNumber(stop=pages), concurrency=CONCURRENCY
    )
    try:
        async with stream as pages_in:
            async for page in pages_in:
                if page.data["page"] != page.number:
                    raise SystemExit(f"page {page.number} delivered page {page.data['page']}")
                out.numbers.append(page.number)
    except streampage.StreamPageError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        out.error = f"{type(exc).__name__}: {first}"[:300]
    stats = getattr(stream, "stats", None)  # read defensively: the library is being edited
    if stats is not None:
        retries = getattr(stats, "retries", {})
        out.seen_429 = int(retries.get("status 429", 0)) if isinstance(retries, dict) else 0
        out.extra = {
            "requests": getattr(stats, "requests", None),
            "retries": retries,
            "failed": getattr(stats, "failed", None),
            "throttled_s": getattr(stats, "throttled_seconds", None),
            "backoff_s": getattr(stats, "backoff_seconds", None),
        }
    out.extra["streampage"] = streampage.__file__


async def pool_client(url: str, pages: int, workers: int, out: Delivered) -> None:
    """A hand-written worker pool: ``workers`` tasks over one session, a 429 waits and retries.

    With ``workers=K`` this is the careful client (it never asks for more than the server
    serves); with 50 it is the naive one. Both honour ``Retry-After`` (seconds) exactly and
    retry the same page; a page still refused after ``MAX_ATTEMPTS`` fails the run, so a
    client that cannot finish ends instead of hanging.
    """
    import aiohttp

    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(1, pages + 1):
        queue.put_nowait(number)
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                number = queue.get_nowait()
                data: Any = None
                for _ in range(MAX_ATTEMPTS):
                    async with session.get(url, params={"page": number}) as resp:
                        if resp.status == 429:
                            out.seen_429 += 1
                            wait = float(resp.headers.get("Retry-After", RETRY_AFTER))
                            await resp.read()
                        else:
                            resp.raise_for_status()
                            data = await resp.json()
                            wait = -1.0
                    if wait < 0:
                        break
                    await asyncio.sleep(wait)
                else:
                    raise RuntimeError(f"page {number}: still 429 after {MAX_ATTEMPTS} attempts")
                if data["page"] != number:
                    raise RuntimeError(f"page {number} delivered page {data['page']}")
                out.numbers.append(number)

        await asyncio.gather(*(worker() for _ in range(workers)))


def client_main(argv: Sequence[str]) -> None:
    """Run one client once and print one JSON line: wall seconds and what it delivered.

    Every page must arrive exactly once: a repeated page fails the run (exit 1) whatever
    else happened, and so does a run that ended without an error but short of pages, so a
    client that is fast because it skipped pages fails rather than wins. A streampage run
    that ended with a library error exits 0 with the error in its line: that is a result.
    """
    parser = argparse.ArgumentParser(prog="throttle.py _client")
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    out = Delivered()
    t0 = time.perf_counter()
    if args.client == "streampage":
        import streampage

        streampage.run(streampage_client(args.url, args.pages, out), use_uvloop=False)
    else:
        workers = args.k if args.client == "careful" else CONCURRENCY
        asyncio.run(pool_client(args.url, args.pages, workers, out))
    wall = time.perf_counter() - t0

    distinct = len(set(out.numbers))
    line = {
        "client": args.client,
        "wall": wall,
        "pages": len(out.numbers),
        "distinct": distinct,
        "error": out.error,
        "seen_429": out.seen_429,
        **out.extra,
    }
    print(json.dumps(line), flush=True)
    if distinct != len(out.numbers):
        raise SystemExit(f"{args.client}: {len(out.numbers) - distinct} page(s) delivered twice")
    if out.error is None and distinct != args.pages:
        raise SystemExit(
            f"{args.client}: {distinct} distinct pages without an error, expected {args.pages}"
        )


# ---------------------------------------------------------------------- parent


@dataclass
class InFlight:
    """Requests in flight in the second half of a run (by time), as the server saw them."""

    at_arrival: float  # median, over arrivals, of those being served, counting the arrival
    over_time: float  # time-weighted mean of those being served
    peak: int  # most at any arrival (whole run), counting the arrival


@dataclass
class Run:
    """One client run, as the client and (mostly) the server saw it."""

    client: str
    round: int
    wall: float
    pages: int
    error: str | None
    requests: int  # /items requests the server logged during the run
    throttled: int  # of those, answered 429
    in_flight: InFlight  # server-side, second half of the run
    server_cpu: float  # server CPU seconds over the client's wall time
    extra: dict[str, Any]


@dataclass
class Setup:
    """Everything a client run needs to know, fixed for the whole invocation."""

    base: str
    pages: int
    k: int
    src: Path
    client_cpu: int | None
    timeout: float
    runs: list[Run] = field(default_factory=list)


def get_json(url: str) -> dict[str, Any]:
    """GET a JSON object over plain HTTP (urllib: the parent imports nothing it measures)."""
    with urllib.request.urlopen(url, timeout=30) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def reset_server(setup: Setup) -> None:
    """Clear the server's log once nothing is in flight (a killed client may leave some)."""
    deadline = time.monotonic() + 30
    while get_json(f"{setup.base}/_reset")["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)


def in_flight_second_half(log: list[list[float]]) -> InFlight:
    """In flight, second half of the run: sampled at each arrival, and averaged over time.

    The run's span is the server's: first arrival to last answer; the second half is where a
    client that adapts should have settled. Counting the arriving request makes a refused
    arrival read K + 1, so the median says whether the client kept pushing past the limit.
    Sampled at arrivals alone, a pool whose workers run in lockstep (all answered together,
    then sent one after another by one event loop) reads about K / 2 though it keeps K
    busy nearly all the time; the time-weighted mean (Little's law: pages/s = in flight /
    latency) shows what the server actually carried, so both are reported.
    """
    if not log:
        return InFlight(0.0, 0.0, 0)
    start = min(entry[0] for entry in log)
    end = max(entry[1] for entry in log)
    middle = start + (end - start) / 2
    late = [int(entry[3]) + 1 for entry in log if entry[0] >= middle]
    busy = sum(
        max(0.0, min(entry[1], end) - max(entry[0], middle)) for entry in log if entry[2] != 429
    )
    return InFlight(
        at_arrival=statistics.median(late) if late else 0.0,
        over_time=busy / (end - middle) if end > middle else 0.0,
        peak=max(int(entry[3]) + 1 for entry in log),
    )


def run_client(setup: Setup, client: str, rnd: int) -> Run:
    """One client in a fresh interpreter, its run measured by the server's log.

    A client that times out is recorded as a failed run (the server's log still says what
    it did); a client that exits non-zero (a repeated or silently missing page, a crash)
    stops the benchmark, since its numbers would mean nothing.
    """
    reset_server(setup)
    argv = [sys.executable, str(Path(__file__).resolve()), "_client", client]
    argv += ["--url", f"{setup.base}/items", "--pages", str(setup.pages), "--k", str(setup.k)]
    if setup.client_cpu is not None:
        argv += ["--cpu", str(setup.client_cpu)]
    env = {**os.environ, "PYTHONPATH": str(setup.src)}
    cpu0 = get_json(f"{setup.base}/_stats")["cpu"]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=setup.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        out: dict[str, Any] = {
            "wall": time.perf_counter() - t0,
            "pages": 0,
            "error": f"timed out after {setup.timeout:.0f} s (killed)",
        }
    else:
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise SystemExit(
                f"client {client} failed (exit {done.returncode}):\n"
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        out = json.loads(lines[-1])
        where = out.get("streampage")
        if where is not None and not Path(where).is_relative_to(setup.src):
            raise SystemExit(f"client {client} imported {where}, not the copy")
    stats = get_json(f"{setup.base}/_stats")
    log: list[list[float]] = stats["requests"]
    return Run(
        client=client,
        round=rnd,
        wall=out["wall"],
        pages=out["pages"],
        error=out.get("error"),
        requests=len(log),
        throttled=sum(1 for entry in log if entry[2] == 429),
        in_flight=in_flight_second_half(log),
        server_cpu=(stats["cpu"] - cpu0) / out["wall"],
        extra={k: v for k, v in out.items() if k in ("retries", "failed", "throttled_s")},
    )


def measure(setup: Setup, rounds: int) -> None:
    """Every client once per round, the starting client rotated each round."""
    for r in range(rounds):
        order = CLIENTS[r % len(CLIENTS) :] + CLIENTS[: r % len(CLIENTS)]
        for client in order:
            run = run_client(setup, client, r)
            setup.runs.append(run)
            outcome = f"  FAILED: {run.error}" if run.error else ""
            print(
                f"round {r + 1}/{rounds} {client:>10}: {run.wall:7.2f} s  "
                f"{run.pages:,}/{setup.pages:,} pages  {run.requests:,} requests  "
                f"{run.throttled:,} x 429  in flight {run.in_flight.at_arrival:g} at arrivals, "
                f"{run.in_flight.over_time:.1f} over time (peak {run.in_flight.peak})"
                f"{outcome}",
                flush=True,
            )


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def report(setup: Setup, args: argparse.Namespace, code: str) -> str:
    """The markdown: per-client medians, paired time ratios, the issue's targets, the setup."""
    by: dict[str, list[Run]] = {c: [r for r in setup.runs if r.client == c] for c in CLIENTS}
    rounds = sorted({r.round for r in setup.runs})
    wall = {(r.client, r.round): r.wall for r in setup.runs}
    med_wall = {c: statistics.median(r.wall for r in runs) for c, runs in by.items()}
    med_429 = {c: statistics.median(r.throttled for r in runs) for c, runs in by.items()}
    floor = args.latency_ms / 1000 * args.pages / args.k
    how = {
        "streampage": f"`stream(url, pages=PageNumber(stop={args.pages}), "
        f"concurrency={CONCURRENCY})`, defaults",
        "careful": f"{args.k} workers (= K), one session, 429: wait Retry-After",
        "naive": f"{CONCURRENCY} workers, one session, 429: sleep Retry-After",
    }

    lines = [
        f"## Throttled above K={args.k} in flight: {args.pages:,} pages, "
        f"{args.latency_ms:g} ms latency, 429 with Retry-After: {RETRY_AFTER}",
        "",
        f"streampage {code}; {machine()}; {len(rounds)} round(s), interleaved.",
        "",
        "| client | what | wall s | spread | 429s | 429s / pages | in flight at arrivals, "
        "2nd half | in flight over time, 2nd half | peak | requests | x floor | failed runs |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in CLIENTS:
        runs = by[c]
        walls = [r.wall for r in runs]
        failed = [r for r in runs if r.error]
        lines.append(
            f"| {c} | {how[c]} | {med_wall[c]:.2f} "
            f"| ±{(max(walls) - min(walls)) / 2 / med_wall[c]:.0%} "
            f"| {med_429[c]:,.0f} | {med_429[c] / args.pages:.1%} "
            f"| {statistics.median(r.in_flight.at_arrival for r in runs):g} "
            f"| {statistics.median(r.in_flight.over_time for r in runs):.1f} "
            f"| {max(r.in_flight.peak for r in runs)} "
            f"| {statistics.median(r.requests for r in runs):,.0f} "
            f"| {med_wall[c] / floor:.2f}x | {len(failed)}/{len(runs)} |"
        )

    def ratios(client: str) -> list[float]:
        return [wall[(client, r)] / wall[("careful", r)] for r in rounds]

    lines += [
        "",
        "| time ratio | median of per-round ratios | range | ratio of medians |",
        "|---|--:|--:|--:|",
    ]
    for c in ("streampage", "naive"):
        rs = ratios(c)
        lines.append(
            f"| {c} / careful | {statistics.median(rs):.2f}x | {min(rs):.2f}-{max(rs):.2f}x "
            f"| {med_wall[c] / med_wall['careful']:.2f}x |"
        )

    sp_runs = by["streampage"]
    sp_failed = [r for r in sp_runs if r.error]
    share = med_429["streampage"] / args.pages
    time_ratio = statistics.median(ratios("streampage"))
    lines += [
        "",
        "| target (issue 9), streampage with defaults | measured | goal | |",
        "|---|--:|--:|---|",
        f"| every page delivered, every run | {len(sp_runs) - len(sp_failed)}/{len(sp_runs)} "
        f"runs | all | {verdict(not sp_failed)} |",
        f"| 429s / pages (median) | {share:.1%} | < {GOAL_429_SHARE:.0%} "
        f"| {verdict(share < GOAL_429_SHARE)} |",
        f"| time / careful's time (K in flight) | {time_ratio:.2f}x | <= {GOAL_TIME_RATIO:g}x "
        f"| {verdict(time_ratio <= GOAL_TIME_RATIO and not sp_failed)} |",
        f"| time / floor (latency x pages / K = {floor:.2f} s) "
        f"| {med_wall['streampage'] / floor:.2f}x | (for reference) | |",
    ]
    errors = sorted({r.error for r in setup.runs if r.error})
    if errors:
        lines += ["", "Failed runs ended with:", ""]
        lines += [f"- `{e}`" for e in errors]
    lines += [
        "",
        f"*wall s* is the median over rounds of the client's wall time (fresh interpreter, "
        f"session included; a failed run's until it failed), *spread* half the min-max range; "
        f"*429s*, *requests* (attempts of all kinds) and *in flight* are counted by the "
        f"server. *In flight at arrivals, 2nd half* is the median, over the requests arriving in "
        f"the second half of the run (by the server's clock, first arrival to last answer), of "
        f"the requests being served at that arrival counting the arriving one (a refused "
        f"arrival reads {args.k + 1}); a pool in lockstep reads about K / 2 on it, since its "
        f"requests arrive one after another, so *in flight over time* gives the time-weighted "
        f"mean over the same half (pages/s = that / latency); *peak* is the most at any "
        f"arrival over all runs. The server serves at most K={args.k} at once and answers any "
        f"request beyond that with 429 at once; a 429 is not counted as in flight. *x floor* is "
        f"wall "
        f"over latency x pages / K = {floor:.2f} s, the least time K in flight can take. "
        f"Ratios are paired within a round. Server: aiohttp"
        + (" on uvloop" if has_uvloop() else "")
        + " in its own process"
        + (f" on CPU 0, clients on CPU {setup.client_cpu}" if setup.client_cpu is not None else "")
        + "; clients on asyncio's loop, each run in a fresh interpreter. Every run that did "
        f"not fail delivered all {args.pages:,} pages, each once; no run delivered a page twice.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description="streampage's defaults against a server that answers 429 above K in flight"
    )
    parser.add_argument("--pages", type=int, default=500, help="pages served (default 500)")
    parser.add_argument("--k", type=int, default=8, help="most requests served at once (8)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="per request (20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 3 clients (3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 pages, 1 round")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and clients")
    parser.add_argument(
        "--client-timeout", type=float, default=300.0, help="seconds before a run is killed (300)"
    )
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args()
    if args.quick:
        args.pages, args.rounds = 200, 1
    if args.pages < 1 or args.rounds < 1 or args.k < 1:
        parser.error("--pages, --rounds and --k must be at least 1")
    output: Path = args.output or RESULTS / ("throttle-quick.md" if args.quick else "throttle.md")

    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {0})  # the parent mostly waits: keep it off the client's core
    with tempfile.TemporaryDirectory(prefix="streampage-throttle-") as tmp:
        src = Path(tmp)
        code = snapshot_streampage(src)
        server = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_serve",
                "--pages",
                str(args.pages),
                "--k",
                str(args.k),
                "--latency-ms",
                str(args.latency_ms),
                *(["--cpu", "0"] if pin else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            first = server.stdout.readline()
            if not first:
                raise SystemExit(f"the server did not start (exit {server.wait()})")
            base = f"http://127.0.0.1:{json.loads(first)['port']}"
            setup = Setup(
                base=base,
                pages=args.pages,
                k=args.k,
                src=src,
                client_cpu=1 if pin else None,
                timeout=args.client_timeout,
            )
            print(
                f"streampage {code}\nserver {base}/items: {args.pages:,} pages, "
                f"429 above {args.k} in flight",
                flush=True,
            )
            measure(setup, args.rounds)
        finally:
            stop_server(server)
    table = report(setup, args, code)
    print()
    print(table, end="")
    write_result(output, table)


if __name__ == "__main__":
    entry(main, serve=serve_main, client=client_main)

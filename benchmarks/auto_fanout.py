"""pages=auto against a Django REST framework API: does the default fan out like a named paginator?

DRF's ``PageNumberPagination`` is the most common paginated API shape in the wild:
``{"count": 40000, "next": "http://host/items?page=2", "previous": null, "results": [...]}``.
The body offers two readings. Following ``next`` is always correct but sequential: one round
trip per page, so 2,000 pages at 20 ms take 40 s whatever the concurrency. The ``count`` and
the ``page=`` in the next link say the pages can be numbered and fetched in parallel, as
``PageNumber(total_items="count", size=20)`` does. The issue asks ``pages=auto`` (the default,
``stream(url)``) to take the parallel reading on such an API:

- ``auto / named >= 0.95``: the default is as fast as naming the paginator by hand;
- ``auto / walk >= 5``: and far faster than walking the next links.

Three clients, each in a fresh interpreter (so one client's imports, caches and sockets never
help another), interleaved over ``--rounds`` rounds with the order rotated each round (so
drift on a shared machine hits every client alike), all at concurrency 50:

- ``auto``: ``streampage.stream(url)``;
- ``named``: ``stream(url, pages=PageNumber(total_items="count", size=20, size_param=None))``
  (DRF's default pagination takes no page-size parameter: ``None`` sends none; when the
  library does not accept ``None`` yet, ``size_param="page_size"``, which DRF ignores);
- ``walk``: ``stream(url, pages=NextURL(field="next"))``, the sequential walk.

The server is aiohttp in its own process (pinned to CPU 0 on 2+ cores, the clients to CPU 1),
so that its CPU never competes with the client's event loop: ``GET /items?page=N`` answers
after ``--latency-ms`` (``asyncio.sleep``) with ``--pages`` pages of 20 records, and with 404
``{"detail": "Invalid page."}`` past the last page, as DRF does. The ratios are what matter;
absolute pages/s are bounded by latency: no fan-out can beat ``latency x (1 + (pages - 1) /
concurrency)``, no walk ``latency x pages``.

Usage::

    python benchmarks/auto_fanout.py            # 2,000 pages, 3 rounds: ~2.5 min, ~4.5 while
                                                # auto walks (each walk takes ~43 s)
    python benchmarks/auto_fanout.py --quick    # 200 pages, 1 round: a smoke run, ~10 s

Writes the table to ``results/auto_fanout.md`` (``--quick``: ``results/auto_fanout-quick.md``,
so a smoke run never replaces a real one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
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

CLIENTS = ("auto", "named", "walk")
PER_PAGE = 20  # DRF's PAGE_SIZE in the imitated API
CONCURRENCY = 50
TARGETS = (("named", 0.95), ("walk", 5.0))  # auto / client >= goal, from the issue


# ---------------------------------------------------------------------- server (subprocess)


def record(number: int) -> dict[str, Any]:
    """One ~100-byte record, shaped like a DRF ModelSerializer row; ``id`` is unique."""
    return {
        "id": number,
        "username": f"user{number:06d}",
        "email": f"user{number:06d}@example.com",
        "created": "2024-05-01",
        "active": number % 7 != 0,
    }


def serve_main(argv: Sequence[str]) -> None:
    """Serve the DRF imitation until stdin closes (the parent exited) or SIGTERM.

    Prints ``{"port": P}`` on stdout once listening. ``/_stats`` (not counted) reports the
    requests served, the 404s, requests that carried a query parameter other than ``page``
    and the process's CPU seconds, so the parent can tell what each run cost the server.
    """
    parser = argparse.ArgumentParser(prog="auto_fanout.py _serve")
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, required=True)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    from aiohttp import web

    last: int = args.pages
    delay = args.latency_ms / 1000
    count = last * PER_PAGE
    # The records never change: encode each page's list once, so a request costs a lookup,
    # the two links and a join (DRF's own cost is the latency stand-in, not this process).
    results = [b""] + [
        json.dumps(
            [record((n - 1) * PER_PAGE + k + 1) for k in range(PER_PAGE)], separators=(",", ":")
        ).encode()
        for n in range(1, last + 1)
    ]
    not_found_body = b'{"detail":"Invalid page."}'
    headers = {"Allow": "GET, HEAD, OPTIONS", "Vary": "Accept"}
    stats = {"requests": 0, "not_found": 0, "extra_params": 0}

    async def items(request: web.Request) -> web.Response:
        stats["requests"] += 1
        query = request.query
        if any(key != "page" for key in query):
            stats["extra_params"] += 1
        raw = query.get("page", "1")
        number = last if raw == "last" else int(raw) if raw.isdigit() else 0
        await asyncio.sleep(delay)
        if not 1 <= number <= last:
            stats["not_found"] += 1
            return web.Response(
                status=404, body=not_found_body, content_type="application/json", headers=headers
            )
        # DRF builds both links from the request's absolute URI: other query parameters stay,
        # and the link to page 1 drops ``page`` altogether (remove_query_param).
        url = request.url
        nxt = json.dumps(str(url.update_query(page=number + 1))) if number < last else "null"
        if number == 1:
            prev = "null"
        elif number == 2:
            prev = json.dumps(str(url.without_query_params("page")))
        else:
            prev = json.dumps(str(url.update_query(page=number - 1)))
        body = b'{"count":%d,"next":%s,"previous":%s,"results":%s}' % (
            count,
            nxt.encode(),
            prev.encode(),
            results[number],
        )
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def stats_view(request: web.Request) -> web.Response:
        return web.json_response({**stats, "cpu": time.process_time()})

    app = web.Application()
    app.router.add_get("/items", items)
    app.router.add_get("/_stats", stats_view)
    serve_forever(app)


# ---------------------------------------------------------------------- client (subprocess)


def client_main(argv: Sequence[str]) -> None:
    """Run one client once and print one JSON line: wall seconds, pages/s, what it saw.

    Every record must arrive exactly once (record count and distinct ids both equal to the
    total): a client that is fast because it skipped pages must fail, not win. With
    ``--max-pages`` (the parent's probe of ``size_param=None``) that check is skipped.
    """
    parser = argparse.ArgumentParser(prog="auto_fanout.py _client")
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--size-param", default="none")
    parser.add_argument("--max-pages", type=int, default=None)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import streampage

    # pages=auto logs its choice at INFO: keep it, to show what the default picked.
    chosen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, entry: logging.LogRecord) -> None:
            chosen.append(entry.getMessage())

    log = logging.getLogger("streampage")
    log.setLevel(logging.INFO)
    log.addHandler(Keep(logging.INFO))

    paginator: Any
    if args.client == "auto":
        paginator = None  # leave pages= out: the default is what is measured
    elif args.client == "named":
        size_param: Any = None if args.size_param == "none" else args.size_param
        paginator = streampage.PageNumber(total_items="count", size=PER_PAGE, size_param=size_param)
    else:
        paginator = streampage.NextURL(field="next")

    async def fetch() -> dict[str, Any]:
        pages = records = 0
        ids: set[int] = set()
        kwargs: dict[str, Any] = {"concurrency": CONCURRENCY, "max_pages": args.max_pages}
        if paginator is not None:
            kwargs["pages"] = paginator
        t0 = time.perf_counter()
        async with streampage.stream(args.url, **kwargs) as pages_in:
            async for page in pages_in:
                pages += 1
                rows = page.data["results"]
                records += len(rows)
                ids.update(row["id"] for row in rows)
        wall = time.perf_counter() - t0
        return {"wall": wall, "pages": pages, "records": records, "distinct": len(ids)}

    result = streampage.run(fetch(), use_uvloop=False)
    choice = next((m for m in chosen if "pages=auto" in m), None)
    out = {
        "client": args.client,
        **result,
        "pages_per_s": result["pages"] / result["wall"],
        "paginator": repr(paginator) if paginator is not None else None,
        "auto_choice": choice,
        "streampage": streampage.__file__,
    }
    print(json.dumps(out), flush=True)
    if args.max_pages is None and not (result["records"] == result["distinct"] == args.records):
        raise SystemExit(
            f"{args.client}: {result['records']} records ({result['distinct']} distinct) in "
            f"{result['pages']} pages, expected {args.records}: a record was lost or repeated"
        )


# ---------------------------------------------------------------------- parent


@dataclass
class Run:
    """One client run, with what it cost the server (deltas of ``/_stats``)."""

    client: str
    round: int
    wall: float
    pages: int
    pages_per_s: float
    requests: int
    not_found: int
    server_cpu: float
    auto_choice: str | None


@dataclass
class Setup:
    """Everything a client run needs to know, fixed for the whole invocation."""

    url: str
    stats_url: str
    records: int
    src: Path
    size_param: str
    client_cpu: int | None
    timeout: float
    size_note: str = ""
    runs: list[Run] = field(default_factory=list)


def server_stats(setup: Setup) -> dict[str, float]:
    """The server's counters, read over plain HTTP (urllib: nothing to import in the parent)."""
    import urllib.request

    with urllib.request.urlopen(setup.stats_url, timeout=10) as resp:
        stats: dict[str, float] = json.load(resp)
    return stats


def run_client(
    setup: Setup, client: str, *, size_param: str, max_pages: int | None = None
) -> tuple[int, dict[str, Any] | None, str]:
    """One client in a fresh interpreter: (exit code, its JSON line or None, its stderr)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "_client", client]
    argv += ["--url", setup.url, "--records", str(setup.records), "--size-param", size_param]
    if max_pages is not None:
        argv += ["--max-pages", str(max_pages)]
    if setup.client_cpu is not None:
        argv += ["--cpu", str(setup.client_cpu)]
    env = {**os.environ, "PYTHONPATH": str(setup.src)}
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=setup.timeout, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, (json.loads(lines[-1]) if lines else None), done.stderr.strip()


def probe_size_param(setup: Setup) -> None:
    """Decide ``named``'s size_param: None when the library takes it, else "page_size".

    ``size_param=None`` (send no page-size parameter, as DRF's default pagination expects)
    is being added to the library. It is accepted when a short ``named`` run succeeds and the
    server saw no query parameter but ``page`` (an unsupported None could also show up as a
    stray ``None=20``).
    """
    before = server_stats(setup)
    code, out, err = run_client(setup, "named", size_param="none", max_pages=3)
    after = server_stats(setup)
    extra = int(after["extra_params"] - before["extra_params"])
    if code == 0 and out is not None and out["pages"] == 3 and extra == 0:
        setup.size_param = "none"
        return
    reason = (
        err.splitlines()[-1]
        if code != 0 and err
        else f"{extra} request(s) carried a parameter other than page"
        if extra
        else f"probe run returned {out}"
    )
    setup.size_param = "page_size"
    setup.size_note = (
        f"`size_param=None` was not accepted by this streampage ({reason[:160]}); `named` ran "
        f'with `size_param="page_size"` instead, which DRF\'s default pagination ignores'
    )
    print(f"note: {setup.size_note}", flush=True)


def measure(setup: Setup, rounds: int) -> None:
    """Every client once per round, the starting client rotated each round."""
    for r in range(rounds):
        order = CLIENTS[r % len(CLIENTS) :] + CLIENTS[: r % len(CLIENTS)]
        for client in order:
            before = server_stats(setup)
            code, out, err = run_client(setup, client, size_param=setup.size_param)
            after = server_stats(setup)
            if code != 0 or out is None:
                raise SystemExit(f"client {client} failed (exit {code}):\n{err or out}")
            if not Path(out["streampage"]).is_relative_to(setup.src):
                raise SystemExit(f"client {client} imported {out['streampage']}, not the copy")
            run = Run(
                client=client,
                round=r,
                wall=out["wall"],
                pages=out["pages"],
                pages_per_s=out["pages_per_s"],
                requests=int(after["requests"] - before["requests"]),
                not_found=int(after["not_found"] - before["not_found"]),
                server_cpu=(after["cpu"] - before["cpu"]) / out["wall"],
                auto_choice=out["auto_choice"],
            )
            setup.runs.append(run)
            print(
                f"round {r + 1}/{rounds} {client:>5}: {run.wall:7.2f} s  "
                f"{run.pages_per_s:8,.0f} pages/s  {run.requests:,} requests "
                f"({run.not_found} x 404)",
                flush=True,
            )


def chosen_paginator(message: str | None) -> str:
    """``NextURL(field='next')`` out of ``pages=auto chose NextURL(...) for URL``."""
    if message is None:
        return "(no choice logged)"
    if " chose " in message and " for " in message:
        return message.split(" chose ", 1)[1].rsplit(" for ", 1)[0]
    return message


def report(setup: Setup, args: argparse.Namespace, code: str) -> str:
    """The markdown: per-client medians, paired ratios, targets, and how it was run."""
    by: dict[str, list[Run]] = {c: [r for r in setup.runs if r.client == c] for c in CLIENTS}
    med = {c: statistics.median(r.pages_per_s for r in runs) for c, runs in by.items()}
    rounds = sorted({r.round for r in setup.runs})
    pps = {(r.client, r.round): r.pages_per_s for r in setup.runs}
    fan_floor = args.latency_ms / 1000 * (1 + math.ceil((args.pages - 1) / CONCURRENCY))
    walk_floor = args.latency_ms / 1000 * args.pages
    auto_choices = sorted({chosen_paginator(r.auto_choice) for r in by["auto"]})
    size_arg = "None" if setup.size_param == "none" else repr(setup.size_param)
    how = {
        "auto": f"`stream(url)`, chose `{'`, `'.join(auto_choices)}`",
        "named": f"`PageNumber(total_items='count', size={PER_PAGE}, size_param={size_arg})`",
        "walk": "`NextURL(field='next')`",
    }

    lines = [
        f"## pages=auto on a DRF API: {args.pages:,} pages of {PER_PAGE} records, "
        f"{args.latency_ms:g} ms latency, concurrency {CONCURRENCY}",
        "",
        f"streampage {code}; {machine()}; {len(rounds)} round(s), interleaved.",
        "",
        "| client | pages= | pages/s | spread | wall s | requests | 404s | server CPU |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for c in CLIENTS:
        runs = by[c]
        values = [r.pages_per_s for r in runs]
        spread = (max(values) - min(values)) / 2 / med[c]
        lines.append(
            f"| {c} | {how[c]} | {med[c]:,.0f} | ±{spread:.0%} "
            f"| {statistics.median(r.wall for r in runs):.2f} "
            f"| {statistics.median(r.requests for r in runs):,.0f} "
            f"| {max(r.not_found for r in runs)} "
            f"| {statistics.median(r.server_cpu for r in runs):.0%} |"
        )
    lines += [
        "",
        "| target | median of per-round ratios | range | ratio of medians | goal | |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for other, goal in TARGETS:
        ratios = [pps[("auto", r)] / pps[(other, r)] for r in rounds]
        ratio = statistics.median(ratios)
        lines.append(
            f"| auto / {other}, pages/s | {ratio:.2f}x | {min(ratios):.2f}-{max(ratios):.2f}x "
            f"| {med['auto'] / med[other]:.2f}x | >= {goal:g}x "
            f"| {'met' if ratio >= goal else '**not met**'} |"
        )
    lines += [
        "",
        f"Floors at this latency: a fan-out needs at least {fan_floor:.2f} s "
        f"({args.pages / fan_floor:,.0f} pages/s: the first page alone, then "
        f"{CONCURRENCY} at a time), a next-link walk {walk_floor:.1f} s "
        f"({args.pages / walk_floor:,.0f} pages/s). Ratios are paired within a round (the two "
        "runs of a pair are close in time); *spread* is half the min-max range of pages/s; "
        "*requests* is the median per run as the server counted them, *404s* the most in "
        "one run (pages asked for past the end); *server CPU* is the server process's CPU "
        "time over the client's wall time. Server: aiohttp"
        + (" on uvloop" if has_uvloop() else "")
        + " in its own process"
        + (f" on CPU 0, clients on CPU {setup.client_cpu}" if setup.client_cpu is not None else "")
        + "; clients on asyncio's loop, each run in a fresh interpreter. Every run delivered "
        f"all {setup.records:,} records, each once.",
    ]
    if setup.size_note:
        lines += ["", f"Note: {setup.size_note}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description="pages=auto against a DRF PageNumberPagination API: fan-out or walk?"
    )
    parser.add_argument("--pages", type=int, default=2000, help="pages served (default 2000)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="per request (20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 3 clients (3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 pages, 1 round")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and clients")
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args()
    if args.quick:
        args.pages, args.rounds = 200, 1
    if args.pages < 2 or args.rounds < 1:
        parser.error("--pages must be at least 2 and --rounds at least 1")
    output: Path = args.output or RESULTS / (
        "auto_fanout-quick.md" if args.quick else "auto_fanout.md"
    )

    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {0})  # the parent mostly waits: keep it off the client's core
    with tempfile.TemporaryDirectory(prefix="streampage-auto-fanout-") as tmp:
        src = Path(tmp)
        code = snapshot_streampage(src)
        server = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_serve",
                "--pages",
                str(args.pages),
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
            port = json.loads(first)["port"]
            base = f"http://127.0.0.1:{port}"
            setup = Setup(
                url=f"{base}/items",
                stats_url=f"{base}/_stats",
                records=args.pages * PER_PAGE,
                src=src,
                size_param="none",
                client_cpu=1 if pin else None,
                timeout=120 + 3 * args.pages * args.latency_ms / 1000,
            )
            print(f"streampage {code}\nserver {base}/items: {args.pages:,} pages", flush=True)
            probe_size_param(setup)
            measure(setup, args.rounds)
        finally:
            stop_server(server)
    table = report(setup, args, code)
    print()
    print(table, end="")
    write_result(output, table)


if __name__ == "__main__":
    entry(main, serve=serve_main, client=client_main)

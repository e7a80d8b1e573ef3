"""``streampage demo`` (the demo API in a subprocess, every page of it streamed and checked)
and ``streampage serve-demo`` (the demo API alone)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from .. import _runner
from .._errors import StreamPageError
from .._pagination import PageNumber
from .._stream import stream
from ..demo import ItemsPage, serve
from . import PROG, UsageError
from ._progress import _make_progress, _Snapshot
from ._summary import _print_table

__all__ = ["demo", "serve_demo"]


# ---------------------------------------------------------------------- serve-demo


def serve_demo(args: argparse.Namespace) -> int:
    options = {
        "per_page": args.per_page,
        "max_per_page": args.max_per_page,
        "style": args.style,
        "fault_rate": args.fault_rate,
        "seed": args.seed,
        "fail_pages": tuple(args.fail_page),
        "rate_limit": args.rate_limit,
        "token": args.token,
    }
    if not 1 <= args.per_page <= args.max_per_page:
        raise UsageError(f"--per-page {args.per_page} must be at most --max-per-page")

    async def run() -> None:
        runner, url = await serve(
            host=args.host, port=args.port, items=args.items, latency=args.latency, **options
        )
        print(url, flush=True)  # the first line of output is the URL: `demo` reads it
        print(
            f"demo API ({args.style} style, {args.items:,} records, {args.per_page} a page, "
            f"{args.latency * 1000:g} ms latency); try: {PROG} fetch {url} -o items.jsonl",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        _runner.run(run())
    except OSError as exc:  # the port is taken, the host is not ours
        raise UsageError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return 0


# ---------------------------------------------------------------------- demo


@contextlib.contextmanager
def _demo_server(args: argparse.Namespace) -> Iterator[str]:
    """The demo API in its own process, so that it does not share the client's core."""
    command = [sys.executable, "-m", "streampage", "serve-demo", "--port", "0"]
    command += ["--items", str(args.items), "--latency", str(args.latency)]
    command += ["--per-page", str(min(args.per_page, 100))]
    if args.fault_rate:
        command += ["--fault-rate", str(args.fault_rate)]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            if not url.startswith("http"):
                raise StreamPageError(f"the demo server did not start (exit code {proc.poll()})")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def demo(args: argparse.Namespace) -> int:
    if args.per_page > 100:
        raise UsageError("--per-page must be at most 100 (the demo API's limit)")
    with _demo_server(args) as url:
        faults = f", {args.fault_rate:.0%} faults" if args.fault_rate else ""
        print(
            f"demo API on {url}: {args.items} records, {args.per_page} a page, "
            f"{args.latency * 1000:g} ms latency{faults}; concurrency {args.concurrency}"
        )
        result = _runner.run(_stream_demo(url, args))
    _print_demo_summary(result)
    missing, duplicates = result["missing"], result["duplicates"]
    if missing or duplicates:
        print(f"FAILED: {missing} records missing, {duplicates} duplicated", file=sys.stderr)
        return 1
    print(
        "\nnext, try the command line against the demo API:\n"
        f"  {PROG} serve-demo --port 8080 --fault-rate 0.05   # also --style offset|cursor|"
        "next-url|link, --latency, --fail-page N, --token T\n"
        f"  {PROG} fetch http://127.0.0.1:8080/items -o items.jsonl\n"
        f"  {PROG} fetch --help                                # every option"
    )
    return 0


async def _stream_demo(url: str, args: argparse.Namespace) -> dict[str, Any]:
    seen = bytearray(args.items + 1)  # one byte a record id: proves each arrived exactly once
    duplicates = records = 0
    progress = _make_progress(args.no_progress, stderr=False)
    pages = stream(
        url,
        pages=PageNumber(start=1, size=args.per_page, total_pages="total_pages"),
        decode=ItemsPage,
        concurrency=args.concurrency,
        ordered=args.ordered,
    )
    try:
        async with pages:
            async for page in pages:
                for item in page.data.items:
                    if seen[item.id]:
                        duplicates += 1
                    seen[item.id] = 1
                records += len(page.data.items)
                stats = pages.stats
                progress.update(
                    _Snapshot(
                        stats.pages,
                        records,
                        page.data.total_pages,
                        stats.total_retries,
                        stats.failed,
                    )
                )
    finally:
        progress.close()
    stats = pages.stats
    return {
        "pages": stats.pages,
        "records": records,
        "seconds": stats.elapsed,
        "pages_per_second": stats.pages_per_second,
        "first_page_ms": (stats.time_to_first_page or 0.0) * 1000,
        "megabytes": stats.bytes / 1e6,
        "retries": stats.retries,
        "failed": stats.failed,
        "missing": args.items - sum(seen),
        "duplicates": duplicates,
    }


def _print_demo_summary(result: dict[str, Any]) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("pages", f"{result['pages']:,}"),
        (
            "records",
            f"{result['records']:,} ({result['missing']} missing, "
            f"{result['duplicates']} duplicated)",
        ),
        ("time", f"{result['seconds']:.2f} s"),
        ("pages/s", f"{result['pages_per_second']:,.0f}"),
        ("time to first page", f"{result['first_page_ms']:.1f} ms"),
        ("received", f"{result['megabytes']:.1f} MB"),
        ("retries", ", ".join(f"{n} {why}" for why, n in result["retries"].items()) or "0"),
        ("failed pages", str(result["failed"])),
        ("peak memory (RSS)", f"{peak_mb:.1f} MB"),
        ("event loop", "uvloop" if _runner.loop_factory() else "asyncio"),
    ]
    _print_table("streampage demo", rows, sys.stdout)

"""The ``streampage`` command line. Thin by design: the library never imports this module.

streampage demo         start the demo API in a subprocess and stream every page of it
streampage serve-demo   run the demo API alone, for trying the library by hand
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from . import _runner
from ._errors import StreamPageError
from ._pagination import PageNumber
from ._stream import stream
from .demo import DEFAULT_ITEMS, DEFAULT_PER_PAGE, ItemsPage, serve

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except StreamPageError as exc:
        print(f"streampage: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streampage", description="Fetch paginated HTTP APIs concurrently, as a stream."
    )
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="run the demo API and stream every page of it")
    demo.add_argument("--items", type=int, default=DEFAULT_ITEMS, help="records in the API")
    demo.add_argument("--per-page", type=int, default=DEFAULT_PER_PAGE, help="records a page")
    demo.add_argument("--latency", type=float, default=0.005, help="server delay (s)")
    demo.add_argument("-c", "--concurrency", type=int, default=50)
    demo.add_argument("--ordered", action="store_true", help="yield pages in page order")
    demo.add_argument("--no-progress", action="store_true", help="plain lines, no bar")
    demo.set_defaults(func=_demo)

    serve_demo = sub.add_parser("serve-demo", help="run the demo API until interrupted")
    serve_demo.add_argument("--host", default="127.0.0.1")
    serve_demo.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    serve_demo.add_argument("--items", type=int, default=DEFAULT_ITEMS)
    serve_demo.add_argument("--latency", type=float, default=0.005)
    serve_demo.set_defaults(func=_serve_demo)
    return parser


# ---------------------------------------------------------------------- serve-demo


def _serve_demo(args: argparse.Namespace) -> int:
    async def run() -> None:
        runner, url = await serve(
            host=args.host, port=args.port, items=args.items, latency=args.latency
        )
        print(url, flush=True)  # the first line of output is the URL: `demo` reads it
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    _runner.run(run())
    return 0


# ---------------------------------------------------------------------- demo


@contextlib.contextmanager
def _demo_server(items: int, latency: float) -> Iterator[str]:
    """The demo API in its own process, so that it does not share the client's core."""
    with subprocess.Popen(
        [sys.executable, "-m", "streampage", "serve-demo", "--port", "0"]
        + ["--items", str(items), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
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


class _Progress(Protocol):
    def update(self, pages: int, records: int, total_pages: int | None) -> None: ...
    def close(self) -> None: ...


def _demo(args: argparse.Namespace) -> int:
    with _demo_server(args.items, args.latency) as url:
        print(
            f"demo API on {url}: {args.items} records, {args.per_page} a page, "
            f"{args.latency * 1000:g} ms latency; concurrency {args.concurrency}"
        )
        result = _runner.run(_stream_demo(url, args))
    _print_summary(result, args)
    missing, duplicates = result["missing"], result["duplicates"]
    if missing or duplicates:
        print(f"FAILED: {missing} records missing, {duplicates} duplicated", file=sys.stderr)
        return 1
    return 0


async def _stream_demo(url: str, args: argparse.Namespace) -> dict[str, Any]:
    seen = bytearray(args.items + 1)  # one byte a record id: proves each arrived exactly once
    duplicates = records = 0
    progress = _make_progress(args.no_progress)
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
                progress.update(pages.stats.pages, records, page.data.total_pages)
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


def _make_progress(plain: bool) -> _Progress:
    if not plain and sys.stdout.isatty():
        try:
            return _RichProgress()
        except ImportError:
            pass
    return _PlainProgress()


class _PlainProgress:
    """Periodic lines, for logs and pipes."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()

    def update(self, pages: int, records: int, total_pages: int | None) -> None:
        now = time.perf_counter()
        if now - self._last >= 1.0 or pages == total_pages:
            self._last = now
            rate = pages / (now - self._start)
            total = f"/{total_pages}" if total_pages else ""
            print(f"  {pages}{total} pages, {records} records, {rate:,.0f} pages/s", flush=True)

    def close(self) -> None:
        pass


class _RichProgress:
    """A live bar on a terminal (the ``cli`` extra installs rich)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("pages"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[records]:,} records"),
            TextColumn("{task.fields[rate]:,.0f} pages/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._task = self._progress.add_task("fetch", total=None, records=0, rate=0.0)
        self._start = time.perf_counter()
        self._progress.start()

    def update(self, pages: int, records: int, total_pages: int | None) -> None:
        rate = pages / max(time.perf_counter() - self._start, 1e-9)
        self._progress.update(
            self._task, completed=pages, total=total_pages, records=records, rate=rate
        )

    def close(self) -> None:
        self._progress.stop()


def _print_summary(result: dict[str, Any], args: argparse.Namespace) -> None:
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
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print("summary")
        for name, value in rows:
            print(f"  {name:<20} {value}")
        return
    table = Table(title="streampage demo", show_header=False)
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)

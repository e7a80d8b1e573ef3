"""Progress while a run goes: a rich bar on a terminal, plain periodic lines in logs and
pipes, or nothing."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from .._stats import StreamStats


@dataclass
class _Snapshot:
    pages: int
    records: int
    total: int | None
    retries: int = 0
    failed: int = 0
    #: what else to say (a sharded job: its shards done)
    note: str = ""


def _snapshot(stats: StreamStats, total: int | None) -> _Snapshot:
    return _Snapshot(stats.pages, stats.records, total, stats.total_retries, stats.failed)


class _Progress(Protocol):
    interval: float

    def update(self, snap: _Snapshot) -> None: ...
    def close(self) -> None: ...


def _make_progress(plain: bool, stderr: bool) -> _Progress:
    """A rich bar on a terminal (the ``cli`` extra), else plain periodic lines."""
    out = sys.stderr if stderr else sys.stdout
    if not plain and out.isatty():
        try:
            return _RichProgress(stderr)
        except ImportError:
            pass
    return _PlainProgress(out)


class _NoProgress:
    interval = 1.0

    def update(self, snap: _Snapshot) -> None:
        pass

    def close(self) -> None:
        pass


class _PlainProgress:
    """Periodic lines, for logs and pipes."""

    interval = 1.0

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._start = self._last = time.perf_counter()
        self._shown_total = False

    def update(self, snap: _Snapshot) -> None:
        now = time.perf_counter()
        at_total = snap.total is not None and snap.pages >= snap.total
        if now - self._last < self.interval and not (at_total and not self._shown_total):
            return
        self._last = now
        self._shown_total = self._shown_total or at_total
        rate = snap.pages / max(now - self._start, 1e-9)
        total = f"/{snap.total:,}" if snap.total else ""
        eta = ""
        if snap.total and rate > 0 and snap.pages < snap.total:
            eta = f", ETA {(snap.total - snap.pages) / rate:,.0f} s"
        note = f"{snap.note}, " if snap.note else ""
        print(
            f"  {note}{snap.pages:,}{total} pages, {snap.records:,} records, "
            f"{rate:,.0f} pages/s, {snap.retries:,} retries, {snap.failed:,} failed{eta}",
            file=self._out,
            flush=True,
        )

    def close(self) -> None:
        pass


class _RichProgress:
    """A live bar on a terminal (the ``cli`` extra installs rich): pages (of the total when
    it is known, with an ETA), records, pages/s, retries, failures."""

    interval = 0.1

    def __init__(self, stderr: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.fields[note]}"),
            TextColumn("pages"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[records]} records"),
            TextColumn("{task.fields[rate]} pages/s"),
            TextColumn("{task.fields[retries]}"),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=stderr),
        )
        self._task = self._progress.add_task(
            "fetch",
            total=None,
            note="",
            records="0",
            rate="0",
            retries="0 retries",
            failed="0 failed",
        )
        self._start = time.perf_counter()
        self._progress.start()

    def update(self, snap: _Snapshot) -> None:
        rate = snap.pages / max(time.perf_counter() - self._start, 1e-9)
        failed = f"{snap.failed:,} failed"
        self._progress.update(
            self._task,
            completed=snap.pages,
            total=snap.total,
            note=snap.note,
            records=f"{snap.records:,}",
            rate=f"{rate:,.0f}",
            retries=f"[yellow]{snap.retries:,} retries" if snap.retries else "0 retries",
            failed=f"[red]{failed}" if snap.failed else failed,
        )

    def close(self) -> None:
        self._progress.stop()

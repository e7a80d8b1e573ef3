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
    #: seconds the workers waited on the rate limit or a pause the server asked for
    throttled: float = 0.0


def _snapshot(stats: StreamStats, total: int | None) -> _Snapshot:
    return _Snapshot(
        stats.pages,
        stats.records,
        total,
        stats.total_retries,
        stats.failed,
        throttled=stats.throttled_seconds,
    )


def _counts(snap: _Snapshot) -> str:
    """``412/800`` (thousands separated), or ``412`` with no total."""
    return f"{snap.pages:,}/{snap.total:,}" if snap.total else f"{snap.pages:,}"


def _eta(snap: _Snapshot, rate: float) -> str:
    if not snap.total or rate <= 0 or snap.pages >= snap.total:
        return ""
    left = int((snap.total - snap.pages) / rate)
    return f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"


def _throttled(snap: _Snapshot) -> str:
    return f"throttled {snap.throttled:,.1f} s" if snap.throttled >= 0.05 else ""


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
        elapsed = now - self._start
        rate = snap.pages / max(elapsed, 1e-9)
        parts = [
            f"{_counts(snap)} pages",
            f"{snap.records:,} records",
            f"{rate:,.0f} pages/s",
            f"{snap.retries:,} retries",
            f"{snap.failed:,} failed",
            _throttled(snap),
            f"elapsed {elapsed:,.0f} s",
        ]
        if snap.total and rate > 0 and snap.pages < snap.total:
            parts.append(f"ETA {(snap.total - snap.pages) / rate:,.0f} s")
        if snap.note:
            parts.insert(0, snap.note)
        print("  " + ", ".join(p for p in parts if p), file=self._out, flush=True)

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
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(stderr=stderr)
        wide = console.width >= 130  # a narrow terminal keeps what matters on one line
        columns = [
            SpinnerColumn(finished_text=" "),
            TextColumn("{task.fields[note]}"),
            BarColumn(bar_width=24 if wide else 10),  # pulses while the total is unknown
            TextColumn("{task.fields[counts]} pages"),
            TextColumn("{task.fields[records]} records") if wide else None,
            TextColumn("{task.fields[rate]} pages/s"),
            TextColumn("{task.fields[trouble]}"),
            TextColumn("elapsed") if wide else None,
            TimeElapsedColumn() if wide else None,
            TextColumn("{task.fields[eta]}"),
        ]
        self._progress = Progress(*(c for c in columns if c is not None), console=console)
        self._task = self._progress.add_task(
            "fetch",
            total=None,
            note="",
            counts="0",
            records="0",
            rate="0",
            trouble="",
            eta="",
        )
        self._start = time.perf_counter()
        self._progress.start()

    def update(self, snap: _Snapshot) -> None:
        rate = snap.pages / max(time.perf_counter() - self._start, 1e-9)
        trouble = [
            f"[yellow]{snap.retries:,} retries" if snap.retries else "0 retries",
            f"[red]{snap.failed:,} failed" if snap.failed else "0 failed",
        ]
        if _throttled(snap):
            trouble.append(f"[yellow]{_throttled(snap)}")
        self._progress.update(
            self._task,
            completed=snap.pages,
            total=snap.total,
            note=snap.note,
            counts=_counts(snap),
            records=f"{snap.records:,}",
            rate=f"{rate:,.0f}",
            trouble="[default], ".join(trouble),
            eta=_eta(snap, rate),
        )

    def close(self) -> None:
        self._progress.stop()

"""The progress a fetch shows, rendered from what the stream tells (events) and its stats."""

from __future__ import annotations

import io
import shlex
from typing import Any

import pytest

import streampage
from streampage import events
from streampage.cli import _progress
from streampage.cli._fetch import _Listener
from streampage.cli._parser import build_parser
from streampage.cli._plan import _paginator, as_options
from streampage.cli._progress import _PlainProgress, _Snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(_progress.time, "perf_counter", clock)
    return clock


class Plan:
    total: int | None = None
    options: dict[str, Any] = {}  # noqa: RUF012 (read only)


def test_a_recorded_run_renders_these_plain_lines(clock: Clock) -> None:
    said: list[str] = []
    plan: Any = Plan()
    listen = _Listener(plan, said.append)
    out = io.StringIO()
    progress = _PlainProgress(out)
    chosen = streampage.PageNumber(total_pages="total_pages", size_param=None)
    recorded: list[tuple[float, events.Event | _Snapshot]] = [
        (0.2, events.PaginatorChosen(chosen, "http://api/items")),
        (0.2, events.TotalDiscovered(800, 20_000, "body field 'total_pages'")),
        (1.0, _Snapshot(217, 5_425, None)),
        (2.0, _Snapshot(412, 10_300, None, retries=3, throttled=1.25)),
        (2.5, _Snapshot(500, 12_500, None)),  # within the second: not shown
        (4.0, _Snapshot(800, 20_000, None, retries=3, failed=0, throttled=1.25)),
    ]
    for at, what in recorded:
        clock.now = 100.0 + at
        if isinstance(what, events.Event):
            listen(what)
        else:
            what.total = plan.total
            progress.update(what)
    assert said == ["--pages auto chose --pages page --total-pages total_pages"]
    assert out.getvalue().splitlines() == [
        "  217/800 pages, 5,425 records, 217 pages/s, 0 retries, 0 failed, elapsed 1 s, ETA 3 s",
        "  412/800 pages, 10,300 records, 206 pages/s, 3 retries, 0 failed, throttled 1.2 s, "
        "elapsed 2 s, ETA 2 s",
        "  800/800 pages, 20,000 records, 200 pages/s, 3 retries, 0 failed, throttled 1.2 s, "
        "elapsed 4 s",
    ]


def test_an_unknown_total_shows_counts_and_rates_without_an_eta(clock: Clock) -> None:
    out = io.StringIO()
    progress = _PlainProgress(out)
    clock.now += 2.0
    progress.update(_Snapshot(3_861, 96_525, None, failed=2))
    assert out.getvalue() == (
        "  3,861 pages, 96,525 records, 1,930 pages/s, 0 retries, 2 failed, elapsed 2 s\n"
    )


def test_no_pagination_is_said_as_such() -> None:
    said: list[str] = []
    _Listener(Plan(), said.append)(events.PaginatorChosen(None, "http://api/one"))  # type: ignore[arg-type]
    assert said and "only page" in said[0] and "--pages" in said[0]


@pytest.mark.parametrize(
    ("paginator", "options"),
    [
        (
            streampage.PageNumber(total_pages="total_pages"),
            "--pages page --total-pages total_pages",
        ),
        (
            streampage.PageNumber(start=0, param="p", size=50, total_items="meta.count"),
            "--pages page --page-param p --start 0 --size 50 --total-items meta.count",
        ),
        (
            streampage.PageNumber(total_pages=streampage.Header("X-Pages")),
            "--pages page --total-pages header:X-Pages",
        ),
        (
            streampage.Offset(limit=25, total_items="total"),
            "--pages offset --size 25 --total-items total",
        ),
        (
            streampage.Cursor(field="meta.next", param="after"),
            "--pages cursor --cursor-field meta.next --cursor-param after",
        ),
        (streampage.NextURL(), "--pages next-url"),
        (streampage.NextURL(field="links.next"), "--pages next-url --next-field links.next"),
        (streampage.LinkHeader(), "--pages link"),
    ],
)
def test_a_choice_is_said_as_the_options_that_pin_it(paginator: Any, options: str) -> None:
    assert as_options(paginator) == options
    args = build_parser().parse_args(["fetch", "http://api/items", *shlex.split(options)])
    assert _paginator(args, None) == paginator  # the options give it back

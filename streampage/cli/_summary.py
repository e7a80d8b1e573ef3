"""What a run says at its end: the summary table, the result line (what "complete" was
checked against), the failed pages, and ``--stats-json``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from .._errors import IncompleteError, PageError
from .._redact import redact_url
from . import PROG, _one_line
from ._speak import speak

if TYPE_CHECKING:
    from .._stats import StreamStats
    from .._stream import Stream
    from ._plan import _Plan
    from ._secrets import _Scrubber


def _failure_rows(s: Stream[Any], scrub: Callable[[str], str]) -> list[dict[str, Any]]:
    rows = []
    for f in sorted(s.failures, key=lambda f: f.page):
        error: PageError = f.error
        rows.append(
            {
                "page": f.page,
                "status": f.status,
                "attempts": f.attempts,
                "error": type(error).__name__,
                "message": scrub(_one_line(str(error))),
                "url": scrub(error.url),
            }
        )
    return rows


_LISTED = 20


def _print_failures(s: Stream[Any], scrub: Callable[[str], str]) -> None:
    rows = _failure_rows(s, scrub)
    incomplete = [f.error for f in s.failures if isinstance(f.error, IncompleteError)]
    for error in incomplete:
        said = _one_line(speak(scrub(str(error))))
        print(f"{PROG}: incomplete: {said}", file=sys.stderr)
    rows = [row for row in rows if row["error"] != "IncompleteError"]
    if not rows:
        return
    print(f"{PROG}: {len(rows)} page{'s' * (len(rows) != 1)} failed:", file=sys.stderr)
    for row in rows[:_LISTED]:
        what = f"HTTP {row['status']}" if row["status"] else row["error"]
        print(
            f"  page {row['page']}: {what} after {row['attempts']} attempt(s)  {row['url']}",
            file=sys.stderr,
        )
    if len(rows) > _LISTED:
        print(
            f"  ... and {len(rows) - _LISTED} more (--stats-json lists them all)", file=sys.stderr
        )


def _write_stats_json(
    plan: _Plan, s: Stream[Any], error: BaseException | None, code: int, scrub: _Scrubber
) -> None:
    stats = s.stats
    document = {
        "url": scrub(redact_url(plan.url)),
        "output": scrub(plan.target.shown),
        "exit_code": code,
        "complete": code == 0,
        "error": None if error is None else scrub(_one_line(str(error))),
        "pages": stats.pages,
        "records": stats.records,
        "committed_pages": stats.committed_pages,
        "completeness": {
            "status": s.completeness.status,
            "verified_sources": s.completeness.verified,
            "unverifiable_sources": s.completeness.unverifiable,
            "incomplete_sources": s.completeness.incomplete,
            "notes": [scrub(note) for note in s.completeness.notes],
        },
        "requests": stats.requests,
        "requests_past_end": stats.past_end,
        "bytes": stats.bytes,
        "retries": dict(stats.retries),
        "total_retries": stats.total_retries,
        "failed": stats.failed,
        "failures": _failure_rows(s, scrub),
        "elapsed_seconds": round(stats.elapsed, 6),
        "pages_per_second": round(stats.pages_per_second, 3),
        "time_to_first_page_seconds": stats.time_to_first_page,
        "throttled_seconds": round(stats.throttled_seconds, 6),
        "backoff_seconds": round(stats.backoff_seconds, 6),
        "network_seconds": round(stats.network_seconds, 6),
        "consumer_wait_seconds": round(stats.consumer_wait_seconds, 6),
    }
    if plan.incremental is not None:
        document["incremental"] = {
            "field": plan.incremental.field,
            "param": plan.incremental.param,
            "since": stats.incremental_since,
            "high": stats.incremental_high,
            "skipped": stats.incremental_skipped,
            "client_side": stats.incremental_client_side,
            "unchecked": stats.incremental_unchecked,
        }
    text = msgspec.json.format(msgspec.json.encode(document), indent=2).decode() + "\n"
    if plan.stats_json == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        assert plan.stats_json is not None
        Path(plan.stats_json).write_text(text)


def _print_fetch_summary(
    s: Stream[Any], plan: _Plan, scrub: Callable[[str], str], code: int
) -> None:
    stats = s.stats
    pages = f"{stats.pages:,}"
    if plan.target.checkpointed:
        pages += f" ({stats.committed_pages:,} committed)"
    waits = [
        f"{name} {value:.1f} s"
        for name, value in (
            ("throttled", stats.throttled_seconds),
            ("backing off", stats.backoff_seconds),
            ("slow consumer", stats.consumer_wait_seconds),
        )
        if value >= 0.05
    ]
    first = stats.time_to_first_page
    rows = [
        ("url", scrub(redact_url(plan.url))),
        ("output", scrub(plan.target.shown)),
        *_resumed(stats),
        *_incremental(plan, stats),
        ("pages", pages),
        ("records", f"{stats.records:,}"),
        ("failed pages", f"{stats.failed:,}"),
        ("time", f"{stats.elapsed:.2f} s"),
        ("pages/s", f"{stats.pages_per_second:,.1f}"),
        ("time to first page", "-" if first is None else f"{first * 1000:.1f} ms"),
        ("requests", _requests(stats)),
        ("retries", ", ".join(f"{n} {why}" for why, n in stats.retries.items()) or "0"),
        ("waits (all workers)", ", ".join(waits) or "-"),
        ("result", _result(s, code, scrub)),
    ]
    _print_table("streampage fetch", rows, sys.stderr)


def _resumed(stats: StreamStats) -> list[tuple[str, str]]:
    """What --resume went on from: an interrupted run, or one that had finished."""
    if stats.resumed_finished:
        new = "nothing new" if not stats.records else f"{stats.records:,} new records"
        return [
            (
                "resumed",
                f"a finished run ({stats.resumed_pages:,} pages); looked for new pages: {new}",
            )
        ]
    if stats.resumed_pages:
        return [("resumed", f"{stats.resumed_pages:,} pages committed by earlier runs")]
    return []


def _incremental(plan: _Plan, stats: StreamStats) -> list[tuple[str, str]]:
    """What an incremental run fetched from, what it left out, and where it leaves off."""
    incremental = plan.incremental
    if incremental is None:
        return []
    field, since, high = incremental.field, stats.incremental_since, stats.incremental_high
    if since is None:
        said = f"every record (no earlier {field} to fetch from)"
    elif stats.incremental_client_side:
        why = (
            "no --since-param"
            if incremental.param is None
            else f"the server ignores {incremental.param}"
        )
        said = f"{field} from {since!r}, filtered here ({why}: every page fetched)"
    else:
        said = f"{field} from {since!r} (sent as {incremental.param})"
    if stats.incremental_skipped:
        said += f"; {stats.incremental_skipped:,} records left out (older, or unchanged)"
    if high is not None:
        said += f"; highest now {high!r}"
    rows = [("incremental", said)]
    if stats.incremental_unchecked:
        rows.append(
            (
                "",
                f"{stats.incremental_unchecked:,} records at {since!r} written again unchecked "
                "(more share it than the checkpoint keeps digests of): maybe twice",
            )
        )
    return rows


def _requests(stats: StreamStats) -> str:
    text = f"{stats.requests:,} ({stats.bytes / 1e6:,.1f} MB received"
    if stats.past_end:
        text += f"; {stats.past_end:,} for pages past the end"
    return text + ")"


def _result(s: Stream[Any], code: int, scrub: Callable[[str], str]) -> str:
    """The result line: "complete" says what it was checked against, or that nothing
    could be checked; never more than the run knows."""
    if code != 0:
        return _RESULTS.get(code, "failed")
    checked = _checked(s, scrub)
    unchecked = s.stats.incremental_unchecked
    if unchecked:
        checked += f"; {unchecked:,} records at the since value may be there twice"
    if s.stats.resumed_finished and not s.stats.records:
        already = "complete already (the last run finished, and nothing is new: 0 records added)"
        return already + checked.removeprefix("complete")
    return checked


def _checked(s: Stream[Any], scrub: Callable[[str], str]) -> str:
    """ "complete", and what it was checked against."""
    done = s.completeness
    if done.status == "verified":
        if len(done.notes) == 1:
            checks = done.notes[0].split("; ")
            n = len(checks) - 1
            more = f" (and {n} more total{'s agree' if n > 1 else ' agrees'})" if n else ""
            return f"complete, verified: {scrub(checks[0])}{more}"
        return f"complete, verified: {done.verified:,} sources, each against its total"
    if done.status == "partly verified":
        return (
            f"complete; {done.verified:,} sources verified against their totals, "
            f"{done.unverifiable:,} not verifiable (no total reported)"
        )
    reason = done.notes[0] if len(done.notes) == 1 else "no response reported a total"
    reason = reason.removeprefix("not verifiable: ")
    return f"complete as far as can be told (not verifiable: {speak(scrub(reason))})"


_RESULTS = {
    0: "complete",
    1: "incomplete: see the errors below",
    2: "not started",
    130: "interrupted",
}


def _print_table(title: str, rows: list[tuple[str, str]], out: TextIO) -> None:
    """A rich table on a terminal; plain aligned lines in logs and pipes (easy to grep)."""
    if out.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title, show_header=False)
            for name, value in rows:
                table.add_row(name, value)
            Console(file=out).print(table)
            return
    print(title, file=out)
    for name, value in rows:
        print(f"  {name:<20} {value}", file=out)
    out.flush()

"""``streampage fetch``: the stream run into its target (or stdout), with progress, a
summary and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from .. import _runner
from .._errors import CheckpointInUseError, ConfigurationError, StreamPageError
from .._stats import StreamStats
from .._stream import Stream, stream
from ..events import Event, PaginatorChosen, TotalDiscovered
from . import PROG, UsageError, _one_line
from ._plan import _Plan, as_options, make_plan
from ._progress import _make_progress, _NoProgress, _Progress, _snapshot
from ._secrets import _Scrubber, _setup_logging
from ._speak import speak
from ._summary import _print_failures, _print_fetch_summary, _write_stats_json

__all__ = ["fetch"]


@dataclass
class _Outcome:
    error: BaseException | None = None
    interrupted: bool = False
    broken_pipe: bool = False


def fetch(args: argparse.Namespace) -> int:
    scrub = _Scrubber.of(args)
    undo_logging = _setup_logging(args.verbose, args.quiet, scrub)
    try:
        return _fetch_run(args, scrub)
    finally:
        undo_logging()


def _fetch_run(args: argparse.Namespace, scrub: _Scrubber) -> int:
    def say(text: str) -> None:
        print(f"{PROG}: error: {_one_line(speak(scrub(text)))}", file=sys.stderr, flush=True)

    def announce(text: str) -> None:
        if not args.quiet:
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    try:
        if args.shards is None and (args.cluster is not None or args.job is not None):
            given = "--cluster" if args.cluster is not None else "--job"
            raise UsageError(f"{given} applies to a sharded run: add --shards N")
        plan = make_plan(args, announce)
        if plan.options.get("auth") is not None:
            scrub.watch(plan.options["auth"])
        if args.shards is not None:
            from ._shards import fetch_sharded

            return fetch_sharded(args, plan, scrub, say)
        s: Stream[Any] = stream(
            plan.url, pages=plan.paginator, on_event=_Listener(plan, announce), **plan.options
        )
    except (UsageError, ConfigurationError) as exc:
        say(str(exc))
        return 2
    to_terminal = plan.target.sink is None and sys.stdout.isatty()
    quiet_progress = args.quiet or args.no_progress or to_terminal
    outcome = _Outcome()
    try:
        _runner.run(_drive(s, plan, args, outcome, quiet_progress))
    except KeyboardInterrupt:
        outcome.interrupted = True
    if outcome.broken_pipe:
        # the reader of stdout went away (`| head`): stop quietly, as other tools do
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    error = outcome.error
    failures = s.failures
    if isinstance(error, ConfigurationError | UsageError):
        code = 2
    elif outcome.interrupted:
        code = 130
    elif error is not None or failures:
        code = 1
    else:
        code = 0
    busy = isinstance(error, CheckpointInUseError)  # nothing was started: no summary
    if not args.quiet and code != 2 and not busy:
        _print_fetch_summary(s, plan, scrub, code)
    if failures:
        _print_failures(s, scrub)
    if error is not None:
        say(str(error))
    if outcome.interrupted:
        print(f"{PROG}: interrupted", file=sys.stderr)
    committed = s.stats.committed_pages
    if plan.target.sink is not None and (code == 130 or (code == 1 and committed)):
        # Interrupted, a commit may have landed after the count was last taken: the hint
        # is given whatever the count says (a resume with nothing committed starts over).
        again = "with --resume in place of --replace" if args.replace else "with --resume"
        kept = (
            " (kept in its hidden state folder until a complete run writes the file)"
            if plan.target.merged_at_end
            else ""
        )
        where = plan.target.shown + kept
        done = (
            f"{committed:,} pages are committed to {where}"
            if committed
            else f"{where} keeps what was committed"
        )
        print(
            f"{PROG}: {done}; run the command again {again} to fetch the rest",
            file=sys.stderr,
        )
    if plan.stats_json is not None:
        try:
            _write_stats_json(plan, s, error, code, scrub)
        except OSError as exc:
            say(f"--stats-json {plan.stats_json}: {exc.strerror or exc}")
            return code or 1
    return code


class _Listener:
    """What the stream tells as it runs, for the command line: the total the first page
    gave (the bar's end and its ETA), and pages=auto's choice, said as the options that
    pin it. Failures and retries are read from the stream's stats and failures."""

    def __init__(self, plan: _Plan, announce: Callable[[str], None]) -> None:
        self._plan = plan
        self._announce = announce

    def __call__(self, event: Event) -> None:
        if isinstance(event, TotalDiscovered):
            if event.pages is not None:
                cap = self._plan.options.get("max_pages")
                self._plan.total = event.pages if cap is None else min(cap, event.pages)
        elif isinstance(event, PaginatorChosen):
            if event.paginator is None:
                self._announce(
                    "--pages auto: the first response shows no pagination, so it is the only "
                    "page (name the style with --pages if there are more)"
                )
            else:
                self._announce(f"--pages auto chose {as_options(event.paginator)}")


async def _drive(
    s: Stream[Any], plan: _Plan, args: argparse.Namespace, outcome: _Outcome, quiet: bool
) -> None:
    progress: _Progress = _NoProgress() if quiet else _make_progress(args.no_progress, True)
    ticker = asyncio.create_task(_tick(progress, s.stats, plan))
    try:
        if plan.target.sink is None:
            if not await _to_stdout(s, plan.records):
                outcome.broken_pipe = True
        else:
            await s.records(plan.records).into(
                plan.target.sink,
                batch=args.batch or 1000,
                checkpoint=args.checkpoint or "default",
                mode=_mode(args, plan),
                incremental=plan.incremental,
            )
    except StreamPageError as exc:
        outcome.error = exc
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        progress.update(_snapshot(s.stats, plan.total))
        progress.close()


def _mode(args: argparse.Namespace, plan: _Plan) -> Any:
    """into()'s mode: --resume, --replace, or new; an incremental run goes on from its
    checkpoint unless told otherwise (the same command, every night)."""
    if args.resume:
        return "resume"
    if args.replace:
        return "replace"
    return None if plan.incremental is not None else "new"


async def _tick(progress: _Progress, stats: StreamStats, plan: _Plan) -> None:
    while True:
        await asyncio.sleep(progress.interval)
        progress.update(_snapshot(stats, plan.total))  # the total may be learnt on the way


async def _to_stdout(s: Stream[Any], records: Callable[[Any], list[Any]]) -> bool:
    """Every record as a JSON line on stdout; False if the reader went away."""
    out = sys.stdout.buffer
    encode = msgspec.json.Encoder().encode
    stats = s.stats
    async with s:
        async for page in s:
            found = records(page.data)
            stats.records += len(found)
            if not found:
                continue
            try:
                out.write(b"".join(encode(r) + b"\n" for r in found))
                out.flush()
            except BrokenPipeError:
                return False
    return True

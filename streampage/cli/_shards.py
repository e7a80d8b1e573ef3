"""``streampage fetch ... --shards N``: the command line's side of a sharded job (progress
over the whole job, its summary, its exit code). Imported only when ``--shards`` is given."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from .._errors import ConfigurationError, StreamPageError
from .._redact import redact_url
from . import PROG, UsageError
from ._progress import _make_progress, _NoProgress, _Snapshot
from ._records import _AutoRecords, _Spec
from ._summary import _print_table

__all__ = ["fetch_sharded"]

#: options of a single run that a sharded job does not take, and why
_NOT_SHARDED = {
    "replace": "a sharded job goes on from its checkpoint by itself; to start over, name "
    "another --job or write to another target",
    "ordered": "shards run side by side, each into its own parts",
    "expect": "give the check to a single run",
    "max_pages": "bound the pages with --stop instead",
    "stats_json": "the summary is printed",
}


def fetch_sharded(
    args: argparse.Namespace,
    plan: Any,
    scrub: Callable[[str], str],
    say: Callable[[str], None],
) -> int:
    """Run the job; 0 when it is complete, 1 when a shard failed or the whole does not add
    up, 2 for a usage error, 130 when interrupted (the shards stop at their last commit)."""
    from ..distributed import run_sharded

    try:
        for dest, why in _NOT_SHARDED.items():
            value = getattr(args, dest, None)
            if value not in (None, False, [], ()):
                option = "--" + dest.replace("_", "-")
                raise UsageError(f"{option} does not go with --shards: {why}")
        if args.on_error != "raise":
            raise UsageError(
                "--on-error skip does not go with --shards: a shard stops at its failure"
            )
        sink = plan.target.sink
        if sink is None or type(sink).__name__ == "SQLite":
            raise UsageError(
                "--shards writes a dataset folder (-o out/items/) or PostgreSQL "
                "(-o postgresql://...): every shard commits its own part"
            )
        if getattr(sink, "folder", None) is False:
            raise UsageError(
                f"--shards writes a dataset folder, not the single file {args.output!r}: end "
                "-o with / (-o out/items/), one part file per shard"
            )
        auth = plan.options.get("auth")
        if auth is not None and (auth.changes or auth.fixed_params()):
            raise UsageError(
                f"--auth {args.auth} does not go with --shards: the shards take headers "
                "alone (--auth bearer, basic and apikey --api-key-header do)"
            )
    except UsageError as exc:
        say(str(exc))
        return 2
    options = plan.options
    # a fixed credential travels to the shards as the headers it is (bound to the origin
    # there as here)
    headers = {**options["headers"], **(auth.fixed_headers() if auth is not None else {})}
    rate = options["rate"]
    records = _records(args.records, plan.records)
    if args.verbose < 2:
        for name in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(logging.ERROR)
    quiet = args.quiet or args.no_progress
    progress = _NoProgress() if args.quiet else _make_progress(args.no_progress, True)
    last = [0.0]

    def show(p: Any) -> None:
        now = time.perf_counter()
        if now - last[0] >= progress.interval:
            last[0] = now
            note = f"shards {p.shards_done:,}/{p.shards:,}"
            progress.update(_Snapshot(p.pages, p.records, p.planned_pages, 0, p.failed, note))

    code = 0
    report = None
    try:
        report = run_sharded(
            plan.url,
            sink=sink,
            job=args.job or args.checkpoint or "default",
            pages=plan.paginator,
            records=records,
            shard_size=args.shards,
            cluster=args.cluster,
            concurrency=options["concurrency"],
            rate=None if rate is None else rate.per_second,
            batch=args.batch or 1000,
            params=options["params"],
            headers=headers,
            secret_headers=(
                *options["secret_headers"],
                *(auth.header_names() if auth is not None else ()),
            ),
            timeout=options["timeout"],
            retry=options["retry"],
            verify=options["verify"],
            verify_tls=options["verify_tls"],
            max_page_bytes=options["max_page_bytes"],
            on_progress=None if quiet else show,
        )
    except ConfigurationError as exc:
        progress.close()
        say(str(exc))
        return 2
    except StreamPageError as exc:
        progress.close()
        say(str(exc))
        return 1
    except KeyboardInterrupt:
        progress.close()
        print(
            f"{PROG}: interrupted: every shard stopped at its last commit; run the same "
            "command again to go on with the job",
            file=sys.stderr,
        )
        return 130
    progress.close()
    code = 0 if report.complete else 1
    if not args.quiet:
        _print_table("streampage fetch (sharded)", _summary(report, plan, scrub), sys.stderr)
    for line in report.failures[:20]:
        say(line)
    if len(report.failures) > 20:
        say(f"... and {len(report.failures) - 20:,} more")
    if code:
        print(
            f"{PROG}: run the same command again to go on: finished shards are skipped, the "
            "others resume at their checkpoints",
            file=sys.stderr,
        )
    return code


def _records(spec: str, extract: Any) -> Any:
    """What a shard extracts: a path, the whole body (None), or --records auto decided by
    each shard on its first page (an object that pickles, sent to the workers)."""
    if spec == ".":
        return None
    if spec == "auto":
        return _Spec(_AutoRecords(None), "auto")
    return spec


def _summary(report: Any, plan: Any, scrub: Callable[[str], str]) -> list[tuple[str, str]]:
    shards = report.shards
    counts: dict[str, int] = {}
    for shard in shards:
        counts[shard.state] = counts.get(shard.state, 0) + 1
    states = ", ".join(f"{n:,} {state}" for state, n in sorted(counts.items()))
    retried = sum(1 for s in shards if s.attempts > 1)
    rate = report.pages / report.elapsed if report.elapsed > 0 else 0.0
    planned = report.planned_pages
    rows = [
        ("url", scrub(redact_url(plan.url))),
        ("output", scrub(plan.target.shown)),
        ("job", report.job),
        ("shards", f"{len(shards):,} ({states})"),
        ("pages", f"{report.pages:,}" + (f" of {planned:,} planned" if planned else "")),
        ("records", f"{report.records:,}"),
        ("time", f"{report.elapsed:.2f} s"),
        ("pages/s", f"{rate:,.1f}" if report.skipped < len(shards) else "-"),
    ]
    if retried:
        rows.append(("shards run again", f"{retried:,} (a worker died under them)"))
    if report.complete:
        said = scrub(report.completeness)
        result = said if said.startswith("complete") else "complete, " + said
    else:
        result = "incomplete: see the errors below"
    rows.append(("result", result))
    return rows

"""A sharded job for tests/test_distributed.py to interrupt: run_sharded in a process of its own.

    python tests/sharded_job.py URL --sink parquet|jsonl|postgres --target PATH_OR_DSN
        --job NAME --cluster ADDRESS --stop PAGES --shard-size N [--concurrency C]
        [--batch B] [--rate R] [--table T] [--run TAG]

runs ``run_sharded(URL, pages=PageNumber(stop=PAGES), records="items", ...)`` with the
``X-Run: TAG`` header on every request, and prints the report as one JSON line at the end
(exit 0 when it is complete, 2 when not). When run_sharded raises KeyboardInterrupt (SIGINT),
it prints ``interrupted`` on stderr and exits 130, as a shell would; anything else that
escapes is a traceback and exit 1.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any


def sink(kind: str, target: str, table: str) -> Any:
    from streampage import sinks

    if kind == "parquet":
        return sinks.Parquet(target)
    if kind == "jsonl":
        return sinks.JSONLines(target)
    if kind == "postgres":
        return sinks.Postgres(target, table=table)
    raise SystemExit(f"unknown sink {kind!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--sink", required=True, choices=["parquet", "jsonl", "postgres"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--table", default="items")
    parser.add_argument("--job", required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--stop", type=int, required=True)
    parser.add_argument("--shard-size", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--run", default="")
    args = parser.parse_args()

    import streampage
    from streampage.distributed import run_sharded

    try:
        report = run_sharded(
            args.url,
            pages=streampage.PageNumber(stop=args.stop),
            records="items",
            sink=sink(args.sink, args.target, args.table),
            job=args.job,
            shard_size=args.shard_size,
            cluster=args.cluster,
            concurrency=args.concurrency,
            rate=args.rate,
            batch=args.batch,
            headers={"X-Run": args.run},
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    print(
        json.dumps(
            {
                "complete": report.complete,
                "failures": report.failures,
                "records": report.records,
                "skipped": report.skipped,
                "states": [shard.state for shard in report.shards],
            }
        ),
        flush=True,
    )
    return 0 if report.complete else 2


if __name__ == "__main__":
    # SIGINT as in a terminal, even when the test run was started in the background (a
    # shell starts background jobs with SIGINT ignored, and their children inherit it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())

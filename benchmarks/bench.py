"""Compare streampage with the usual ways of fetching many pages, against a local nginx.

One command (``benchmarks/run.sh`` or ``python benchmarks/bench.py``):

1. installs nginx if it is missing (Debian: ``apt-get install nginx-light``, which brings the
   echo module used for the delayed endpoint);
2. writes ~2 KB JSON pages to ``benchmarks/.work/pages/N.json`` (once; reused afterwards);
3. starts nginx in a separate process, one worker pinned to CPU 0, serving ``/items?page=N``
   from the files, ``/slow/items?page=N`` after 20 ms (``echo_sleep``),
   ``/flaky/items?page=N`` with a transient 503 for 5% of requests, drawn at random, and
   ``/slow/cursor?src=K&cursor=C``: 200 sources of 20 cursor-linked pages, after 20 ms;
   and, for the sinks section, a throwaway PostgreSQL cluster (fsync on), also on CPU 0;
4. runs each client in a fresh process pinned to CPU 1, interleaved round by round, for each
   page count, for the delayed server at two concurrencies, for the flaky server, for the
   many sources (streampage against a hand-written per-source loop under a semaphore) and
   for each sink (``.records("items").into(sink)`` against the same records with no sink),
   every sink run on a fresh target whose records are then counted by another process;
5. prints markdown tables of medians and the targets, and writes every run and the summary
   to ``benchmarks/results/latest.json`` (and the tables to ``latest.md``).

The reference is the hand-written worker loop on asyncio's loop (``handloop``): every ratio
in the tables is a client's pages/s divided by that one's, in the same scenario. The sources
section has its own reference, the hand-written per-source loop (``sources-handloop``), and
compares wall times; the sinks section's is streampage itself with no sink (``sink-none``).

The code, one module per job (each can be read alone; this file only wires them together):

- ``servers.py``: the pages, nginx (and the aiohttp fallback), PostgreSQL, their CPU time;
- ``clients.py``: one client run, in its own fresh process (the peers and streampage);
- ``runs.py``: the clients as this process sees them: names, labels, the code under test,
  one run of ``clients.py``, the sinks' fresh targets;
- ``scenarios.py``: what runs (from the options), the preflight, the interleaved rounds,
  the medians;
- ``report.py``: the tables, ratios and targets, and the results file;
- ``chart.py``: the chart of the results file, ``results/bench.png`` (``make bench-chart``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import runs
from report import RESULTS, write_report
from runs import ALL_CLIENTS, REFERENCE, SINKS, snapshot_streampage
from scenarios import SECTIONS, build_scenarios, preflight, prepare_sinks, run_scenarios
from servers import (
    Servers,
    add_allocator_option,
    allocator_env,
    ensure_cursor_pages,
    ensure_nginx,
    ensure_pages,
    log,
    running,
    start_servers,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="page counts, fast server (default 1000,10000,100000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per scenario (default 3)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--latency-pages", type=int, help="pages per latency run (default 10000)")
    parser.add_argument("--latency-concurrency", default="50,200")
    parser.add_argument(
        "--threads-max-pages",
        type=int,
        default=10000,
        help="skip the (slow) threads client above this page count",
    )
    parser.add_argument("--clients", default=",".join(ALL_CLIENTS))
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="which scenarios to run, of throughput,latency,faults,sources,sinks (default: "
        "all; e.g. --sections faults runs only the flaky-server scenario)",
    )
    parser.add_argument(
        "--source-count",
        type=int,
        help="sources scenario: cursor sources in one stream (default 200, --quick 50)",
    )
    parser.add_argument(
        "--source-pages", type=int, default=20, help="sources scenario: pages per source"
    )
    parser.add_argument(
        "--source-rounds",
        type=int,
        help="rounds of the sources scenario (default 5, --quick 1; its ratio is of two "
        "close wall times)",
    )
    parser.add_argument(
        "--sinks",
        default=",".join(SINKS),
        help=f"sinks section: which sinks, of {','.join(SINKS)} (default: all; none, the "
        "no-sink stream, is always run: it is the reference)",
    )
    parser.add_argument(
        "--sink-pages", type=int, help="sinks section: pages per run (default 10000, --quick 1000)"
    )
    parser.add_argument(
        "--sink-rounds", type=int, help="rounds of the sinks section (default 3, --quick 1)"
    )
    parser.add_argument(
        "--sink-batch",
        type=int,
        default=1000,
        help="sinks section: records per commit, into(sink, batch=N) (default 1000)",
    )
    parser.add_argument(
        "--no-faults", action="store_true", help="skip the flaky-server scenario (faults)"
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=5.0,
        help="percent of requests the flaky endpoint fails with a 503 (default 5)",
    )
    parser.add_argument(
        "--fault-pages", type=int, help="pages per flaky-server run (default 10000)"
    )
    parser.add_argument(
        "--fault-rounds",
        type=int,
        help="rounds of the flaky-server scenario (default 5, --quick 1; its runs are short "
        "and its ratio is noisy)",
    )
    parser.add_argument(
        "--retry-backoff",
        type=float,
        default=None,
        help="streampage clients: RetryPolicy(backoff=SECONDS) instead of the default policy",
    )
    add_allocator_option(parser)
    parser.add_argument("--quick", action="store_true", help="smoke check: small sizes, 1 round")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/client to CPUs")
    parser.add_argument(
        "--serve", action="store_true", help="only start the page servers (for profiling by hand)"
    )
    parser.add_argument("--no-install", action="store_true", help="never apt-get install nginx")
    parser.add_argument(
        "--rev",
        default=None,
        help="measure streampage as of this git revision (default: working tree)",
    )
    parser.add_argument(
        "--slow-server",
        choices=["auto", "nginx", "aiohttp"],
        default="auto",
        help="delayed endpoint: nginx echo_sleep (auto: when the module loads) or aiohttp",
    )
    parser.add_argument(
        "--out", type=Path, help="results file (default results/latest.json; --quick: quick.json)"
    )
    args = parser.parse_args()
    # --quick changes the defaults only: explicit options still win
    if args.quick:
        defaults: tuple[Any, ...] = ("500,2000", 1, 1000, 2000, 1, 50, 1, 1000, 1)
    else:
        defaults = ("1000,10000,100000", 3, 10000, 10000, 5, 200, 5, 10000, 3)
    names = (
        "sizes",
        "rounds",
        "latency_pages",
        "fault_pages",
        "fault_rounds",
        "source_count",
        "source_rounds",
        "sink_pages",
        "sink_rounds",
    )
    for name, value in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    sections = [x for x in args.sections.split(",") if x]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; choose from {list(SECTIONS)}")
    if args.no_faults or args.fault_rate <= 0:
        sections = [x for x in sections if x != "faults"]
    if not sections:
        parser.error("no section left to run")
    if not 0 <= args.fault_rate <= 100:
        parser.error("--fault-rate is a percentage, 0-100")
    if args.source_count < 1 or args.source_pages < 1:
        parser.error("--source-count and --source-pages must be at least 1")
    sinks = [x for x in args.sinks.split(",") if x]
    unknown = set(sinks) - set(SINKS)
    if unknown:
        parser.error(f"--sinks: unknown {sorted(unknown)}; choose from {list(SINKS)}")
    args.sinks = ",".join(x for x in SINKS if x in sinks or x == "none")
    if args.sink_pages < 1 or args.sink_rounds < 1 or args.sink_batch < 1:
        parser.error("--sink-pages, --sink-rounds and --sink-batch must be at least 1")
    args.sections = ",".join(x for x in SECTIONS if x in sections)
    if args.out is None:
        if args.quick:
            args.out = RESULTS / "quick.json"
        elif args.sections != ",".join(SECTIONS):
            # a partial run must not replace the full run's results
            args.out = RESULTS / f"partial-{args.sections.replace(',', '-')}.json"
        else:
            args.out = RESULTS / "latest.json"
    return args


def choose_clients(args: argparse.Namespace) -> list[str]:
    """The clients of --clients, the reference always among them, uvloop's only with uvloop."""
    clients = [c for c in args.clients.split(",") if c]
    unknown = set(clients) - set(ALL_CLIENTS)
    if unknown:
        raise SystemExit(f"unknown clients {sorted(unknown)}; choose from {ALL_CLIENTS}")
    if REFERENCE not in clients:
        clients.insert(0, REFERENCE)
    try:
        import uvloop  # noqa: F401
    except ImportError:
        log(
            "uvloop is not installed: skipping the uvloop clients (pip install 'streampage[speed]')"
        )
        clients = [c for c in clients if not c.endswith("uvloop")]
    return clients


def serve(servers: Servers, args: argparse.Namespace, item_pages: int, src: Path) -> None:
    """--serve: say where the servers are, and keep them up until Ctrl-C or SIGTERM."""
    with running(servers), contextlib.suppress(KeyboardInterrupt):
        print(
            f"pages 1..{item_pages} at {servers.fast_url}?page=N",
            flush=True,
        )
        print(f"same, after {args.latency_ms:g} ms, at {servers.slow_url}?page=N", flush=True)
        if servers.flaky_url:
            print(
                f"same, {args.fault_rate:g}% of requests a 503, at {servers.flaky_url}?page=N",
                flush=True,
            )
        print(
            f"{args.source_count} sources of {args.source_pages} pages by cursor at "
            f"{servers.cursor_url}?src=K[&cursor=C] (src 0..{args.source_count - 1}), "
            f"after {args.latency_ms:g} ms at {servers.slow_cursor_url}",
            flush=True,
        )
        print(f"client: PYTHONPATH={src} taskset -c 1 python ...", flush=True)
        print("Ctrl-C (or SIGTERM to this process) stops the servers", flush=True)
        signal.pause()


def main() -> None:
    args = parse_args()
    clients = choose_clients(args)
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    client_cpu = None
    if pin:
        os.sched_setaffinity(0, {0})  # this parent mostly waits; keep it off the client's core
        client_cpu = 1
    runs.ALLOCATOR.update(allocator_env(args))
    scenarios = build_scenarios(args, clients)
    nginx = ensure_nginx(install=not args.no_install)
    # 200 pages at least: the preflight fetches that many (the sources scenario has its own)
    item_pages = max([200, *(s.pages for s in scenarios if s.kind != "sources")])
    ensure_pages(item_pages)
    ensure_cursor_pages(args.source_count, args.source_pages)
    src, source = snapshot_streampage(args.rev)
    log(f"measuring streampage from {source}")
    started = time.time()
    servers = start_servers(nginx, args.latency_ms / 1000, pin, args.slow_server, args.fault_rate)
    if args.serve:
        serve(servers, args, item_pages, src)
        return
    sink_warnings: list[str] = []
    with running(servers):
        log(f"nginx on {servers.fast_url}; delayed endpoint: {servers.slow_kind}")
        scenarios, sink_warnings = prepare_sinks(scenarios, servers, args)
        preflight(scenarios, servers, client_cpu, src)
        all_runs, summary = run_scenarios(scenarios, servers, client_cpu, src, args.retry_backoff)
    write_report(args, scenarios, summary, all_runs, servers, pin, source, started, sink_warnings)


if __name__ == "__main__":
    main()

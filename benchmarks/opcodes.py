"""Bytecodes per page, by function: streampage against the hand-written loop, same server.

CPU time per page swings by 5-10% from run to run on a shared machine; the number of
bytecodes the interpreter runs per page does not (a few tenths of a percent, from how
responses happen to batch into event-loop turns). This counts them with a ``sys.settrace``
tracer that turns on opcode events (``frame.f_trace_opcodes``) in every Python frame and
counts one per bytecode, by function, in one client run (after an untraced warm-up run
of 100 pages, so that imports and one-time work are left out); C code (the loop's selector,
aiohttp's C parser, msgspec) is not counted, so the figure is the Python-level work only.
Beside it, the garbage collector's collections per generation (``gc.callbacks``) and the
objects each run's collections examined, which the tracer cannot see.

Usage (nginx started here, as bench.py does; the client is run in a fresh process each)::

    python benchmarks/opcodes.py                       # 2,000 pages, no delay, C=50
    python benchmarks/opcodes.py --latency --concurrency 1000 --pages 4000
    python benchmarks/opcodes.py --clients streampage,handloop --top 40
    python benchmarks/opcodes.py --url http://127.0.0.1:8080/items   # a server of your own

Prints, per client, bytecodes per page (total, and by file: streampage/, aiohttp/, asyncio/,
the rest), collections per 1,000 pages, then the functions whose bytecodes per page differ
most between the first client and each other one. Tracing slows a client about tenfold, so
more responses are read per loop turn than in a timed run: compare clients within one run
of this script, not with CPU times.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _tracer() -> tuple[Counter[tuple[str, int, str]], Any]:
    counts: Counter[tuple[str, int, str]] = Counter()
    keys: dict[Any, tuple[str, int, str]] = {}

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            code = frame.f_code
            key = keys.get(code)
            if key is None:
                key = keys[code] = (code.co_filename, code.co_firstlineno, code.co_qualname)
            counts[key] += 1
        return local

    def start(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        return local

    return counts, start


def child(client: str, url: str, pages: int, concurrency: int) -> None:
    """One traced client run: prints a JSON object of counts."""
    import clients as bench_clients

    collections = [0, 0, 0]
    examined = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections[info["generation"]] += 1
            examined[0] += sum(len(gc.get_objects(g)) for g in range(info["generation"] + 1))

    # an untraced warm-up run first: imports (streampage loads its names on first use),
    # compiled regexes and other one-time work are not per-page costs
    bench_clients.run_async(client, url, min(pages, 100), concurrency, bench_clients.Meter())
    counts, start = _tracer()
    meter = bench_clients.Meter()
    gc.callbacks.append(on_gc)
    sys.settrace(start)
    try:
        bench_clients.run_async(client, url, pages, concurrency, meter)
    finally:
        sys.settrace(None)
        gc.callbacks.remove(on_gc)
    if meter.pages != pages:
        raise SystemExit(f"{client}: {meter.pages} pages of {pages} ({meter.first_error})")
    rows = [[f, line, name, n] for (f, line, name), n in counts.items()]
    print(json.dumps({"rows": rows, "gc": collections, "examined": examined[0]}))


def _where(filename: str) -> str:
    for part in ("streampage", "aiohttp", "asyncio", "anyio", "yarl", "multidict", "benchmarks"):
        if f"/{part}/" in filename:
            return part
    return "other"


def _short(filename: str, line: int, name: str) -> str:
    parts = Path(filename).parts
    return f"{'/'.join(parts[-2:])}:{line} {name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="handloop,streampage")
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency", action="store_true", help="the 20 ms endpoint")
    parser.add_argument("--url", help="a server already running (pages ?page=1..N)")
    parser.add_argument("--top", type=int, default=25, help="functions shown per comparison")
    parser.add_argument("--save", help="write the raw counts (JSON) to this file")
    parser.add_argument("--child", nargs=4, metavar=("CLIENT", "URL", "PAGES", "C"))
    args = parser.parse_args()
    if args.child:
        client, url, pages, concurrency = args.child
        child(client, url, int(pages), int(concurrency))
        return
    from servers import ensure_nginx, ensure_pages, start_servers

    names = [c for c in args.clients.split(",") if c]
    servers = None
    url = args.url
    if url is None:
        ensure_pages(args.pages)
        servers = start_servers(ensure_nginx(install=True), 0.02, True, "auto", 0.0)
    results: dict[str, dict[str, Any]] = {}
    try:
        if servers is not None:
            url = servers.slow_url if args.latency else servers.fast_url
        assert url is not None
        for name in names:
            cmd = [sys.executable, __file__, "--child", name, url, str(args.pages)]
            cmd.append(str(args.concurrency))
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if servers is not None:
            servers.stop()
    if args.save:
        Path(args.save).write_text(json.dumps(results))
    n = args.pages
    print(f"{n} pages, concurrency {args.concurrency}, {'20 ms' if args.latency else 'no'} delay")
    per: dict[str, Counter[str]] = {}
    for name, res in results.items():
        funcs: Counter[str] = Counter()
        files: Counter[str] = Counter()
        for filename, line, func, count in res["rows"]:
            funcs[_short(filename, line, func)] += count
            files[_where(filename)] += count
        per[name] = funcs
        total = sum(files.values())
        by_file = ", ".join(f"{k} {v / n:,.0f}" for k, v in files.most_common())
        g0, g1, g2 = (c * 1000 / n for c in res["gc"])
        print(
            f"{name:22} {total / n:8,.0f} bytecodes/page ({by_file}); collections per 1,000 "
            f"pages {g0:.1f}/{g1:.1f}/{g2:.2f}, objects examined {res['examined'] / n:,.0f}/page"
        )
    first, *others = names
    for other in others:
        print(f"\n{other} - {first}, bytecodes per page, largest differences:")
        keys = set(per[first]) | set(per[other])
        diffs = sorted(keys, key=lambda k: -abs(per[other][k] - per[first][k]))
        for key in diffs[: args.top]:
            a, b = per[first][key] / n, per[other][key] / n
            print(f"  {b - a:+9.1f}  ({a:8.1f} -> {b:8.1f})  {key}")


if __name__ == "__main__":
    main()

"""Sharded runs on a Dask cluster: do 4 workers fetch 3.5x the pages/s of 1?

Issue 11's benchmark. ``streampage.distributed.run_sharded`` splits a page-number range into
shards of ``shard_size`` pages and runs each shard (a stream into a sink, with its own
checkpoint) as one Dask task. At 100 ms of server latency and ``concurrency=50`` per shard, one
shard cannot go faster than 50 / 0.1 s = 500 pages/s whatever the CPU does, so a cluster of 4
single-threaded workers, running 4 shards at once, should reach 2,000 pages/s. The issue's
target:

- ``pages/s with 4 workers / pages/s with 1 worker >= 3.5``, measured in the same run.

What runs:

- **Server.** aiohttp.web (on uvloop when installed) in its own process on 127.0.0.1:
  ``GET /items?page=N`` answers ``{"page": N, "items": [20 records]}`` (~1.3 KB, encoded once
  at start) after ``--latency-ms`` (100, ``asyncio.sleep``: a timer, so it serves any number
  at once); ``/fast/items`` answers the same at once. It counts requests, requests in flight
  (peak, and busy seconds: their sum over time, so that mean in flight = busy / wall) and its
  own CPU seconds (``/_stats``, ``/_reset``): what the clients achieved, as the server saw it.
- **Scaling runs.** Each run is a fresh interpreter (the *driver*) that starts
  ``distributed.LocalCluster(n_workers=K, threads_per_worker=1, processes=True)`` and a
  ``Client`` on it (timed: *cluster start*), imports streampage and pyarrow on every worker
  (timed: *warm-up*; a cluster that ran a job before has them already), measures the idle
  cluster's CPU for 3 s (heartbeats: the baseline of the scheduler's load), then times
  ``run_sharded(url, pages=PageNumber(stop=PAGES), records="items",
  sink=Parquet(FRESH_FOLDER + "/"), shard_size=SHARD, cluster=client, concurrency=50,
  job=...)`` alone: start-up and warm-up are reported beside it, not in it. Dask's task
  stream (``distributed.get_task_stream``) records when and on which worker each shard ran:
  the time before the first shard starts, each shard's duration against its floor
  (SHARD / 500 pages/s), the gaps between shards on a worker, the tail (workers idle while
  the last shard runs) and the time after the last one ends. Afterwards (not
  timed) it reads the folder back with ``pyarrow.dataset`` and checks that it holds every
  record once (20 x PAGES rows, as many distinct ids); a run that does not stops the
  benchmark. K = 1 and 4 (``--workers``), interleaved over ``--rounds`` rounds (3), the
  order rotated each round. 20,000 pages in shards of 1,000 (``--shard-size``): 20 shards,
  5 per worker with 4 workers, so that no worker waits for a straggler more than one shard.
- **Where the CPU goes.** The driver reads the CPU seconds (user + system) of every process
  of the job over the timed call: the driver itself (client, ``run_sharded``, and, in a
  LocalCluster, the scheduler and the nannies, which live in the process that started it),
  each worker process (``psutil``, by the pids the workers report), and the server (its own
  ``/_stats``); and the whole machine's busy share (``psutil.cpu_times``), and so what
  other processes took. The machine has 2 cores shared by the server, the driver and K
  workers (and whatever else runs on it): when 4 workers fall short of 3.5x, these say
  whether the cores were full, and who filled them, in CPU microseconds per page.
- **A quiet machine.** Before each driver the parent waits (at most ``--quiet-wait``, 300 s)
  until the CPUs are less than ``--quiet`` (15%) busy over a few seconds, and reports how
  busy they were; a shared machine's other work still shows in *other processes*.
- **Cost per shard.** A driver with a cluster of ``--shard-workers`` (1) worker fetches
  ``--shard-pages`` (2,000) pages from ``/fast/items`` (no latency) twice: as 1 shard and as
  200 shards (of 10 pages). The difference of the wall times over the 199 extra shards is
  what a shard costs beyond its pages (the task's round trip through the scheduler, the
  shard's sink open / commit / publish and checkpoint, its HTTP session); the driver's and
  the worker's CPU are split the same way. Beside it: 200 no-op Dask tasks
  (``client.map``), Dask's own share. Before its cluster starts, the same driver also
  times one shard's worth of pages (SHARD) at the latency by a plain ``stream()`` in its
  own process: ``adaptive=True`` (the default, which shards use), ``adaptive=False``, and
  ``adaptive=True`` into a Parquet folder as a shard writes it, with the process's CPU per
  page: what a shard's stream and sink cost without Dask.
- **Re-run of a finished job.** The 200-shard job is run again, same job name, same folder:
  every shard is finished, so nothing should be fetched. Timed with ``cluster=client`` and with
  ``cluster=None`` (which the spec says must skip finished shards without starting a
  cluster). Target: under 1 s. The server counts the requests a re-run sends.

Usage::

    python benchmarks/sharded.py            # 20,000 pages, 1 and 4 workers, 3 rounds: ~6 min
                                            # on a quiet machine (plus any wait for quiet)
    python benchmarks/sharded.py --quick    # 2,000 pages in shards of 250, 1 round: a smoke run

Writes the tables to ``results/sharded.md`` and every run's figures to ``results/sharded.json``
(``--quick``: ``results/sharded-quick.md`` and ``.json``, so a smoke run never replaces a real
one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    entry,
    has_uvloop,
    machine,
    serve_forever,
    snapshot_streampage,
    stop_server,
    write_result,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

PER_PAGE = 20  # records on each page
GOAL_RATIO = 3.5  # pages/s with 4 workers / with 1 worker, from the issue
GOAL_RERUN = 1.0  # seconds, a re-run of a finished 200-shard job, from the issue
IDLE_SECONDS = 3.0  # the idle cluster's CPU is measured over this long before the job


# ---------------------------------------------------------------------- server (subprocess)


def record(number: int) -> dict[str, Any]:
    """One small record (~60 bytes); ``id`` is unique across pages."""
    return {"id": number, "name": f"item{number:07d}", "value": number % 97}


def serve_main(argv: Sequence[str]) -> None:
    """Serve pages 1..PAGES until stdin closes (the parent exited) or SIGTERM.

    ``/items?page=N`` after the latency, ``/fast/items?page=N`` at once, 404 outside 1..PAGES.
    ``/_stats``: requests, in flight now and at most, busy seconds (request durations
    summed) and the process's CPU seconds; ``/_reset`` zeroes the counters.
    """
    parser = argparse.ArgumentParser(prog="sharded.py _serve")
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, required=True)
    args = parser.parse_args(argv)
    from aiohttp import web

    last: int = args.pages
    delay = args.latency_ms / 1000
    bodies = [b""] + [
        json.dumps(
            {"page": n, "items": [record((n - 1) * PER_PAGE + k + 1) for k in range(PER_PAGE)]},
            separators=(",", ":"),
        ).encode()
        for n in range(1, last + 1)
    ]
    not_found = b'{"error":"no such page"}'
    state: dict[str, float] = {"requests": 0, "in_flight": 0, "peak": 0, "busy": 0.0}

    async def answer(request: web.Request, wait: float) -> web.Response:
        state["requests"] += 1
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        t0 = time.monotonic()
        try:
            if wait:
                await asyncio.sleep(wait)
        finally:
            state["in_flight"] -= 1
            state["busy"] += time.monotonic() - t0
        raw = request.query.get("page", "")
        number = int(raw) if raw.isdigit() else 0
        if not 1 <= number <= last:
            return web.Response(status=404, body=not_found, content_type="application/json")
        return web.Response(body=bodies[number], content_type="application/json")

    async def slow(request: web.Request) -> web.Response:
        return await answer(request, delay)

    async def fast(request: web.Request) -> web.Response:
        return await answer(request, 0.0)

    async def stats_view(request: web.Request) -> web.Response:
        return web.json_response({**state, "cpu": time.process_time(), "pid": os.getpid()})

    async def reset_view(request: web.Request) -> web.Response:
        state.update(requests=0, peak=state["in_flight"], busy=0.0)
        return web.json_response(state)

    app = web.Application()
    app.router.add_get("/items", slow)
    app.router.add_get("/fast/items", fast)
    app.router.add_get("/_stats", stats_view)
    app.router.add_get("/_reset", reset_view)
    serve_forever(app)


# ---------------------------------------------------------------------- driver (subprocess)


def get_json(url: str) -> dict[str, Any]:
    """GET a JSON object over plain HTTP (urllib: nothing that is being measured)."""
    with urllib.request.urlopen(url, timeout=30) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def warm() -> dict[str, Any]:
    """Run on every worker: import what a shard needs, say which streampage and which pid."""
    import pyarrow
    import pyarrow.parquet  # noqa: F401

    import streampage
    import streampage.distributed
    import streampage.sinks

    return {"pid": os.getpid(), "streampage": streampage.__file__}


def noop(x: int) -> int:
    return x


class Cluster:
    """A LocalCluster and a Client on it, their start-up timed; workers warmed and known."""

    def __init__(self, workers: int) -> None:
        import distributed

        t0 = time.perf_counter()
        self.cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # never the fixed 8787 another cluster may hold
        )
        self.client = distributed.Client(self.cluster)
        self.client.wait_for_workers(workers)
        self.start = time.perf_counter() - t0
        t0 = time.perf_counter()
        found: dict[str, dict[str, Any]] = self.client.run(warm)
        self.warm = time.perf_counter() - t0
        self.pids = sorted(v["pid"] for v in found.values())
        src = os.environ.get("PYTHONPATH", "")
        for where in (v["streampage"] for v in found.values()):
            if src and not Path(where).is_relative_to(src):
                raise SystemExit(f"a worker imported {where}, not the copy in {src}")

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


@dataclass
class CPU:
    """CPU seconds of the job's processes and the machine, at one moment."""

    driver: float
    workers: dict[int, float]
    server: float
    machine_busy: float
    machine_total: float

    @staticmethod
    def now(pids: Sequence[int], base: str) -> CPU:
        import psutil

        def seconds(times: Any) -> float:
            return float(times.user + times.system)

        me = psutil.Process()
        workers = {pid: seconds(psutil.Process(pid).cpu_times()) for pid in pids}
        total = psutil.cpu_times()
        idle = total.idle + getattr(total, "iowait", 0.0)
        return CPU(
            driver=seconds(me.cpu_times()),
            workers=workers,
            server=float(get_json(f"{base}/_stats")["cpu"]),
            machine_busy=sum(total) - idle,
            machine_total=sum(total),
        )

    def since(self, before: CPU) -> dict[str, Any]:
        return {
            "driver": self.driver - before.driver,
            "workers": [self.workers[p] - before.workers[p] for p in sorted(self.workers)],
            "server": self.server - before.server,
            "machine_busy": self.machine_busy - before.machine_busy,
            "machine_total": self.machine_total - before.machine_total,
        }


def folder_facts(folder: Path) -> dict[str, Any]:
    """Read a dataset folder back as a reader would, and say what it holds on disk."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(str(folder), format="parquet").to_table(columns=["id"])
    ids = table["id"]
    visible = [p for p in folder.iterdir() if not p.name.startswith((".", "_"))]
    journal = folder / ".streampage" / "journal"  # the job's checkpoint, among others
    entries = journal.read_bytes().splitlines() if journal.exists() else []
    hidden = [p for p in folder.rglob("*") if p.is_file() and p not in visible]
    return {
        "rows": table.num_rows,
        "distinct": pc.count_distinct(ids).as_py() if table.num_rows else 0,
        "min_id": pc.min(ids).as_py() if table.num_rows else None,
        "max_id": pc.max(ids).as_py() if table.num_rows else None,
        "parts": len(visible),
        "part_bytes": sorted(p.stat().st_size for p in visible),
        "journal_lines": len(entries),
        "journal_longest": max((len(line) for line in entries), default=0),
        "hidden_files": len(hidden),
        "hidden_bytes": sum(p.stat().st_size for p in hidden),
        "hidden": sorted(
            ((str(p.relative_to(folder)), p.stat().st_size) for p in hidden),
            key=lambda item: -item[1],
        )[:3],
    }


def job_facts(report: Any) -> dict[str, Any]:
    """What a JobReport says, read defensively (the implementation is being written)."""
    shards = list(getattr(report, "shards", []) or [])
    states: dict[str, int] = {}
    for shard in shards:
        state = str(getattr(shard, "state", "?"))
        states[state] = states.get(state, 0) + 1
    return {
        "complete": bool(getattr(report, "complete", False)),
        "failures": [str(f)[:300] for f in (getattr(report, "failures", []) or [])][:5],
        "pages": getattr(report, "pages", None),
        "records": getattr(report, "records", None),
        "skipped": getattr(report, "skipped", None),
        "elapsed": getattr(report, "elapsed", None),
        "shards": len(shards),
        "states": states,
        "attempts": sum(int(getattr(s, "attempts", 0) or 0) for s in shards),
    }


def timed_job(
    base: str,
    path: str,
    pids: Sequence[int],
    *,
    pages: int,
    shard_size: int,
    folder: Path,
    job: str,
    cluster: Any,
    concurrency: int,
) -> dict[str, Any]:
    """One ``run_sharded`` call, timed alone, with the CPU of every process over it."""
    import streampage
    from streampage.distributed import run_sharded

    recording: Any = contextlib.nullcontext()
    if cluster is not None:  # a Client: Dask records when and where each task ran
        import distributed

        recording = distributed.get_task_stream(client=cluster)
    get_json(f"{base}/_reset")
    before = CPU.now(pids, base)
    began = time.time()
    t0 = time.perf_counter()
    with recording as tasks:
        report = run_sharded(
            f"{base}{path}",
            pages=streampage.PageNumber(stop=pages),
            records="items",
            sink=streampage.sinks.Parquet(str(folder) + "/"),
            shard_size=shard_size,
            cluster=cluster,
            concurrency=concurrency,
            job=job,
        )
        wall = time.perf_counter() - t0
        ended = time.time()
    cpu = CPU.now(pids, base).since(before)
    server = get_json(f"{base}/_stats")
    return {
        "wall": wall,
        "cpu": cpu,
        "server": {k: server[k] for k in ("requests", "peak", "busy")},
        "report": job_facts(report),
        "timeline": timeline(tasks.data if tasks is not None else [], began, ended),
    }


def timeline(data: Sequence[dict[str, Any]], began: float, ended: float) -> dict[str, Any]:
    """Where the time of a job went, from Dask's task stream: when each shard's task ran,
    on which worker (``compute`` spans, wall-clock seconds)."""
    runs = []
    for task in data:
        if not str(task.get("key", "")).startswith("streampage-shard-"):
            continue
        for span in task.get("startstops", []):
            if span.get("action") == "compute":
                runs.append((str(task.get("worker")), float(span["start"]), float(span["stop"])))
    if not runs:
        return {}
    by: dict[str, list[tuple[float, float]]] = {}
    for worker, start, stop in runs:
        by.setdefault(worker, []).append((start, stop))
    gaps = []
    for spans in by.values():
        spans.sort()
        gaps += [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    last_stops = [spans[-1][1] for spans in by.values()]
    return {
        "before": min(start for _, start, _ in runs) - began,  # planning, submitting
        "after": ended - max(stop for _, _, stop in runs),  # noticing, concluding
        "durations": sorted(stop - start for _, start, stop in runs),
        "per_worker": sorted(len(spans) for spans in by.values()),
        "gaps": gaps,  # between one shard's end and the next one's start, same worker
        "tail": max(last_stops) - min(last_stops),  # workers done while one still runs
    }


#: the plain streams measured beside the shards: (adaptive, into a Parquet folder)
PLAIN = {"adaptive": (True, False), "fixed": (False, False), "into": (True, True)}


def plain_stream(
    base: str, pages: int, concurrency: int, adaptive: bool, folder: Path | None
) -> dict[str, Any]:
    """One shard's worth of pages at the server's latency, by one ``stream()`` in this
    process, no Dask: what a shard's stream costs by itself (its slow start, with
    ``adaptive=True``, the default, and its last round trips), and, with ``folder``, the
    same stream into a Parquet folder as a shard writes one (``batch=1000``, a checkpoint,
    ``mode="resume"``). Wall time and this process's CPU time (no cluster is running yet)."""
    import streampage

    got = 0

    async def drain() -> None:
        nonlocal got
        s = streampage.stream(
            f"{base}/items",
            pages=streampage.PageNumber(stop=pages),
            concurrency=concurrency,
            adaptive=adaptive,
        )
        if folder is not None:
            sink = streampage.sinks.Parquet(str(folder) + "/")
            stats = await s.records("items").into(
                sink, batch=1000, checkpoint="plain", mode="resume"
            )
            got = stats.checkpoint_records
            return
        async with s as pages_in:
            async for page in pages_in:
                got += len(page.data["items"])

    get_json(f"{base}/_reset")
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    streampage.run(drain())
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    server = get_json(f"{base}/_stats")
    if got != pages * PER_PAGE:
        raise SystemExit(f"plain stream: {got:,} records, expected {pages * PER_PAGE:,}")
    return {"wall": wall, "cpu": cpu, "busy": server["busy"], "peak": server["peak"]}


def check(out: dict[str, Any], facts: dict[str, Any], pages: int, what: str) -> None:
    """Every record once, and a complete report: anything else stops the benchmark."""
    expected = pages * PER_PAGE
    problems = []
    if not out["report"]["complete"]:
        problems.append(f"report not complete: {out['report']['failures']}")
    if facts["rows"] != expected or facts["distinct"] != expected:
        problems.append(
            f"{facts['rows']:,} rows, {facts['distinct']:,} distinct ids, expected {expected:,}"
        )
    if facts["rows"] and (facts["min_id"], facts["max_id"]) != (1, expected):
        problems.append(f"ids {facts['min_id']}..{facts['max_id']}, expected 1..{expected}")
    if problems:
        raise SystemExit(f"{what}: " + "; ".join(problems))


def driver_main(argv: Sequence[str]) -> None:
    """One measurement in a fresh interpreter; prints one JSON line.

    ``scale``: a cluster of ``--workers`` workers, one timed job of ``--pages`` pages at the
    server's latency. ``shards``: a cluster of ``--workers`` workers, no-op tasks, then the
    same ``--pages`` pages without latency as 1 shard and as ``--shards`` shards, then a
    re-run of the finished many-shard job with ``cluster=client`` and ``cluster=None``.
    """
    parser = argparse.ArgumentParser(prog="sharded.py _driver")
    parser.add_argument("mode", choices=("scale", "shards"))
    parser.add_argument("--base", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--shard-size", type=int, default=1_000)
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--stream-pages", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args(argv)

    out: dict[str, Any] = {"mode": args.mode, "workers": args.workers}
    if args.mode == "shards":  # before the cluster, so that this process's CPU is the stream's
        # first use of a stream and of the sink (importing pyarrow): not in the timed runs
        plain_stream(args.base, 100, args.concurrency, True, args.work / "plain-warm")
        out["plain"] = {
            name: plain_stream(
                args.base,
                args.stream_pages,
                args.concurrency,
                adaptive,
                args.work / f"plain-{name}" if into else None,
            )
            for name, (adaptive, into) in PLAIN.items()
        }
    cluster = Cluster(args.workers)
    try:
        out.update(start=cluster.start, warm=cluster.warm, pids=cluster.pids)
        if args.mode == "scale":
            # the cluster's own upkeep (heartbeats), to tell it from what the job costs
            before = CPU.now(cluster.pids, args.base)
            t0 = time.perf_counter()
            time.sleep(IDLE_SECONDS)
            idle = CPU.now(cluster.pids, args.base).since(before)
            out["idle"] = {"seconds": time.perf_counter() - t0, "cpu": idle}
            folder = args.work / f"scale-{args.tag}"
            run = timed_job(
                args.base,
                "/items",
                cluster.pids,
                pages=args.pages,
                shard_size=args.shard_size,
                folder=folder,
                job=f"scale-{args.tag}",
                cluster=cluster.client,
                concurrency=args.concurrency,
            )
            facts = folder_facts(folder)
            check(run, facts, args.pages, f"{args.workers} worker(s)")
            out.update(run=run, folder=facts)
        else:
            futures = cluster.client.map(noop, range(10), pure=False)
            cluster.client.gather(futures)  # the first map pays for its own set-up
            t0 = time.perf_counter()
            futures = cluster.client.map(noop, range(1_000, 1_000 + args.shards), pure=False)
            cluster.client.gather(futures)
            out["noop"] = time.perf_counter() - t0
            del futures
            common: dict[str, Any] = {
                "pages": args.pages,
                "concurrency": args.concurrency,
            }
            one_folder = args.work / f"one-{args.tag}"
            one = timed_job(
                args.base,
                "/fast/items",
                cluster.pids,
                shard_size=args.pages,
                folder=one_folder,
                job=f"one-{args.tag}",
                cluster=cluster.client,
                **common,
            )
            check(one, folder_facts(one_folder), args.pages, "1 shard")
            many_folder = args.work / f"many-{args.tag}"
            size = -(-args.pages // args.shards)
            many = timed_job(
                args.base,
                "/fast/items",
                cluster.pids,
                shard_size=size,
                folder=many_folder,
                job=f"many-{args.tag}",
                cluster=cluster.client,
                **common,
            )
            facts = folder_facts(many_folder)
            check(many, facts, args.pages, f"{args.shards} shards")
            reruns = {}
            for name, target in (("client", cluster.client), ("none", None)):
                rerun = timed_job(
                    args.base,
                    "/fast/items",
                    cluster.pids,
                    shard_size=size,
                    folder=many_folder,
                    job=f"many-{args.tag}",
                    cluster=target,
                    **common,
                )
                check(rerun, folder_facts(many_folder), args.pages, f"re-run ({name})")
                reruns[name] = rerun
            out.update(one=one, many=many, many_folder=facts, reruns=reruns, shard_size=size)
    finally:
        cluster.close()
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------- parent


@dataclass
class Setup:
    """Everything a driver run needs to know, fixed for the whole invocation."""

    base: str
    src: Path
    work: Path
    args: argparse.Namespace
    scale: list[dict[str, Any]] = field(default_factory=list)
    shards: list[dict[str, Any]] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)  # machine busy share before each run


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def busy_share(seconds: float) -> float:
    """The share of the machine's CPUs busy with anything over ``seconds``."""
    import psutil

    t0 = psutil.cpu_times()
    time.sleep(seconds)
    t1 = psutil.cpu_times()
    idle = (t1.idle - t0.idle) + (getattr(t1, "iowait", 0.0) - getattr(t0, "iowait", 0.0))
    total = sum(t1) - sum(t0)
    return 1.0 - idle / total if total > 0 else 0.0


def wait_quiet(setup: Setup) -> None:
    """Wait (at most ``--quiet-wait`` seconds) until other work leaves the CPUs alone: the
    machine is shared, and 2 cores busy elsewhere would be measured as a slow cluster. What
    other processes took during each run is reported anyway."""
    a = setup.args
    deadline = time.monotonic() + a.quiet_wait
    busy = busy_share(1.0)
    while busy > a.quiet and time.monotonic() < deadline:
        print(f"  (machine {busy:.0%} busy elsewhere: waiting for it to calm down)", flush=True)
        busy = busy_share(5.0)
    setup.waits.append(busy)


def run_driver(setup: Setup, mode: str, workers: int, tag: str) -> dict[str, Any]:
    """A driver in a fresh interpreter importing the snapshot; its folders deleted after."""
    a = setup.args
    wait_quiet(setup)
    pages = a.pages if mode == "scale" else a.shard_pages
    argv = [sys.executable, str(Path(__file__).resolve()), "_driver", mode]
    argv += ["--base", setup.base, "--workers", str(workers), "--pages", str(pages)]
    argv += ["--shard-size", str(a.shard_size), "--shards", str(a.shards)]
    argv += ["--stream-pages", str(a.shard_size)]
    argv += ["--concurrency", str(a.concurrency), "--tag", tag]
    work = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=setup.work))  # fresh per run
    argv += ["--work", str(work)]
    env = {**os.environ, "PYTHONPATH": str(setup.src)}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=a.timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(
            f"{mode} driver ({workers} workers) timed out after {a.timeout:.0f} s"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"{mode} driver ({workers} workers) failed (exit {done.returncode}):\n"
            f"{done.stderr.strip()[-4000:] or done.stdout.strip()[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def cpu_line(run: dict[str, Any], pages: int) -> str:
    cpu = run["cpu"]
    per = 1e6 / pages
    total = cpu["machine_total"] or 1.0
    ours = cpu["server"] + sum(cpu["workers"]) + cpu["driver"]
    return (
        f"CPU µs/page: server {cpu['server'] * per:.0f}, workers "
        f"{sum(cpu['workers']) * per:.0f}, driver {cpu['driver'] * per:.0f}; machine busy "
        f"{cpu['machine_busy'] / total:.0%} (others {(cpu['machine_busy'] - ours) / total:.0%})"
    )


def measure(setup: Setup) -> None:
    """Every worker count once per round, the order rotated; the shard costs once a round."""
    a = setup.args
    kinds: list[tuple[str, int]] = [("scale", k) for k in a.workers]
    if not a.no_shards:
        kinds.append(("shards", a.shard_workers))
    for r in range(a.rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
        for mode, k in order:
            out = run_driver(setup, mode, k, f"r{r}-w{k}")
            out["round"] = r
            if mode == "scale":
                setup.scale.append(out)
                run = out["run"]
                print(
                    f"round {r + 1}/{a.rounds} {k} worker(s): {run['wall']:6.2f} s, "
                    f"{a.pages / run['wall']:6,.0f} pages/s, mean in flight "
                    f"{run['server']['busy'] / run['wall']:.0f} (peak {run['server']['peak']:.0f}"
                    f"), cluster start {out['start']:.2f} s, warm-up {out['warm']:.2f} s; "
                    f"{cpu_line(run, a.pages)}",
                    flush=True,
                )
            else:
                setup.shards.append(out)
                n = out["many"]["report"]["shards"]
                print(
                    f"round {r + 1}/{a.rounds} shard costs ({k} worker): 1 shard "
                    f"{out['one']['wall']:.2f} s, {n} shards {out['many']['wall']:.2f} s, "
                    f"{n} no-op tasks {out['noop']:.3f} s; re-run of the finished job: "
                    f"{out['reruns']['client']['wall']:.3f} s (client), "
                    f"{out['reruns']['none']['wall']:.3f} s (cluster=None)",
                    flush=True,
                )


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    m = med(values)
    return f"±{(max(values) - min(values)) / 2 / m:.0%}" if m else "-"


def report(setup: Setup, code: str) -> str:
    """The markdown: scaling, the CPU behind it, per-shard costs, re-runs, what is on disk."""
    a = setup.args
    ceiling = a.concurrency / (a.latency_ms / 1000)  # pages/s of one shard at most
    shards = -(-a.pages // a.shard_size)
    by = {k: [o for o in setup.scale if o["workers"] == k] for k in a.workers}
    rate = {k: [a.pages / o["run"]["wall"] for o in runs] for k, runs in by.items()}
    lines = [
        f"## Sharded: {a.pages:,} pages of {PER_PAGE} records at {a.latency_ms:g} ms, "
        f"concurrency {a.concurrency} per shard, {shards} shards of {a.shard_size:,}, into a "
        f"Parquet folder",
        "",
        f"streampage {code}; {machine()}; distributed {dist_version()}; {a.rounds} round(s), "
        f"interleaved; load average {', '.join(f'{x:.2f}' for x in setup.load)} "
        f"(before, after); CPUs busy before a run (after waiting for below "
        f"{a.quiet:.0%}): median {med(setup.waits):.0%}, most {max(setup.waits):.0%}.",
        "",
        "| workers | pages/s | spread | wall s | x 1 worker | ceiling (workers x concurrency "
        "/ latency) | of ceiling | beyond the ceiling, per shard a worker ran | mean in flight "
        "at server | cluster start s | warm-up s | records verified |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    base_k = min(a.workers)
    for k, runs in by.items():
        pps = med(rate[k])
        cap = min(k, shards) * ceiling
        inflight = med([o["run"]["server"]["busy"] / o["run"]["wall"] for o in runs])
        wall = med([o["run"]["wall"] for o in runs])
        beyond = (wall - a.pages / cap) / (shards / min(k, shards))
        lines.append(
            f"| {k} | {pps:,.0f} | {spread(rate[k])} | {wall:.2f} "
            f"| {pps / med(rate[base_k]):.2f}x | {cap:,.0f} | {pps / cap:.0%} "
            f"| {beyond * 1000:,.0f} ms | {inflight:.0f} "
            f"| {med([o['start'] for o in runs]):.2f} | {med([o['warm'] for o in runs]):.2f} "
            f"| {PER_PAGE * a.pages:,} rows, each once, every run |"
        )

    top = max(a.workers)
    rounds = sorted({o["round"] for o in setup.scale})
    if top != base_k:
        per_round = [
            next(a.pages / o["run"]["wall"] for o in by[top] if o["round"] == r)
            / next(a.pages / o["run"]["wall"] for o in by[base_k] if o["round"] == r)
            for r in rounds
        ]
        ratio = med(rate[top]) / med(rate[base_k])
        lines += [
            "",
            "| target (issue 11) | ratio of medians | median of per-round ratios | range | goal "
            "| |",
            "|---|--:|--:|--:|--:|---|",
            f"| pages/s, {top} workers / {base_k} worker(s) | {ratio:.2f}x "
            f"| {med(per_round):.2f}x | {min(per_round):.2f}-{max(per_round):.2f}x "
            f"| >= {GOAL_RATIO:g}x | {verdict(ratio >= GOAL_RATIO)} |",
        ]

    lines += [
        "",
        "Every run, in the order run: how busy the machine was with other work during it "
        "(*others*: the CPUs' busy share that none of the job's processes account for) "
        "against what the run achieved:",
        "",
        "| round | workers | pages/s | shard s (median) | job's processes, cores | others |",
        "|--:|--:|--:|--:|--:|--:|",
    ]
    for o in setup.scale:
        cpu = o["run"]["cpu"]
        ours = cpu["server"] + sum(cpu["workers"]) + cpu["driver"]
        durations = o["run"].get("timeline", {}).get("durations") or [float("nan")]
        lines.append(
            f"| {o['round'] + 1} | {o['workers']} | {a.pages / o['run']['wall']:,.0f} "
            f"| {med(durations):.2f} | {ours / o['run']['wall']:.2f} "
            f"| {max(cpu['machine_busy'] - ours, 0.0) / (cpu['machine_total'] or 1.0):.0%} |"
        )

    lines += [
        "",
        "Where the CPU went during the timed call (medians; CPU µs per page fetched, user + "
        "system): *server* is the page server's process, *workers* all worker processes "
        "together (*per worker*: the busiest), *driver* the process that called `run_sharded` "
        "(client, scheduler and nannies: a LocalCluster runs them there), *machine busy* the "
        "share of both cores busy with anything over the call, *other processes* the part of "
        "it that none of these used (anything else running on the machine):",
        "",
        "| workers | server | workers | per worker (busiest) | driver | total | cores used "
        "(total CPU / wall) | machine busy | of which other processes |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    per = 1e6 / a.pages
    for k, runs in by.items():
        server = med([o["run"]["cpu"]["server"] * per for o in runs])
        workers = med([sum(o["run"]["cpu"]["workers"]) * per for o in runs])
        busiest = med([max(o["run"]["cpu"]["workers"]) * per for o in runs])
        driver = med([o["run"]["cpu"]["driver"] * per for o in runs])
        total = [
            (
                o["run"]["cpu"]["server"]
                + sum(o["run"]["cpu"]["workers"])
                + o["run"]["cpu"]["driver"]
            )
            for o in runs
        ]
        cores = med([t / o["run"]["wall"] for t, o in zip(total, runs, strict=True)])
        busy = med(
            [o["run"]["cpu"]["machine_busy"] / o["run"]["cpu"]["machine_total"] for o in runs]
        )
        others = med(
            [
                (o["run"]["cpu"]["machine_busy"] - t) / o["run"]["cpu"]["machine_total"]
                for t, o in zip(total, runs, strict=True)
            ]
        )
        lines.append(
            f"| {k} | {server:.0f} | {workers:.0f} | {busiest:.0f} | {driver:.0f} "
            f"| {med([t * per for t in total]):.0f} | {cores:.2f} of {os.cpu_count()} "
            f"| {busy:.0%} | {max(others, 0.0):.0%} |"
        )

    lines += [
        "",
        "Inside the timed call, from Dask's task stream (medians over rounds): *before* the "
        "first shard starts (page-range plan, sink open, job checkpoint, control `Variable`s, "
        "submit), each *shard*'s task from start to end against the floor (shard pages / "
        "ceiling of one shard), the *gap* between one shard's end and the next one's start "
        "on a worker, the *tail* (first worker out of shards to the last shard's end: workers "
        "idle while one still runs), and *after* the last shard ends (the driver notices, "
        "commits the job checkpoint, closes):",
        "",
        "| workers | before s | shard s (median) | shard s (slowest) | floor s | shards per "
        "worker | gap ms (median) | tail s | after s |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for k, runs in by.items():
        seen = [o["run"]["timeline"] for o in runs if o["run"].get("timeline")]
        if not seen:
            continue
        per = sorted({f"{min(t['per_worker'])}-{max(t['per_worker'])}" for t in seen})
        gaps = [med(t["gaps"]) for t in seen if t["gaps"]]
        lines.append(
            f"| {k} | {med([t['before'] for t in seen]):.2f} "
            f"| {med([med(t['durations']) for t in seen]):.2f} "
            f"| {med([max(t['durations']) for t in seen]):.2f} "
            f"| {a.shard_size / ceiling:.2f} | {', '.join(per)} "
            f"| {med(gaps) * 1000 if gaps else 0.0:.0f} "
            f"| {med([t['tail'] for t in seen]):.2f} "
            f"| {med([t['after'] for t in seen]):.2f} |"
        )
    lines += [
        "",
        "The driver's CPU while the shards run, against the same cluster idle (its "
        f"heartbeats, measured over {IDLE_SECONDS:g} s before the job): what each running shard "
        "costs the process that holds the scheduler (each shard asks the job's control "
        "`Variable`s four times a second and puts progress on a `Queue`, all through the "
        "scheduler), which is what limits how many shards one scheduler can follow:",
        "",
        "| workers | driver CPU idle, ms/s | driver CPU during the job, ms/s | beyond idle, per "
        "running shard, ms/s | worker CPU idle, ms/s per worker |",
        "|--:|--:|--:|--:|--:|",
    ]
    for k, runs in by.items():
        idle = [o["idle"]["cpu"]["driver"] / o["idle"]["seconds"] for o in runs]
        busy_rate = [o["run"]["cpu"]["driver"] / o["run"]["wall"] for o in runs]
        running = min(k, shards)
        per_shard = [(b - i) / running for b, i in zip(busy_rate, idle, strict=True)]
        worker_idle = [sum(o["idle"]["cpu"]["workers"]) / k / o["idle"]["seconds"] for o in runs]
        lines.append(
            f"| {k} | {med(idle) * 1000:.1f} | {med(busy_rate) * 1000:.1f} "
            f"| {med(per_shard) * 1000:.1f} | {med(worker_idle) * 1000:.1f} |"
        )

    disk = [o["folder"] for o in by[top]]
    part_bytes = [b for f in disk for b in f["part_bytes"]]
    lines += [
        "",
        f"On disk after a run ({top} workers): {med([f['parts'] for f in disk]):.0f} part files "
        f"for {shards} shards ({PER_PAGE * a.shard_size:,} records a shard), "
        f"{med(part_bytes) / 1e3:,.0f} KB each (median), and "
        f"{med([f['hidden_files'] for f in disk]):.0f} file(s) "
        f"({med([f['hidden_bytes'] for f in disk]) / 1e3:,.0f} KB) under names starting with "
        "`.` or `_` (checkpoints, journals: invisible to `pyarrow.dataset`); the largest, "
        "first round: "
        + ", ".join(f"`{name}` {size / 1e3:,.1f} KB" for name, size in disk[0]["hidden"])
        + ".",
    ]

    if setup.shards:
        lines += shard_report(setup)
    lines += [
        "",
        "The server is aiohttp"
        + (" on uvloop" if has_uvloop() else "")
        + f" in its own process, answering after {a.latency_ms:g} ms (`asyncio.sleep`); "
        "nothing is pinned: the server, the driver (with the scheduler and nannies) and the "
        f"workers share the machine's {os.cpu_count()} CPUs. Each run is a fresh driver process "
        "with a fresh LocalCluster (`n_workers=K, threads_per_worker=1, processes=True`) and a "
        "fresh temporary folder; *wall s* is the `run_sharded(...)` call alone, cluster start "
        "(LocalCluster + Client + all workers up) and warm-up (importing streampage and pyarrow "
        "on each worker) are reported beside it. *pages/s* is pages / wall, *spread* half the "
        "min-max range over the median, *mean in flight* the server's busy seconds over the "
        "wall time. *x 1 worker* and the target are ratios of medians of the same run; the "
        "per-round ratios pair the runs of a round. *Beyond the ceiling* is the median wall "
        "time minus pages / ceiling, over the shards each worker ran (shards / workers): what "
        "a shard costs at this latency beyond its pages (its first and last round trips, when "
        "fewer than the concurrency are in flight, and its set-up and publish). After each "
        "run the folder was read with `pyarrow.dataset` and held every record once.",
    ]
    return "\n".join(lines) + "\n"


def shard_report(setup: Setup) -> list[str]:
    a = setup.args
    runs = setup.shards
    n = runs[0]["many"]["report"]["shards"]
    size = runs[0]["shard_size"]
    extra = n - 1
    one = med([o["one"]["wall"] for o in runs])
    many = med([o["many"]["wall"] for o in runs])
    per_shard = med([(o["many"]["wall"] - o["one"]["wall"]) / extra for o in runs])

    def cpu_per_shard(part: Callable[[dict[str, Any]], float]) -> float:
        return med([(part(o["many"]["cpu"]) - part(o["one"]["cpu"])) / extra for o in runs])

    driver = cpu_per_shard(lambda c: c["driver"])
    workers = cpu_per_shard(lambda c: sum(c["workers"]))
    server = cpu_per_shard(lambda c: c["server"])
    noop = med([o["noop"] / n for o in runs])
    client_rerun = [o["reruns"]["client"] for o in runs]
    none_rerun = [o["reruns"]["none"] for o in runs]
    lines = [
        "",
        f"### Cost per shard ({a.shard_workers} worker, {a.shard_pages:,} pages without "
        f"latency from `/fast/items`, concurrency {a.concurrency})",
        "",
        "| job | wall s | pages/s | driver CPU s | worker CPU s | server CPU s | requests |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, key in ((f"1 shard of {a.shard_pages:,}", "one"), (f"{n} shards of {size}", "many")):
        walls = [o[key]["wall"] for o in runs]
        lines.append(
            f"| {name} | {med(walls):.2f} | {a.shard_pages / med(walls):,.0f} "
            f"| {med([o[key]['cpu']['driver'] for o in runs]):.2f} "
            f"| {med([sum(o[key]['cpu']['workers']) for o in runs]):.2f} "
            f"| {med([o[key]['cpu']['server'] for o in runs]):.2f} "
            f"| {med([o[key]['server']['requests'] for o in runs]):,.0f} |"
        )
    lines += [
        "",
        "| per shard, beyond its pages | ms |",
        "|---|--:|",
        f"| wall time: ({n} shards - 1 shard) / {extra} | {per_shard * 1000:.1f} |",
        f"| driver CPU (scheduler, client, `run_sharded`) | {driver * 1000:.1f} |",
        f"| worker CPU (the shard's set-up, sink, checkpoint, publish) | {workers * 1000:.1f} |",
        f"| server CPU | {server * 1000:.1f} |",
        f"| for comparison: a no-op Dask task (`client.map`, {n} tasks) | {noop * 1000:.2f} |",
        "",
        f"(medians over {len(runs)} round(s); 1 shard {one:.2f} s, {n} shards {many:.2f} s; the "
        "per-shard figures are medians of the per-round differences.)",
    ]
    plain = {name: [o["plain"][name] for o in runs] for name in PLAIN}
    ceiling = a.concurrency / (a.latency_ms / 1000)
    floor = a.shard_size / ceiling
    lines += [
        "",
        f"### One shard's worth of pages ({a.shard_size:,}) at {a.latency_ms:g} ms, no Dask",
        "",
        f"A plain `stream(url, pages=PageNumber(stop={a.shard_size}), concurrency="
        f"{a.concurrency})` in the driver process, before its cluster starts: what each shard's "
        f"stream costs by itself (floor: {a.shard_size:,} pages / {ceiling:,.0f} pages/s = "
        f"{floor:.2f} s). Every shard is a new stream, and pays its slow start again.",
        "",
        "| stream | wall s | beyond the floor | CPU µs/page (this process) |",
        "|---|--:|--:|--:|",
    ]
    what = {
        "adaptive": "`adaptive=True` (the default; what `run_sharded` uses), no sink",
        "fixed": "`adaptive=False`, no sink",
        "into": '`adaptive=True`, `.records("items").into(Parquet(folder), batch=1000, '
        'checkpoint=..., mode="resume")`: a shard without Dask',
    }
    for name, found in plain.items():
        wall = med([f["wall"] for f in found])
        lines.append(
            f"| {what[name]} | {wall:.2f} | {wall - floor:.2f} s "
            f"| {med([f['cpu'] for f in found]) * 1e6 / a.shard_size:.0f} |"
        )
    lines += [
        "",
        f"### Re-run of the finished {n}-shard job (same job name, same folder)",
        "",
        "| `cluster=` | wall s | spread | requests sent | shards skipped | goal | |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for name, reruns in (("the same `Client`", client_rerun), ("`None`", none_rerun)):
        walls = [r["wall"] for r in reruns]
        skipped = [r["report"]["skipped"] for r in reruns]
        lines.append(
            f"| {name} | {med(walls):.3f} | {spread(walls)} "
            f"| {med([r['server']['requests'] for r in reruns]):,.0f} "
            f"| {', '.join(sorted({str(s) for s in skipped}))} of {n} "
            f"| < {GOAL_RERUN:g} s | {verdict(med(walls) < GOAL_RERUN)} |"
        )
    facts = [o["many_folder"] for o in runs]
    part_bytes = [b for f in facts for b in f["part_bytes"]]
    lines += [
        "",
        f"On disk after the {n}-shard job: {med([f['parts'] for f in facts]):.0f} part files "
        f"({med(part_bytes) / 1e3:,.1f} KB each, median, for {size * PER_PAGE} records), "
        f"{med([f['hidden_files'] for f in facts]):.0f} hidden files "
        f"({med([f['hidden_bytes'] for f in facts]) / 1e3:,.0f} KB; the largest, first round: "
        + ", ".join(f"`{name}` {size / 1e3:,.1f} KB" for name, size in facts[0]["hidden"])
        + f"). The folder's journal (where the job's checkpoint is committed, the whole job "
        f"state each time: plan, shards done) had {med([f['journal_lines'] for f in facts]):.0f} "
        f"lines, the longest {med([f['journal_longest'] for f in facts]) / 1e3:,.1f} KB.",
    ]
    return lines


def dist_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        return version("distributed")
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description="run_sharded on a LocalCluster of 1 and of 4 workers, at 100 ms latency"
    )
    parser.add_argument("--pages", type=int, default=20_000, help="pages a job (20,000)")
    parser.add_argument("--shard-size", type=int, default=1_000, help="pages a shard (1,000)")
    parser.add_argument("--workers", default="1,4", help="worker counts (default 1,4)")
    parser.add_argument("--concurrency", type=int, default=50, help="per shard (50)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="per request (100)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--shard-pages", type=int, default=2_000, help="cost per shard: pages")
    parser.add_argument("--shards", type=int, default=200, help="cost per shard: shards (200)")
    parser.add_argument("--shard-workers", type=int, default=1, help="cost per shard: workers")
    parser.add_argument("--no-shards", action="store_true", help="skip the per-shard section")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 pages, 1 round")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a driver may take")
    parser.add_argument(
        "--quiet", type=float, default=0.15, help="busy share of the CPUs to wait below (0.15)"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=300.0, help="longest wait for a quiet machine (300 s)"
    )
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args()
    if args.quick:
        args.pages, args.shard_size, args.rounds, args.shard_pages = 2_000, 250, 1, 400
    try:
        args.workers = sorted({int(k) for k in args.workers.split(",") if k.strip()})
    except ValueError:
        parser.error("--workers: comma-separated integers, e.g. 1,4")
    if not args.workers or min(args.workers) < 1 or args.rounds < 1 or args.pages < 1:
        parser.error("--workers, --rounds and --pages must be at least 1")
    if args.shard_size < 1 or args.shards < 2 or args.shard_pages < args.shards:
        parser.error("--shard-size >= 1, --shards >= 2 and --shard-pages >= --shards")
    output: Path = args.output or RESULTS / ("sharded-quick.md" if args.quick else "sharded.md")

    t_start = time.perf_counter()
    with contextlib.ExitStack() as cleanup:
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="streampage-shard-")))
        src = tmp / "src"
        work = tmp / "work"
        src.mkdir()
        work.mkdir()
        code = snapshot_streampage(src)
        server = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_serve",
                "--pages",
                str(max(args.pages, args.shard_pages)),
                "--latency-ms",
                str(args.latency_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        cleanup.callback(stop_server, server)
        assert server.stdout is not None
        first = server.stdout.readline()
        if not first:
            raise SystemExit(f"the server did not start (exit {server.wait()})")
        base = f"http://127.0.0.1:{json.loads(first)['port']}"
        setup = Setup(base=base, src=src, work=work, args=args)
        print(
            f"streampage {code}\nserver {base}/items: {max(args.pages, args.shard_pages):,} "
            f"pages at {args.latency_ms:g} ms; work in {work}",
            flush=True,
        )
        setup.load.append(load_average())
        measure(setup)
        setup.load.append(load_average())
    table = report(setup, code)
    print()
    print(table, end="")
    print(f"\n(whole benchmark: {time.perf_counter() - t_start:.0f} s)")
    write_result(output, table)
    raw = {"args": {k: v for k, v in vars(args).items() if k != "output"}, "code": code}
    raw.update(scale=setup.scale, shards=setup.shards, load=setup.load, waits=setup.waits)
    write_result(output.with_suffix(".json"), json.dumps(raw, indent=1, default=str) + "\n")


if __name__ == "__main__":
    entry(main, serve=serve_main, driver=driver_main)

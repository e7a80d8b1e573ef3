"""Issue 11: sharded runs on a Dask cluster, exactly once (``streampage.distributed``).

Every test runs ``run_sharded`` against a page server in a subprocess (``tests/page_server.py``:
ids 1..X over pages of ``per_page`` records, a total in every body, and a log of every request
it saw, with its arrival time, its ``X-Run`` header and the client's port), on one
``LocalCluster(n_workers=2, processes=True, threads_per_worker=1)`` started once for the
module and passed in as a ``distributed.Client`` (one test lets run_sharded start its own
``cluster="local:2"`` and checks that it is gone after).

What is pinned (issue 11 and the API doc):

- every record exactly once in a Parquet folder, a JSON Lines folder and PostgreSQL, one shard
  per ``shard_size`` pages (the last one short), whichever way the page count is known
  (``PageNumber(stop=)``, a total read from page 1, ``Auto``); a dataset read of the folder
  sees only the published parts, and the folder holds nothing else but ``.streampage/``;
- a worker SIGKILLed in the middle of a shard: the shard runs again elsewhere, the job is
  complete, no record twice;
- a re-run of a finished job skips every shard, fetches at most page 1, in under a second,
  without starting a cluster;
- ``rate=`` holds for the whole job, both workers together, measured at the server;
- SIGINT to a driver process stops every shard (no request after it exits) and a re-run
  completes the job, every record once, resuming instead of starting over;
- SQLite, a file instead of a folder, a bad job name and another shard_size for a job are
  ConfigurationErrors;
- the per-shard module imports no Dask.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pyarrow.dataset as ds
import pytest
from distributed import Client, LocalCluster
from yarl import URL

from streampage import ConfigurationError, PageNumber
from streampage.distributed import JobReport, run_sharded
from streampage.sinks import JSONLines, Parquet, Postgres, SQLite

pytest_plugins = ["pg_server"]  # postgres_dsn: a real server, started once for the session
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and SIGINT are POSIX")

TESTS = Path(__file__).resolve().parent
#: upper bound of any wait; a hang is a failure, not a stuck suite
HANG = 30.0


# ---------------------------------------------------------------------------- the page server


@dataclass(frozen=True)
class Request:
    t: float  # time.monotonic() at arrival, in the server's process (the same clock)
    page: int
    run: str  # the X-Run header
    port: int  # the client's TCP port


@dataclass
class Server:
    """``tests/page_server.py`` in a subprocess: ids 1..records, ``per_page`` a page."""

    proc: subprocess.Popen[str]
    base: str
    records: int
    per_page: int

    @property
    def url(self) -> str:
        return f"{self.base}/items"

    @property
    def port(self) -> int:
        return int(URL(self.base).port or 0)

    @property
    def pages(self) -> int:
        return math.ceil(self.records / self.per_page)

    @property
    def ids(self) -> list[int]:
        return list(range(1, self.records + 1))

    def _call(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method="POST" if data else "GET"
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
        with opener.open(request, timeout=10) as response:
            return json.loads(response.read())

    def requests(self, run: str | None = None) -> list[Request]:
        """Every page request the server saw (of the run ``run``), in arrival order."""
        seen = [Request(*r) for r in self._call("/_stats")["requests"]]
        return [r for r in seen if run is None or r.run == run]

    def counts(self, run: str | None = None) -> collections.Counter[int]:
        """Requests per page (of the run ``run``)."""
        return collections.Counter(r.page for r in self.requests(run))

    def configure(self, **settings: Any) -> None:
        self._call("/_config", settings)


@pytest.fixture
def page_server() -> Iterator[Callable[..., Server]]:
    """A factory: ``server = page_server(records=600, per_page=10, latency=0.0,
    slow_once={5: 3.0})`` starts a page server; every one is terminated after the test."""
    started: list[subprocess.Popen[str]] = []

    def make(
        records: int = 600,
        per_page: int = 10,
        latency: float = 0.0,
        slow_once: dict[int, float] | None = None,
    ) -> Server:
        args = [
            sys.executable, str(TESTS / "page_server.py"), "--records", str(records),
            "--per-page", str(per_page), "--latency", str(latency),
        ]  # fmt: skip
        for page, seconds in (slow_once or {}).items():
            args += ["--slow-once", f"{page}:{seconds}"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "port P", or "" if it died
        assert line.startswith("port "), f"the page server did not start: {line!r}"
        return Server(proc, f"http://127.0.0.1:{int(line.split()[1])}", records, per_page)

    yield make
    for proc in started:
        proc.terminate()
        proc.wait(HANG)
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes of one thread each, for the whole module (a start costs ~1 s).

    No dashboard; Dask's scheduler still serves HTTP (health, metrics), on port 8787 by
    default: on a free port here, so that the LocalCluster run_sharded starts gets 8787."""
    with LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as local:
        yield local


@pytest.fixture(scope="module")
def module_client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster) as c:
        yield c


@pytest.fixture
def client(module_client: Client) -> Client:
    """The module's client, with both workers up (a test may have killed one)."""
    module_client.wait_for_workers(2, timeout=HANG)
    return module_client


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """A test that takes longer than HANG * 2 seconds fails (run_sharded blocks the main
    thread: SIGALRM is the one thing that can interrupt it)."""

    def hung(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the test took longer than {HANG * 2} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, HANG * 2)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_dsn(postgres_dsn: str) -> Iterator[str]:
    """The DSN of a fresh database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    yield str(URL(postgres_dsn).with_path(f"/{name}"))
    asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))


def pg_query(dsn: str, sql: str) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(go())


# ---------------------------------------------------------------------------- the outputs


def assert_exactly_once(ids: list[int], expected: list[int], where: str) -> None:
    counts = collections.Counter(ids)
    twice = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(set(expected) - set(counts))
    foreign = sorted(set(counts) - set(expected))
    assert not (twice or missing or foreign), (
        f"{where}: {len(ids)} records; more than once: {twice[:10]}, missing: "
        f"{missing[:10]} ({len(missing)}), not expected: {foreign[:10]}"
    )


def dataset_ids(folder: Path, form: str) -> list[int]:
    """The ids a pyarrow dataset read of ``folder`` finds (it skips names that start with
    ``.`` or ``_``); none of the files it reads may be hidden."""
    dataset = ds.dataset(folder, format=form)
    hidden = [
        f
        for f in dataset.files
        if any(p.startswith((".", "_")) for p in Path(f).relative_to(folder).parts)
    ]
    assert hidden == [], f"a dataset read of {folder} sees hidden files: {hidden[:5]}"
    table = dataset.to_table()
    return [] if table.num_rows == 0 else table.column("id").to_pylist()


def assert_only_parts(folder: Path, job: str, ext: str, shards: int) -> None:
    """The folder holds the published parts, ``part-<job>-s<shard:06d>-<n:06d>.<ext>``, and
    ``.streampage/``: nothing else (no temporary file a reader could trip on)."""
    pattern = re.compile(rf"part-{re.escape(job)}-s(\d{{6}})-(\d{{6}})\.{re.escape(ext)}")
    names = sorted(os.listdir(folder))
    stray = [n for n in names if n != ".streampage" and not pattern.fullmatch(n)]
    assert stray == [], f"{folder} holds more than parts and .streampage/: {stray[:5]}"
    published = {int(m[1]) for n in names if (m := pattern.fullmatch(n))}
    assert published == set(range(shards)), f"shards with a part: {sorted(published)}"


def output_ids(kind: str, target: Any) -> list[int]:
    if kind == "parquet":
        return dataset_ids(target, "parquet")
    if kind == "jsonl":
        return dataset_ids(target, "json")
    return [row[0] for row in pg_query(target, "SELECT (data->>'id')::bigint FROM items")]


def make_sink(kind: str, target: Any) -> Any:
    if kind == "parquet":
        return Parquet(f"{target}{os.sep}")
    if kind == "jsonl":
        return JSONLines(f"{target}{os.sep}")
    return Postgres(target, table="items")


def assert_complete(report: JobReport, server: Server, where: str) -> None:
    assert report.complete, f"{where}: {report.failures}"
    assert report.failures == []
    assert report.records == server.records, f"{where}: report.records {report.records}"


def shard_ranges(pages: int, size: int) -> list[tuple[int, int]]:
    return [(first, min(first + size - 1, pages)) for first in range(1, pages + 1, size)]


# ---------------------------------------------------------------------------- exactly once


@pytest.mark.parametrize(
    ("kind", "paginator"),
    [
        pytest.param("parquet", "stop", id="parquet-folder-stop"),
        pytest.param("jsonl", "total_pages", id="jsonl-folder-total_pages"),
        pytest.param("postgres", "auto", id="postgres-auto"),
    ],
)
def test_every_record_exactly_once_into_each_sink(
    kind: str,
    paginator: str,
    client: Client,
    page_server: Callable[..., Server],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """60 pages in shards of 8 (the last one of 4), every record once in the output; the
    page count from ``stop`` (no request to plan), from page 1's total (read on the driver
    first) or found by Auto; the Client passed in is left running."""
    server = page_server(records=600, per_page=10, latency=0.005)
    pages: Any = {
        "stop": PageNumber(stop=server.pages),
        "total_pages": PageNumber(total_pages="total_pages"),
        "auto": None,
    }[paginator]
    target: Any = request.getfixturevalue("pg_dsn") if kind == "postgres" else tmp_path / "items"
    job = f"every-{kind}"

    report = run_sharded(
        server.url,
        pages=pages,
        records="items",
        sink=make_sink(kind, target),
        job=job,
        shard_size=8,
        cluster=client,
        concurrency=4,
        batch=20,
        headers={"X-Run": "first"},
    )

    assert_complete(report, server, kind)
    expected = shard_ranges(server.pages, 8)
    assert [s.id for s in report.shards] == list(range(len(expected)))
    assert [(s.first, s.last) for s in report.shards] == expected
    assert [s.state for s in report.shards] == ["done"] * len(expected)
    assert all(s.attempts == 1 for s in report.shards), [s.attempts for s in report.shards]
    assert [s.records for s in report.shards] == [
        (last - first + 1) * server.per_page for first, last in expected
    ]
    assert report.skipped == 0
    assert report.planned_pages == server.pages
    assert_exactly_once(output_ids(kind, target), server.ids, kind)

    counts = server.counts()
    assert set(counts) == set(range(1, server.pages + 1)), f"pages requested: {sorted(counts)}"
    twice = {n: c for n, c in counts.items() if c > (2 if n <= 2 else 1)}
    assert twice == {}, f"pages fetched more than once (1 and 2: more than twice): {twice}"
    assert client.status == "running", "run_sharded closed the Client it was given"

    if kind == "postgres":
        names = {
            row[0].removeprefix("items/")
            for row in pg_query(target, "SELECT name FROM streampage_checkpoints")
        }
        assert job in names, f"no checkpoint of the job itself: {sorted(names)}"
        shard_names = {f"{job}/shard-{i:06d}" for i in range(len(expected))}
        assert names - {job} <= shard_names, f"checkpoints: {sorted(names)}"
    else:
        assert_only_parts(target, job, "parquet" if kind == "parquet" else "jsonl", len(expected))


# ---------------------------------------------------------------------------- a worker dies


def pid_with_port(pids: list[int], port: int, server_port: int) -> int | None:
    """The process (among ``pids`` and their children) whose TCP connection to the server
    has the local port ``port``."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            procs += [proc, *proc.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for conn in proc.net_connections(kind="tcp"):
                if (
                    conn.laddr
                    and conn.laddr.port == port
                    and conn.raddr
                    and conn.raddr.port == server_port
                ):
                    return proc.pid
    return None


def test_a_worker_sigkilled_mid_shard_and_the_job_completes_exactly_once(
    client: Client, page_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Page 5 (shard 0 of 4, pages 1-10) is held 3 s the first time it is asked for: the
    worker that asked is SIGKILLed then, with pages of its shard committed and others not.
    Dask runs the shard again on a worker that is alive, and the output holds every
    record once."""
    server = page_server(records=400, per_page=10, latency=0.02, slow_once={5: 3.0})
    workers = client.run(os.getpid)  # worker address -> pid
    killed: list[int] = []
    problems: list[BaseException] = []

    def killer() -> None:
        try:
            deadline = time.monotonic() + HANG
            while time.monotonic() < deadline:
                asked = [r for r in server.requests("kill") if r.page == 5]
                if asked:
                    pid = pid_with_port(list(workers.values()), asked[0].port, server.port)
                    assert pid is not None, f"no worker {workers} has the connection of page 5"
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.01)
            raise AssertionError("page 5 was never asked for")
        except BaseException as exc:
            problems.append(exc)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    folder = tmp_path / "items"
    report = run_sharded(
        server.url,
        pages=PageNumber(stop=server.pages),
        records="items",
        sink=Parquet(f"{folder}/"),
        job="killed",
        shard_size=10,
        cluster=client,
        concurrency=2,
        batch=20,
        headers={"X-Run": "kill"},
    )
    thread.join(HANG)

    assert problems == [], problems
    assert killed, "no worker was killed"
    assert killed[0] in workers.values()
    assert (
        not psutil.pid_exists(killed[0])
        or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    )
    assert_complete(report, server, "after the kill")
    assert [s.state for s in report.shards] == ["done"] * 4
    assert report.shards[0].attempts >= 2, f"shard 0 started {report.shards[0].attempts} times"
    assert server.counts("kill")[5] >= 2, "page 5 was not asked for again after the kill"
    assert_exactly_once(dataset_ids(folder, "parquet"), server.ids, "Parquet after the kill")
    assert_only_parts(folder, "killed", "parquet", 4)


# ---------------------------------------------------------------------------- re-run


def test_a_rerun_of_a_finished_job_skips_every_shard_at_once(
    client: Client, page_server: Callable[..., Server], tmp_path: Path
) -> None:
    """20 shards of 2 pages, finished; the same job again (with cluster="local:2", which
    it need not start) skips all 20 in under a second, asking the server for page 1 at
    most, and leaves the output as it was."""
    server = page_server(records=200, per_page=5)
    folder = tmp_path / "items"

    def run(tag: str, cluster: Any) -> JobReport:
        return run_sharded(
            server.url,
            pages=PageNumber(total_pages="total_pages"),
            records="items",
            sink=Parquet(f"{folder}/"),
            job="rerun",
            shard_size=2,
            cluster=cluster,
            concurrency=2,
            headers={"X-Run": tag},
        )

    first = run("first", client)
    assert_complete(first, server, "the first run")
    assert len(first.shards) == 20
    parts = sorted(os.listdir(folder))

    started = time.monotonic()
    again = run("again", "local:2")
    took = time.monotonic() - started

    assert_complete(again, server, "the re-run")
    assert again.skipped == 20
    assert [s.state for s in again.shards] == ["skipped"] * 20
    assert [s.attempts for s in again.shards] == [0] * 20
    assert took < 1.0, f"the re-run of a finished job took {took:.2f} s"
    asked = server.counts("again")
    assert set(asked) <= {1} and asked[1] <= 1, f"the re-run asked for pages {dict(asked)}"
    assert sorted(os.listdir(folder)) == parts
    assert_exactly_once(dataset_ids(folder, "parquet"), server.ids, "Parquet after the re-run")


# ---------------------------------------------------------------------------- rate


def test_the_rate_holds_for_the_whole_job_at_the_server(
    client: Client, page_server: Callable[..., Server], tmp_path: Path
) -> None:
    """rate=40 for 120 pages in 4 shards, 2 at a time on 2 workers, 4 requests at once
    each: the server sees 40 requests a second (within 10%), not 40 per worker."""
    rate = 40.0
    server = page_server(records=1200, per_page=10)

    report = run_sharded(
        server.url,
        pages=PageNumber(stop=server.pages),
        records="items",
        sink=JSONLines(f"{tmp_path / 'items'}/"),
        job="rate",
        shard_size=30,
        cluster=client,
        concurrency=4,
        rate=rate,
        headers={"X-Run": "rate"},
    )

    assert_complete(report, server, "the rated run")
    times = sorted(r.t for r in server.requests("rate"))
    assert len(times) >= server.pages
    measured = (len(times) - 1) / (times[-1] - times[0])
    assert abs(measured - rate) <= 0.1 * rate, f"{measured:.1f} requests/s at the server"


# ---------------------------------------------------------------------------- cancellation


def files_open_under(pids: list[int], folder: Path) -> list[tuple[int, str]]:
    """(pid, path) of every file under ``folder`` that one of the processes ``pids`` holds
    open."""
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            for f in psutil.Process(pid).open_files():
                if Path(f.path).is_relative_to(folder):
                    found.append((pid, str(Path(f.path).relative_to(folder))))
    return found


def test_sigint_stops_every_shard_and_a_rerun_completes_the_job(
    client: Client, cluster: LocalCluster, page_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A driver process (tests/sharded_job.py, on the module's cluster by its address) gets
    SIGINT while its shards run: it ends, and no request comes from its shards after that
    (they stop, they are not left running on the cluster). A re-run here completes the job
    with every record once, without fetching every page again."""
    server = page_server(records=1200, per_page=10, latency=0.05)
    folder = tmp_path / "items"
    args = [
        sys.executable, str(TESTS / "sharded_job.py"), server.url, "--sink", "parquet",
        "--target", f"{folder}/", "--job", "cancel", "--cluster", cluster.scheduler_address,
        "--stop", str(server.pages), "--shard-size", "20", "--concurrency", "1",
        "--batch", "20", "--run", "cancel",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + HANG
        while len(server.requests("cancel")) < 30:
            assert proc.poll() is None, f"the driver ended first: {proc.communicate()}"
            assert time.monotonic() < deadline, "the driver asked for no 30 pages"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        while proc.poll() is None:
            assert time.monotonic() - interrupted < HANG, "the driver did not end after SIGINT"
            time.sleep(0.01)
        ended = time.monotonic()
        workers = list(client.run(os.getpid).values())
        while (still := files_open_under(workers, folder)) and time.monotonic() - ended < 0.5:
            time.sleep(0.02)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode != 0, f"the interrupted driver exited 0: {out!r}"
    assert proc.returncode in (130, 1, -signal.SIGINT), (proc.returncode, err[-3000:])
    time.sleep(1.0)  # a shard left running would ask for ~20 pages a second
    late = [r for r in server.requests("cancel") if r.t > ended + 0.1]
    assert late == [], f"{len(late)} requests after the driver ended, the first: {late[0]}"
    fetched = {r.page for r in server.requests("cancel")}
    assert len(fetched) < server.pages, "the job was over before the SIGINT"

    report = run_sharded(
        server.url,
        pages=PageNumber(stop=server.pages),
        records="items",
        sink=Parquet(f"{folder}/"),
        job="cancel",
        shard_size=20,
        cluster=client,
        concurrency=4,
        batch=20,
        headers={"X-Run": "resume"},
    )

    assert_complete(report, server, "the re-run after SIGINT")
    assert {s.state for s in report.shards} <= {"done", "skipped"}, report.shards
    assert_exactly_once(dataset_ids(folder, "parquet"), server.ids, "Parquet after the re-run")
    assert_only_parts(folder, "cancel", "parquet", 6)
    resumed = set(server.counts("resume"))
    assert len(resumed) < server.pages, "the re-run fetched every page again: it started over"
    # run_sharded raised only once its shards had stopped and let go of the output: no
    # worker held a file of it open (a checkpoint's lock or journal, a part) 0.5 s after the
    # driver ended. (Checked last, so that the checks above say what such a leak breaks.)
    assert still == [], f"files of the output open in workers after the driver ended: {still}"


# ---------------------------------------------------------------------------- refused


class OwnSink:
    """A sink of the user's own (in memory): it cannot go to the workers as a
    configuration and write a part per shard."""

    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def open(self, name: str) -> bytes | None:
        return None

    async def write(self, records: Any) -> None:
        self.rows.extend(records)

    async def commit(self, name: str, checkpoint: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "what", ["sqlite", "parquet-file", "jsonl-file", "job-name", "own-sink"], ids=lambda w: w
)
def test_what_cannot_be_sharded_is_a_configuration_error(
    what: str, client: Client, page_server: Callable[..., Server], tmp_path: Path
) -> None:
    """SQLite cannot be shared by machines; a part per shard needs a folder, not a file; a
    job name is [A-Za-z0-9_.-]+. Each is refused before any request, leaving no output."""
    server = page_server(records=100, per_page=10)
    sink: Any = {
        "sqlite": lambda: SQLite(tmp_path / "x.db", "items"),
        "parquet-file": lambda: Parquet(tmp_path / "items.parquet"),
        "jsonl-file": lambda: JSONLines(tmp_path / "items.jsonl"),
        "job-name": lambda: Parquet(f"{tmp_path / 'items'}/"),
        "own-sink": OwnSink,
    }[what]()
    job = "a/b" if what == "job-name" else "refused"

    with pytest.raises(ConfigurationError) as caught:
        run_sharded(
            server.url,
            pages=PageNumber(stop=server.pages),
            records="items",
            sink=sink,
            job=job,
            shard_size=2,
            cluster=client,
        )

    if what == "sqlite":
        assert "SQLite" in str(caught.value), caught.value
    if what == "own-sink":
        assert "a sink of your own" in str(caught.value), caught.value
        assert sink.rows == []
    assert server.requests() == [], "refused only after requests"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] in ([], ["items"])
    assert not (tmp_path / "items.parquet").exists() and not (tmp_path / "items.jsonl").exists()


def test_a_driver_that_fails_stops_its_shards(
    client: Client, page_server: Callable[..., Server], tmp_path: Path
) -> None:
    """The driver dies of its own error (here its progress callback): the shards it
    started stop at their last commit instead of running on unwatched, or waiting forever
    on a control that is gone; a rerun completes the job."""
    server = page_server(records=600, per_page=10, latency=0.05)
    folder = tmp_path / "items"

    def boom(progress: Any) -> None:
        if progress.elapsed > 0.5:
            raise RuntimeError("the driver's own failure")

    def run(on_progress: Any = None) -> JobReport:
        return run_sharded(
            server.url,
            pages=PageNumber(stop=server.pages),
            records="items",
            sink=Parquet(f"{folder}/"),
            job="failing",
            shard_size=30,
            cluster=client,
            concurrency=2,
            on_progress=on_progress,
        )

    with pytest.raises(RuntimeError, match="the driver's own failure"):
        run(boom)
    deadline = time.monotonic() + 20
    while client.processing() and any(client.processing().values()):
        assert time.monotonic() < deadline, f"shards still run: {client.processing()}"
        time.sleep(0.2)
    report = run()
    assert_complete(report, server, "the rerun after a failed driver")
    assert_exactly_once(dataset_ids(folder, "parquet"), server.ids, "Parquet after the rerun")


def test_another_shard_size_for_a_job_is_a_configuration_error(
    client: Client, page_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A job is split one way: the same job with another shard_size would cut its shards
    elsewhere, so it is refused, naming shard_size, and the output is left as it was."""
    server = page_server(records=200, per_page=10)
    folder = tmp_path / "items"

    def run(shard_size: int) -> JobReport:
        return run_sharded(
            server.url,
            pages=PageNumber(stop=server.pages),
            records="items",
            sink=Parquet(f"{folder}/"),
            job="sized",
            shard_size=shard_size,
            cluster=client,
        )

    assert_complete(run(5), server, "the first run")
    parts = sorted(os.listdir(folder))
    before = len(server.requests())

    with pytest.raises(ConfigurationError, match="shard_size"):
        run(10)

    assert len(server.requests()) == before
    assert sorted(os.listdir(folder)) == parts
    assert_exactly_once(dataset_ids(folder, "parquet"), server.ids, "Parquet after the refusal")


# ---------------------------------------------------------------------------- its own cluster


def spawned_since(before: set[int]) -> list[psutil.Process]:
    """Processes under this one that are new since ``before`` and not under one of them
    (a worker the module's cluster restarted), multiprocessing's helpers left out."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.pid in before or any(p.pid in before for p in proc.parents()):
                continue
            if any(h in " ".join(proc.cmdline()) for h in ("resource_tracker", "forkserver")):
                continue
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


# Dask's scheduler warns when port 8787 (its HTTP server: health, metrics) is taken by another
# program of the machine (a cluster of another test run), and serves on another port: a fact
# about the machine, not about run_sharded, which filterwarnings=error would make a failure.
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")
def test_a_local_cluster_run_sharded_starts_is_closed(
    client: Client, page_server: Callable[..., Server], tmp_path: Path
) -> None:
    """cluster="local:2": run_sharded starts two worker processes of its own, and none of
    them is left when it returns; the module's Client is not touched."""
    server = page_server(records=200, per_page=10, latency=0.05)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    most = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, len(spawned_since(before)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        report = run_sharded(
            server.url,
            pages=PageNumber(stop=server.pages),
            records="items",
            sink=JSONLines(f"{tmp_path / 'items'}/"),
            job="own-cluster",
            shard_size=5,
            cluster="local:2",
            concurrency=1,
        )
    finally:
        done.set()
        sampler.join(HANG)

    assert_complete(report, server, "on a cluster of its own")
    assert most >= 2, f"run_sharded started {most} processes for cluster='local:2'"
    deadline = time.monotonic() + 5.0
    while (left := spawned_since(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"left running: {[(p.pid, p.cmdline()[-3:]) for p in left]}"
    assert client.status == "running"
    assert_exactly_once(dataset_ids(tmp_path / "items", "json"), server.ids, "JSON Lines")


# ---------------------------------------------------------------------------- engine-free


def test_the_per_shard_module_imports_no_dask() -> None:
    """Another engine (Ray, a process pool) can drive the shard function: importing it
    loads no module of dask or distributed."""
    code = (
        "import streampage.distributed._shard, sys; "
        "found = sorted(m for m in sys.modules if m.startswith(('dask', 'distributed'))); "
        "assert not found, found"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from streampage.distributed import ShardSpec, run_shard

    assert callable(run_shard) and isinstance(ShardSpec, type)

"""Exactly-once under SIGKILL: a fetch into a sink, killed at random points, then resumed.

Each scenario runs ``tests/crash_job.py`` in a subprocess against a real aiohttp.web API in
this process (200 pages of 5 records with unique ids, ~1 s a run), SIGKILLs it mid-way,
runs it again with ``--resume`` and kills it once more (very early, mid-way or near the
end), and lets a last ``--resume`` finish. After every kill the sink must hold exactly the
records of the pages its checkpoint names, nothing it held before may be gone, and at the
end every record appears exactly once. Kill points are drawn from a seeded random so that a
failure can be replayed: the assertion message names the seed and every step.

Every sink: JSON Lines (plain and gzip), SQLite, PostgreSQL (a real server, from
``tests/pg_server.py``: absent is a failure, not a skip) and Parquet. Three seeds per sink,
each with its own way of paging: page numbers until an empty page, page numbers up to a
total read from the first page, and a Cursor walk. ``STREAMPAGE_SOAK=N`` runs N seeds per
sink instead (from ``STREAMPAGE_SOAK_FROM``, default 0), with up to five kills each
(minutes, not part of ``make test``).

``test_killed_at_an_exact_point_of_a_commit`` kills the file sinks at exact points of their
commits instead (``crash_job.py --die after:fsync:*/journal:2`` and so on): after the data
is durable and before the journal names it, after the journal, in Parquet's merge at finish.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import json
import os
import random
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

pytest_plugins = ["pg_server"]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

JOB = Path(__file__).with_name("crash_job.py")
ROOT = JOB.parent.parent
PAGES = 200
PER_PAGE = 5
ALL_IDS = list(range(1, PAGES * PER_PAGE + 1))
KINDS = ["jsonl", "jsonl.gz", "sqlite", "postgres", "parquet"]
#: how each seed pages through the API (seed % 3)
PAGING = ("number", "total", "cursor")
SOAK = int(os.environ.get("STREAMPAGE_SOAK") or 0)
FIRST_SEED = int(os.environ.get("STREAMPAGE_SOAK_FROM") or 0)
SEEDS = list(range(FIRST_SEED, FIRST_SEED + SOAK)) if SOAK else [0, 1, 2]
#: the longest any one run may take before the test calls it hung
RUN_LIMIT = 60.0


def page_ids(n: int) -> list[int]:
    return list(range((n - 1) * PER_PAGE + 1, n * PER_PAGE + 1)) if 1 <= n <= PAGES else []


# ---------------------------------------------------------------------------- the API


class Api:
    """200 pages of 5 records: ``/pages?page=N`` (with ``total_pages``; empty past the end)
    and ``/cursor?cursor=C`` (``next_cursor`` links the pages, null on the last one). Pages
    take 10-50 ms (by page number, so fanned-out pages finish out of order), cursor pages
    2 ms. ``served`` counts the responses sent, by the ``X-Crash-Run`` header of the
    request (the run that asked: a killed run's requests may still be answered)."""

    def __init__(self) -> None:
        self.served: collections.Counter[str] = collections.Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._cursors = {self.cursor(n): n for n in range(2, PAGES + 1)}

    @staticmethod
    def cursor(n: int) -> str:
        return f"c{n * 7919:x}=="  # opaque, and needs percent-encoding

    def body(self, n: int) -> dict[str, Any]:
        items = [{"id": i, "page": n, "name": f"item-{i} ✓"} for i in page_ids(n)]
        return {"page": n, "total_pages": PAGES, "items": items}

    async def pages(self, request: web.Request) -> web.Response:
        n = int(request.query.get("page", "1"))
        await asyncio.sleep((10 + (n * 37) % 41) / 1000)
        self.served[request.headers.get("X-Crash-Run", "")] += 1
        return web.json_response(self.body(n))

    async def walk(self, request: web.Request) -> web.Response:
        cursor = request.query.get("cursor")
        n = 1 if cursor is None else self._cursors.get(cursor)
        if n is None:
            raise web.HTTPBadRequest(text=f"unknown cursor {cursor!r}")
        await asyncio.sleep(0.002)
        self.served[request.headers.get("X-Crash-Run", "")] += 1
        body = self.body(n)
        body["next_cursor"] = self.cursor(n + 1) if n < PAGES else None
        return web.json_response(body)

    def url_for(self, paging: str) -> str:
        return f"{self.url}/cursor" if paging == "cursor" else f"{self.url}/pages"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/pages", self.pages)
        app.router.add_get("/cursor", self.walk)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = Api()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# ---------------------------------------------------------------------------- the job


class Job:
    """One run of crash_job.py: counts the commits it reports, can be SIGKILLed."""

    def __init__(self, api: Api, args: list[str], log: Path) -> None:
        self.api = api
        self.tag = uuid.uuid4().hex
        self.args = [*args, "--tag", self.tag]
        self.log = log
        self.commits = 0
        self.done: str | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def served(self) -> int:
        """Responses the API sent to this run."""
        return self.api.served[self.tag]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as err:  # noqa: ASYNC230 - before the child starts
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(JOB),
                *self.args,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=ROOT,
            )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode().strip()
            if text == "commit":
                self.commits += 1
            elif text.startswith("done"):
                self.done = text

    async def until(self, condition: Callable[[], bool], within: float = RUN_LIMIT) -> bool:
        """Wait until ``condition()`` holds (True) or the job has exited (False)."""
        async with asyncio.timeout(within):
            while not condition():
                if not self.running:
                    return condition()
                await asyncio.sleep(0.001)
        return True

    async def kill(self) -> bool:
        """SIGKILL the job; False if it had exited by itself already."""
        assert self.proc is not None
        killed = False
        with contextlib.suppress(ProcessLookupError):
            if self.proc.returncode is None:
                self.proc.send_signal(signal.SIGKILL)
                killed = True
        await self.wait()
        return killed and self.proc.returncode == -signal.SIGKILL

    async def wait(self, within: float = RUN_LIMIT) -> int:
        assert self.proc is not None and self._reader is not None
        async with asyncio.timeout(within):
            rc = await self.proc.wait()
            await self._reader
        return rc

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


# ---------------------------------------------------------------------------- the sinks


@dataclass
class Held:
    """What a sink holds durably: its records' ids, and the pages its checkpoint names."""

    ids: list[int]
    pages: set[int] = field(default_factory=set)


def checkpoint_pages(document: Any) -> set[int]:
    """The page numbers a checkpoint (its JSON, decoded) names; the job has one source."""
    if not document:
        return set()
    sources = document["sources"]
    assert len(sources) == 1, f"one source expected in the checkpoint: {document}"
    (state,) = sources.values()
    return {n for start, end in state.get("pages", []) for n in range(start, end + 1)}


def journal_entries(path: Path) -> list[dict[str, Any]]:
    """The whole, decodable lines of a journal, up to the first that is not (as the sinks
    read it)."""
    entries = []
    if path.exists():
        for line in path.read_bytes().split(b"\n")[:-1]:
            try:
                entries.append(json.loads(line))
            except ValueError:
                break
    return entries


def last_entry(entries: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    found = None
    for entry in entries:
        if entry.get("name") == "crash":
            found = entry
    return found


def jsonl_ids(data: bytes, gz: bool) -> list[int]:
    if gz and data:
        data = gzip.decompress(data)
    return [json.loads(line)["id"] for line in data.splitlines()]


class Target:
    """Where a scenario's sink writes, and how to read it back from outside."""

    def __init__(self, kind: str, tmp_path: Path, dsn: str | None) -> None:
        self.kind = kind
        self.dsn = dsn
        self.schema = f"crash_{uuid.uuid4().hex[:12]}"
        suffix = {"jsonl": "jsonl", "jsonl.gz": "jsonl.gz", "sqlite": "db", "parquet": "parquet"}
        self.path = tmp_path / "sink" / f"out.{suffix.get(kind, 'x')}"
        #: the file sinks' hidden state folder: journal, lock, staged parts
        self.state = self.path.with_name(f".{self.path.name}.streampage")

    async def setup(self) -> None:
        if self.kind == "postgres":
            import asyncpg

            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f"CREATE SCHEMA {self.schema}")
            finally:
                await conn.close()

    def args(self) -> list[str]:
        if self.kind == "postgres":
            assert self.dsn is not None
            return [self.kind, self.dsn, "--table", f"{self.schema}.items"]
        return [self.kind, str(self.path)]

    async def held(self, final: bool = False) -> Held:
        """What the sink holds durably now (after a kill, or at the end, when ``final``:
        then read as a user would, the whole file)."""
        if self.kind in ("jsonl", "jsonl.gz"):
            return self._jsonl(final)
        if self.kind == "sqlite":
            return self._sqlite()
        if self.kind == "postgres":
            return await self._postgres()
        return self._parquet(final)

    def _jsonl(self, final: bool) -> Held:
        gz = self.kind == "jsonl.gz"
        data = self.path.read_bytes() if self.path.exists() else b""
        entry = last_entry(journal_entries(self.state / "journal"))
        offset = 0 if entry is None else entry["offset"]
        pages = checkpoint_pages(None if entry is None else entry["checkpoint"])
        if final:
            assert len(data) == offset, f"{len(data) - offset} bytes past the last commit"
            return Held(jsonl_ids(data, gz), pages)
        assert len(data) >= offset, f"the file is shorter ({len(data)}) than committed"
        return Held(jsonl_ids(data[:offset], gz), pages)

    def _sqlite(self) -> Held:
        if not self.path.exists():
            return Held([])
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if "items" not in tables:
                return Held([])
            ids = [json.loads(row[0])["id"] for row in db.execute("SELECT data FROM items")]
            row = None
            if "streampage_checkpoints" in tables:
                row = db.execute(
                    "SELECT checkpoint FROM streampage_checkpoints WHERE name = 'items/crash'"
                ).fetchone()
        return Held(ids, checkpoint_pages(None if row is None else json.loads(row[0])))

    async def _postgres(self) -> Held:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            items = await conn.fetchval("SELECT to_regclass($1)", f"{self.schema}.items")
            if items is None:
                return Held([])
            rows = await conn.fetch(f"SELECT data::text FROM {self.schema}.items")
            ids = [json.loads(row[0])["id"] for row in rows]
            stored = None
            if await conn.fetchval(
                "SELECT to_regclass($1)", f"{self.schema}.streampage_checkpoints"
            ):
                stored = await conn.fetchval(
                    f"SELECT checkpoint::text FROM {self.schema}.streampage_checkpoints "
                    "WHERE name = 'items/crash'"
                )
        finally:
            await conn.close()
        return Held(ids, checkpoint_pages(None if stored is None else json.loads(stored)))

    def _parquet(self, final: bool) -> Held:
        import pyarrow.parquet as pq

        ids: list[int] = []
        merged = 0
        if self.path.exists() and self.path.stat().st_size > 0:
            table = pq.read_table(self.path)
            ids = table.column("id").to_pylist()
            merged = int((table.schema.metadata or {})[b"streampage.parts"])
        entries = journal_entries(self.state / "journal")
        entry = last_entry(entries)
        pages = checkpoint_pages(None if entry is None else entry["checkpoint"])
        parts = self.state / "parts"
        committed = sorted({k for e in entries for k in e.get("parts", []) if k > merged})
        if final:
            assert not committed, f"committed parts {committed} not merged into {self.path}"
            return Held(ids, pages)
        for k in committed:
            ids += staged_part(parts, k).column("id").to_pylist()
        return Held(ids, pages)


def staged_part(parts: Path, k: int) -> Any:
    """Staged part ``k`` of a Parquet target: an Arrow IPC file (Parquet, as earlier
    versions staged them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = parts / f"part-{k:06d}.arrow"
    if not arrow.exists():
        return pq.read_table(parts / f"part-{k:06d}.parquet")
    with pa.OSFile(str(arrow)) as f:
        return pa.ipc.open_file(f).read_all()


# ---------------------------------------------------------------------------- scenarios


def duplicates_and_missing(ids: list[int], expected: Iterable[int]) -> str:
    counts = collections.Counter(ids)
    dup = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(set(expected) - set(counts))
    extra = sorted(set(counts) - set(expected))
    return (
        f"{len(ids)} records, {len(counts)} distinct; duplicated: {_short(dup)}; "
        f"missing: {_short(missing)}; unexpected: {_short(extra)}"
    )


def _short(ids: list[int]) -> str:
    return f"{len(ids)} {ids[:20]}{'...' if len(ids) > 20 else ''}" if ids else "none"


def check_held(held: Held, what: str) -> None:
    """A sink's durable state: no record twice, and exactly the records of the pages its
    checkpoint names (so a resume fetches exactly the others)."""
    expected = sorted(i for n in held.pages for i in page_ids(n))
    assert sorted(held.ids) == expected, (
        f"{what}: the records held are not those of the checkpoint's {len(held.pages)} pages: "
        + duplicates_and_missing(held.ids, expected)
    )


@dataclass
class Scenario:
    kind: str
    seed: int
    api: Api
    target: Target
    tmp_path: Path
    steps: list[str] = field(default_factory=list)
    runs: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.kind}/{self.seed}")
        self.paging = PAGING[self.seed % 3]
        self.batch = self.rng.choice([3, 7, 12, 25])

    def where(self) -> str:
        return (
            f"sink={self.kind} seed={self.seed} pages={self.paging} batch={self.batch}; "
            "steps: " + " | ".join(self.steps)
        )

    def job(self, resume: bool) -> Job:
        self.runs += 1
        args = [self.api.url_for(self.paging), *self.target.args()]
        args += ["--pages", self.paging, "--batch", str(self.batch)]
        if resume:
            args.append("--resume")
        return Job(self.api, args, self.tmp_path / f"run{self.runs}.stderr")

    async def run_and_kill(self, how: str, held: Held) -> Held:
        """One run (resumed unless it is the first), SIGKILLed at a point ``how`` says:
        ``mid`` (after a random number of pages, and at least one commit), ``early`` (a
        random moment in its first 0.5 s: start-up, open, resume, first pages) or ``late``
        (a few pages before the end: it may finish first)."""
        rng = self.rng
        job = self.job(resume=self.runs > 0)
        left = PAGES - len(held.pages)
        await job.start()
        try:
            if how == "early":
                delay = rng.uniform(0, 0.5)
                point = f"at {delay:.3f} s"
                await asyncio.sleep(delay)
            elif how == "mid":
                pages = rng.randint(1, max(1, left * 2 // 3))
                point = f"after {pages} pages and 1 commit"
                await job.until(lambda: job.served >= pages and job.commits >= 1)
            else:
                pages = max(1, left - rng.randint(0, 4))
                point = f"after {pages} pages"
                await job.until(lambda: job.served >= pages)
            jitter = rng.uniform(0, 0.02)
            await asyncio.sleep(jitter)
            killed = await job.kill()
        finally:
            if job.running:
                await job.kill()
        rc = job.proc.returncode if job.proc else None
        step = (
            f"run {self.runs} ({how}: {point} +{jitter * 1000:.0f} ms; served {job.served}, "
            f"{job.commits} commits): " + ("killed" if killed else f"exited {rc} first")
        )
        if not killed:
            assert rc == 0, f"{self.where()} | {step}: failed:\n{job.stderr()}"
        now = await self.target.held()
        step += f", holds {len(now.ids)} records of {len(now.pages)} pages"
        self.steps.append(step)
        check_held(now, self.where())
        lost = set(held.ids) - set(now.ids)
        assert not lost, f"{self.where()}: committed records gone: {_short(sorted(lost))}"
        return now

    async def finish(self) -> Held:
        job = self.job(resume=True)
        await job.start()
        try:
            rc = await job.wait()
        finally:
            if job.running:
                await job.kill()
        self.steps.append(f"run {self.runs} (to the end): exit {rc}, {job.done}")
        assert rc == 0, f"{self.where()}: the resumed run failed:\n{job.stderr()}"
        return await self.target.held(final=True)


def kill_plan(seed: int, rng: random.Random) -> list[str]:
    """The first kill is always mid-way; then one more, very early, late or mid-way (soak:
    up to four more, at random)."""
    if SOAK:
        return ["mid"] + [rng.choice(["early", "mid", "late"]) for _ in range(rng.randint(0, 4))]
    return ["mid", ("early", "late", "mid")[seed % 3]]


async def crash_and_resume(kind: str, seed: int, api: Api, tmp_path: Path, dsn: str | None) -> None:
    target = Target(kind, tmp_path, dsn)
    await target.setup()
    scenario = Scenario(kind, seed, api, target, tmp_path)
    held = Held([])
    for i, how in enumerate(kill_plan(seed, scenario.rng)):
        held = await scenario.run_and_kill(how, held)
        if i == 0:  # not vacuous: the first kill left the sink part-way
            assert 0 < len(held.ids) < len(ALL_IDS), (
                f"{scenario.where()}: the first kill did not land mid-way"
            )
    final = await scenario.finish()
    assert sorted(final.ids) == ALL_IDS, (
        f"{scenario.where()}: not every record exactly once: "
        + duplicates_and_missing(final.ids, ALL_IDS)
    )
    assert final.pages == set(range(1, PAGES + 1)), scenario.where()
    print(scenario.where())  # shown with -rP: where the kills landed


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "postgres"])
async def test_sigkill_and_resume_every_record_once(
    kind: str, seed: int, api: Api, tmp_path: Path
) -> None:
    await crash_and_resume(kind, seed, api, tmp_path, None)


@pytest.mark.parametrize("seed", SEEDS)
async def test_sigkill_and_resume_every_record_once_postgres(
    seed: int, api: Api, tmp_path: Path, postgres_dsn: str
) -> None:
    await crash_and_resume("postgres", seed, api, tmp_path, postgres_dsn)


#: (sink, where crash_job.py kills itself: --die WHEN:CALL:PATTERN:N)
CRASH_POINTS = [
    pytest.param(kind, die, id=f"{kind}-{label}")
    for kind, name in [("jsonl", "out.jsonl"), ("jsonl.gz", "out.jsonl.gz")]
    for label, die in [
        ("open", "after:fsync:*/sink:1"),  # the empty journal, in its directory
        ("data-1", f"after:fsync:*/{name}:1"),  # commit 1: its data durable, not journalled
        ("committed-1", f"before:fsync:*/{name}:2"),  # commit 1 journalled; commit 2 written
        ("data-2", f"after:fsync:*/{name}:2"),  # commit 2's data durable, not journalled
    ]
] + [
    pytest.param("parquet", die, id=f"parquet-{label}")
    for label, die in [
        ("open", "after:fsync:*/sink:1"),  # the empty journal, in its directory
        ("part-1", "after:fsync:*/part-000001.arrow:1"),  # written, not committed
        ("parts-dir-1", "after:fsync:*/parts:1"),  # its name durable, not journalled yet
        ("journal-1", "after:fsync:*/journal:2"),  # commit 1 journalled (1: created)
        ("part-2", "after:fsync:*/part-000002.arrow:1"),
        ("merged", "before:replace:*/merging.parquet:1"),  # finish: merged, not renamed
        ("renamed", "after:replace:*/merging.parquet:1"),  # finish: parts not deleted yet
    ]
]


@pytest.mark.parametrize(("kind", "die"), CRASH_POINTS)
async def test_killed_at_an_exact_point_of_a_commit(
    kind: str, die: str, api: Api, tmp_path: Path
) -> None:
    """The file sinks fsync the data, then the journal (Parquet: each part, the parts
    directory, the journal; at finish a merged file renamed over ``path``): a kill right
    after one of these lands between two steps. The next run resumes, and every record is
    there once."""
    target = Target(kind, tmp_path, None)
    common = [api.url_for("number"), *target.args(), "--batch", "10", "--concurrency", "32"]
    first = Job(api, [*common, "--die", die], tmp_path / "first.stderr")
    await first.start()
    rc = await first.wait()
    assert rc == -signal.SIGKILL, f"exit {rc}, not killed:\n{first.stderr()}"
    check_held(await target.held(), f"{kind} killed {die}")

    second = Job(api, [*common, "--resume"], tmp_path / "second.stderr")
    await second.start()
    rc = await second.wait()
    assert rc == 0, f"{kind}: resume after a kill {die} failed:\n{second.stderr()}"
    final = await target.held(final=True)
    assert sorted(final.ids) == ALL_IDS, duplicates_and_missing(final.ids, ALL_IDS)

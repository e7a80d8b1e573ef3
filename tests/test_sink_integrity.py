"""Issue 10's integrity rules, end to end through `streampage fetch ... -o TARGET`, every sink.

Every test runs `python -m streampage fetch` in subprocesses (so that they can be raced and
SIGKILLed) against an aiohttp.web API in this process, and is parametrized over every form
of ``-o``: a JSON Lines file (``x.jsonl``), a folder of JSON Lines parts (``out/items/
--format jsonl``), a Parquet file (``x.parquet``), a folder of Parquet parts (``out/items/``),
SQLite (``sqlite:///x.db?table=items``) and PostgreSQL (``postgresql://...?table=S.items``,
a fresh schema ``S`` per test on the server of ``tests/pg_server.py``).

What is pinned (issue 10):

- one writer per checkpoint: a second run on a held checkpoint fails at once, naming the
  holder (since, pid, host), and duplicates nothing; a holder killed with SIGKILL frees it
  at once (the system releases the lock, not a timeout);
- no secrets at rest: credentials given as URL userinfo, as ``?api_key=`` and as
  ``-H "Authorization: Bearer ..."`` are in no byte the runs leave on disk (hidden files
  included) nor in any text value of the database, a killed and resumed cursor walk
  included (its credentials come back from the command's own URL); journals and lock
  files are 0600;
- checkpoints know what they belong to: two tables of one database (two outputs in one
  folder) written at once, each with its own checkpoint; a resume of a finished run says
  so and adds 0 records; a resume with another source is refused, naming the difference;
- replace: a database loses its old rows in the transaction of the first new batch (never
  a mix of old and new), a file or folder keeps its old output until the new one is whole;
- state where readers do not look: a pyarrow dataset read of the output folder at random
  moments of a run that is killed and resumed sees only committed data (whole batches,
  never a row that is not in the final output), and never fails.

Every run's records are checked by id at the end: each exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import signal
import sqlite3
import stat
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from conftest import CliRun

pytest_plugins = ["pg_server"]  # postgres_dsn: a real server, started once for the session
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")

#: upper bound of any wait; a hang is a failure, not a stuck suite
HANG = 30.0
PER_PAGE = 5
#: records a commit: two whole pages
BATCH = 2 * PER_PAGE
#: every form of -o
KINDS = ["jsonl", "jsonl-folder", "parquet", "parquet-folder", "sqlite", "postgres"]

USER = "reader"
PASSWORD = "pw-Hq7Zk2-userinfo"
API_KEY = "key-N4x8Rt-query"
TOKEN = "tok-B9mW3e-bearer"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
#: what must never be at rest, in every form the run saw it
SECRETS = [PASSWORD, API_KEY, TOKEN, BASIC.split()[1]]


# ---------------------------------------------------------------------------- the APIs


class PagesAPI:
    """Page numbers with a total: ``/a?page=N`` and ``/b?page=N`` answer
    ``{"page": N, "total_pages": P, "items": [...]}``, PER_PAGE records a page (ids from 1
    on /a, from 100001 on /b; none past the last page). Each page waits ``latency``
    seconds; a page held with ``hold`` waits until ``release``. ``requests`` lists
    (run, dataset, page) in arrival order; the run is the ``X-Run`` request header."""

    FIRST_ID: ClassVar[dict[str, int]] = {"a": 1, "b": 100_001}

    def __init__(self, pages: int, latency: float) -> None:
        self.pages = pages
        self.latency = latency
        self.requests: list[tuple[str, str, int]] = []
        self.waiting: collections.Counter[str] = collections.Counter()
        self._gates: dict[tuple[str, int], asyncio.Event] = {}
        self.base = ""

    def url(self, dataset: str) -> str:
        return f"{self.base}/{dataset}"

    def ids(self, dataset: str) -> list[int]:
        first = self.FIRST_ID[dataset]
        return list(range(first, first + self.pages * PER_PAGE))

    def hold(self, dataset: str, page: int) -> None:
        self._gates[(dataset, page)] = asyncio.Event()

    def release(self, *which: tuple[str, int]) -> None:
        """Let the held pages ``which`` (dataset, page) go on; all of them if none is named."""
        for key, gate in self._gates.items():
            if not which or key in which:
                gate.set()

    def requested_by(self, run: str) -> list[int]:
        return [page for who, _, page in self.requests if who == run]

    async def handle(self, request: web.Request) -> web.Response:
        dataset = request.match_info["dataset"]
        n = int(request.query.get("page", "1"))
        self.requests.append((request.headers.get("X-Run", ""), dataset, n))
        gate = self._gates.get((dataset, n))
        if gate is not None and not gate.is_set():
            self.waiting[dataset] += 1
            try:
                await gate.wait()
            finally:
                self.waiting[dataset] -= 1
        if self.latency:
            await asyncio.sleep(self.latency)
        first = self.FIRST_ID[dataset] + (n - 1) * PER_PAGE
        items = (
            [{"id": i, "name": f"{dataset}-{i}"} for i in range(first, first + PER_PAGE)]
            if 1 <= n <= self.pages
            else []
        )
        return web.json_response({"page": n, "total_pages": self.pages, "items": items})


class CursorAPI:
    """A cursor walk that demands credentials on every request: ``?api_key=API_KEY`` and
    either Basic ``USER:PASSWORD`` or ``Bearer TOKEN`` (401 otherwise, counted in
    ``refused``). ``/items?cursor=C`` answers ``{"data": [...], "next_cursor": C'}``, null
    on the last page. ``cursors`` lists (run, cursor) in arrival order."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.cursors: list[tuple[str, str | None]] = []
        self.refused: list[str] = []
        self.waiting = 0
        self._gates: dict[int, asyncio.Event] = {}
        self.host = ""

    @property
    def ids(self) -> list[int]:
        return list(range(1, self.pages * PER_PAGE + 1))

    def hold(self, page: int) -> None:
        self._gates[page] = asyncio.Event()

    def release(self) -> None:
        for gate in self._gates.values():
            gate.set()

    async def handle(self, request: web.Request) -> web.Response:
        run = request.headers.get("X-Run", "")
        if request.headers.get("Authorization") not in (BASIC, f"Bearer {TOKEN}"):
            self.refused.append(f"{run}: no credentials ({request.path_qs})")
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.query.get("api_key") != API_KEY:
            self.refused.append(f"{run}: no api_key ({request.path_qs})")
            return web.json_response({"error": "unauthorized"}, status=401)
        cursor = request.query.get("cursor")
        self.cursors.append((run, cursor))
        n = int(cursor.removeprefix("after-")) + 1 if cursor else 1
        gate = self._gates.get(n)
        if gate is not None and not gate.is_set():
            self.waiting += 1
            try:
                await gate.wait()
            finally:
                self.waiting -= 1
        first = (n - 1) * PER_PAGE + 1
        return web.json_response(
            {
                "data": [{"id": i, "name": f"walk-{i}"} for i in range(first, first + PER_PAGE)],
                "next_cursor": f"after-{n}" if n < self.pages else None,
            }
        )


@contextlib.asynccontextmanager
async def serving(path: str, handler: Any, release: Callable[[], None]) -> AsyncIterator[str]:
    """``handler`` at ``path`` on 127.0.0.1; yields ``http://127.0.0.1:PORT``."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        release()  # requests of killed runs may still wait on a gate
        await runner.cleanup()


@pytest.fixture
async def pages_api() -> AsyncIterator[Callable[..., Awaitable[PagesAPI]]]:
    """A factory: ``api = await pages_api(pages=20, latency=0.0)``."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(pages: int = 20, latency: float = 0.0) -> PagesAPI:
            api = PagesAPI(pages, latency)
            api.base = await stack.enter_async_context(
                serving("/{dataset:[ab]}", api.handle, api.release)
            )
            return api

        yield make


@pytest.fixture
async def cursor_api() -> AsyncIterator[CursorAPI]:
    api = CursorAPI(pages=8)
    async with serving("/items", api.handle, api.release) as base:
        api.host = base.removeprefix("http://")
        yield api


# ---------------------------------------------------------------------------- the runs


class Fetch:
    """A `python -m streampage fetch ARGS` subprocess, that can be waited for or SIGKILLed.
    Every run still going when its test ends is killed (``reap``)."""

    alive: ClassVar[list[Fetch]] = []

    def __init__(self, proc: asyncio.subprocess.Process, args: tuple[str, ...]) -> None:
        self.proc = proc
        self.args = args
        self.started = time.monotonic()

    @classmethod
    async def start(cls, *args: str) -> Fetch:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streampage",
            "fetch",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        run = cls(proc, args)
        cls.alive.append(run)
        return run

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def result(self, within: float = HANG) -> CliRun:
        """Its exit code and output, once it has ended: a failure if that takes longer
        than ``within`` seconds (it is killed then)."""
        hung = False
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), within)
        except TimeoutError:
            hung = True
            self.proc.kill()
            out, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        done = CliRun(self.proc.returncode, out, err)
        if hung:
            pytest.fail(f"`streampage fetch` still running after {within} s: {done!r}")
        return done

    async def kill(self) -> CliRun:
        """SIGKILL it; it must have been running."""
        assert self.running, "the run ended before it could be killed"
        self.proc.kill()
        done = await self.result()
        assert done.code == -signal.SIGKILL, done
        return done


@pytest.fixture(autouse=True)
async def reap() -> AsyncIterator[None]:
    """Kill the runs a test leaves running (one that failed half-way)."""
    yield
    while Fetch.alive:
        run = Fetch.alive.pop()
        if run.running:
            run.proc.kill()
        await run.proc.communicate()


async def fetch(*args: str) -> CliRun:
    return await (await Fetch.start(*args)).result()


def page_args(api: PagesAPI, dataset: str, run: str) -> list[str]:
    """A run over ``/dataset`` with page numbers, 2 requests at once, two pages a commit."""
    return [
        api.url(dataset),
        "--pages", "page", "--total-pages", "total_pages", "--records", "items",
        "-c", "2", "--batch", str(BATCH), "--no-progress", "-H", f"X-Run: {run}",
    ]  # fmt: skip


def cursor_args(url: str, run: str, *more: str) -> list[str]:
    """A cursor walk over ``url``, one page a commit."""
    return [
        url,
        "--pages", "cursor", "--cursor-field", "next_cursor", "--cursor-param", "cursor",
        "--records", "data", "--batch", str(PER_PAGE), "--no-progress", "-H", f"X-Run: {run}",
        *more,
    ]  # fmt: skip


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, *runs: Fetch, within: float = HANG
) -> None:
    """Wait until ``condition()`` holds; fail at once if one of ``runs`` ends first."""
    deadline = time.monotonic() + within
    while True:
        holds = condition()
        if not isinstance(holds, bool):
            holds = await holds
        if holds:
            return
        for run in runs:
            if not run.running:
                pytest.fail(f"waiting for {what}, the run ended: {await run.result()!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {within} s")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------- the targets


def walk_files(root: Path) -> Iterator[Path]:
    """Every file under ``root``, hidden ones included (a folder that vanishes is skipped)."""
    for folder, _, names in os.walk(root):
        for name in names:
            yield Path(folder, name)


def read_folder(folder: Path, form: str) -> list[int]:
    """The ``id`` of every row a pyarrow dataset read of ``folder`` finds (a reader's view:
    pyarrow skips names starting with ``.`` or ``_``)."""
    if not folder.exists():
        return []
    table = ds.dataset(folder, format=form).to_table()
    return [] if table.num_rows == 0 else table.column("id").to_pylist()


@dataclass
class Target:
    """One form of ``-o``; ``name`` picks a table (databases) or an output in ``root``."""

    kind: str
    root: Path  # the folder every file output lives in
    dsn: str = ""  # postgres
    schema: str = ""  # postgres: a schema of the test's own

    @property
    def folder(self) -> bool:
        return self.kind.endswith("-folder")

    def output(self, name: str = "items") -> list[str]:
        """The ``-o`` option (and ``--format``) for ``name``."""
        if self.kind == "jsonl":
            return ["-o", str(self.root / f"{name}.jsonl")]
        if self.kind == "jsonl-folder":
            return ["-o", f"{self.root / name}/", "--format", "jsonl"]
        if self.kind == "parquet":
            return ["-o", str(self.root / f"{name}.parquet")]
        if self.kind == "parquet-folder":
            return ["-o", f"{self.root / name}/"]
        if self.kind == "sqlite":
            return ["-o", f"sqlite:///{self.root / 'x.db'}?table={name}"]
        return ["-o", f"{self.dsn}?table={self.schema}.{name}"]

    def dataset(self, name: str = "items") -> tuple[Path, str]:
        """The folder a dataset reader of the output reads, and its format: the output
        folder, or the folder that holds the output file."""
        if self.kind == "jsonl-folder":
            return self.root / name, "json"
        if self.kind == "parquet-folder":
            return self.root / name, "parquet"
        assert self.kind == "parquet", f"{self.kind} is not read as a dataset"
        return self.root, "parquet"

    async def ids(self, name: str = "items") -> list[int]:
        """The ids of every record the output holds, as a reader sees it now."""
        if self.kind == "postgres":
            conn = await asyncpg.connect(self.dsn)
            try:
                rows = await conn.fetch(
                    f"SELECT (data->>'id')::bigint FROM {self.schema}.{name} ORDER BY id"
                )
            except asyncpg.UndefinedTableError:
                return []
            finally:
                await conn.close()
            return [row[0] for row in rows]
        return await asyncio.to_thread(self._file_ids, name)

    def _file_ids(self, name: str) -> list[int]:
        if self.kind == "jsonl":
            path = self.root / f"{name}.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            return [json.loads(line)["id"] for line in lines]
        if self.folder:
            return read_folder(*self.dataset(name))
        if self.kind == "parquet":
            path = self.root / f"{name}.parquet"
            # One open file: given a path, pyarrow opens it once for the footer and again
            # for the pages, and a rename in between pairs one file's footer with another's
            # pages. A file replaced by a rename is whole to whoever holds it open.
            try:
                with open(path, "rb") as f:
                    return pq.read_table(f, columns=["id"]).column("id").to_pylist()
            except FileNotFoundError:
                return []
        db = self.root / "x.db"
        if not db.exists():
            return []
        with contextlib.closing(sqlite3.connect(db, timeout=HANG)) as conn:
            try:
                rows = conn.execute(f"SELECT json_extract(data, '$.id') FROM {name}").fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
        return [row[0] for row in rows]

    async def progress(self, name: str = "items") -> Any:
        """Something that changes with every commit into ``name``: the committed journal
        lines (files), or the table's row count and checkpoint (databases); None or 0
        before the first commit."""
        if self.kind == "postgres":
            conn = await asyncpg.connect(self.dsn)
            try:
                count = await conn.fetchval(f"SELECT count(*) FROM {self.schema}.{name}")
                saved = await conn.fetchval(
                    f"SELECT string_agg(checkpoint::text, ',') FROM "
                    f"{self.schema}.streampage_checkpoints WHERE name LIKE $1",
                    f"{name}/%",
                )
            except asyncpg.UndefinedTableError:
                return None
            finally:
                await conn.close()
            return None if saved is None else (count, saved)
        if self.kind == "sqlite":
            return await asyncio.to_thread(self._sqlite_progress, name)
        return await asyncio.to_thread(self._journal_commits, name)

    def _sqlite_progress(self, name: str) -> Any:
        db = self.root / "x.db"
        if not db.exists():
            return None
        with contextlib.closing(sqlite3.connect(db, timeout=HANG)) as conn:
            try:
                count = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                saved = conn.execute(
                    "SELECT group_concat(checkpoint) FROM streampage_checkpoints WHERE name LIKE ?",
                    (f"{name}/%",),
                ).fetchone()[0]
            except sqlite3.OperationalError:
                return None
        return None if saved is None else (count, saved)

    def _journal_commits(self, name: str) -> int:
        """Journal lines naming a checkpoint, in every journal of the output ``name``."""
        found = 0
        for path in walk_files(self.root):
            relative = path.relative_to(self.root).as_posix()
            if name in relative and (path.name == "journal" or path.name.endswith(".journal")):
                with contextlib.suppress(FileNotFoundError):
                    found += sum(b'"checkpoint"' in line for line in path.read_bytes().splitlines())
        return found

    async def stored_text(self) -> tuple[list[str], str]:
        """Postgres: the tables of the test's schema, and every value of every row of them
        as text."""
        conn = await asyncpg.connect(self.dsn)
        try:
            tables = [
                row[0]
                for row in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                    self.schema,
                )
            ]
            values = [
                row[0]
                for table in tables
                for row in await conn.fetch(f'SELECT t::text FROM {self.schema}."{table}" t')
            ]
        finally:
            await conn.close()
        return tables, "\n".join(values)

    async def settled(self, name: str, quiet: float = 0.3) -> None:
        """Wait until no commit into ``name`` has come for ``quiet`` seconds."""
        last = await self.progress(name)
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            await asyncio.sleep(quiet)
            now = await self.progress(name)
            if now == last:
                return
            last = now
        pytest.fail(f"commits into {name} did not stop within {HANG} s")

    async def until_committed(self, name: str, since: Any, *runs: Fetch) -> None:
        """Wait for a commit into ``name`` after ``since`` (an earlier ``progress``)."""

        async def moved() -> bool:
            now = await self.progress(name)
            return now not in (since, None, 0)

        await until(moved, f"commit into {name} ({self.kind})", *runs)


@pytest.fixture(params=KINDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    """Every form of ``-o``; the file outputs live in ``tmp_path/out``. PostgreSQL: a schema
    of the test's own, dropped after it."""
    root = tmp_path / "out"
    root.mkdir()
    if request.param != "postgres":
        yield Target(request.param, root)
        return
    dsn = request.getfixturevalue("postgres_dsn")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield Target("postgres", root, dsn, schema)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


# ---------------------------------------------------------------------------- checks


def assert_exactly_once(ids: list[int], expected: list[int], where: str) -> None:
    counts = collections.Counter(ids)
    twice = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(set(expected) - set(counts))
    foreign = sorted(set(counts) - set(expected))
    assert not (twice or missing or foreign), (
        f"{where}: {len(ids)} records; more than once: {twice[:10]}, missing: "
        f"{missing[:10]} ({len(missing)}), not expected: {foreign[:10]}"
    )


def torn_pages(ids: list[int]) -> list[int]:
    """Pages of which some records are there and others not (pages start at 1 or 100001)."""
    pages = collections.Counter((i - 1) % 100_000 // PER_PAGE for i in ids)
    return sorted(p + 1 for p, n in pages.items() if n != PER_PAGE)


@dataclass
class Watcher:
    """Reads the output at random moments (seeded) until stopped: what each read saw, and
    each read that failed."""

    read: Callable[[], Awaitable[list[int]]]
    seed: int
    seen: list[list[int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def _watch(self, stop: asyncio.Event) -> None:
        rnd = random.Random(self.seed)
        while True:
            try:
                self.seen.append(await self.read())
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rnd.uniform(0.0, 0.03))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Watcher]:
        stop = asyncio.Event()
        task = asyncio.create_task(self._watch(stop))
        try:
            yield self
        finally:
            stop.set()
            await asyncio.wait_for(task, HANG)  # one last read after the stop


def at_rest(root: Path) -> bytes:
    """Every byte of every file under ``root``, hidden ones included."""
    return b"".join(path.read_bytes() for path in sorted(walk_files(root)))


def leaked(data: str | bytes) -> list[str]:
    """The secrets found in ``data``."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return [secret for secret in SECRETS if secret in text]


# ---------------------------------------------------------------------------- one writer


async def test_one_writer_per_checkpoint_and_a_sigkilled_holder_frees_it_at_once(
    target: Target, pages_api: Callable[..., Awaitable[PagesAPI]]
) -> None:
    """A second run on a checkpoint another run holds fails at once, names the holder and
    fetches nothing; when the holder is SIGKILLed (no close, no unlock), a resume started
    at once gets the checkpoint and finishes the output, every record exactly once."""
    api = await pages_api(pages=20)
    api.hold("a", 12)  # the first run commits what it can, then waits on page 12
    before = await target.progress()
    first = await Fetch.start(*page_args(api, "a", "first"), *target.output())
    await target.until_committed("items", before, first)
    await until(lambda: api.waiting["a"] > 0, "page 12 held", first)

    second = await Fetch.start(*page_args(api, "a", "second"), *target.output(), "--resume")
    refused = await second.result(within=10)  # not blocked behind the first run
    took = time.monotonic() - second.started

    assert refused.code == 1, refused
    assert "another run holds" in refused.err, refused
    assert f"pid {first.pid} on host " in refused.err and "since " in refused.err, refused
    assert first.running, "the second run must fail while the first holds the checkpoint"
    assert took < 10, f"the second run took {took:.1f} s to fail"
    assert api.requested_by("second") == [], "the second run fetched pages it cannot commit"

    await first.kill()  # the system must free the lock: no stale lock, no timeout
    api.release()
    resumed = await fetch(
        *page_args(api, "a", "resume"), *target.output(), "--resume", "--stats-json", "-"
    )

    assert resumed.code == 0, resumed
    assert_exactly_once(await target.ids(), api.ids("a"), f"{target.kind} after the resume")
    delivered = json.loads(resumed.out)["pages"]
    assert delivered < api.pages, f"the resume delivered {delivered} pages: it started over"


# ---------------------------------------------------------------------------- no secrets at rest


async def test_secrets_are_nowhere_at_rest_and_a_resumed_walk_gets_them_back(
    target: Target, cursor_api: CursorAPI, tmp_path: Path
) -> None:
    """A cursor walk stores the URL of its last committed page: the credentials in it
    (userinfo, api_key) must be stripped at rest, and put back from the command's URL on
    resume. The first run sends a bearer token, the resume Basic credentials in the URL;
    the API refuses any request without them, and without the api_key."""
    cursor_api.hold(5)  # the first run commits pages 1-4, then waits
    with_key = f"http://{cursor_api.host}/items?api_key={API_KEY}"
    with_userinfo = f"http://{USER}:{PASSWORD}@{cursor_api.host}/items?api_key={API_KEY}"
    before = await target.progress()
    bearer = ["-H", f"Authorization: Bearer {TOKEN}"]
    first = await Fetch.start(*cursor_args(with_key, "first", *bearer), *target.output())
    await target.until_committed("items", before, first)
    await until(lambda: cursor_api.waiting > 0, "page 5 held", first)
    await target.settled("items")  # pages 1-4 committed, with the URL of page 4

    assert leaked(at_rest(tmp_path)) == [], "a secret is on disk while the run holds it"
    killed = await first.kill()
    cursor_api.release()
    resumed = await fetch(*cursor_args(with_userinfo, "resume"), *target.output(), "--resume")

    assert resumed.code == 0, resumed
    assert cursor_api.refused == [], "a request went without its credentials"
    resumed_at = [cursor for run, cursor in cursor_api.cursors if run == "resume"]
    assert resumed_at and None not in resumed_at, f"the resume walked from the start: {resumed_at}"
    assert_exactly_once(await target.ids(), cursor_api.ids, f"{target.kind} after the resume")
    for run in (killed, resumed):
        assert leaked(run.out + run.err) == [], run
    assert leaked(at_rest(tmp_path)) == [], "a secret was left on disk"
    state = [
        path
        for path in walk_files(tmp_path)
        if path.name in ("journal", "lock") or path.name.endswith((".journal", ".lock"))
    ]
    loose = [f"{p}: {stat.filemode(p.stat().st_mode)}" for p in state if p.stat().st_mode & 0o077]
    assert loose == [], "state files must be the owner's alone (0600)"
    if target.kind == "postgres":
        tables, text = await target.stored_text()
        assert "streampage_checkpoints" in tables and "items" in tables, tables
        assert leaked(text) == [], f"a secret is in the database ({tables})"
    else:
        assert state, "no journal or lock file found: the 0600 check saw nothing"


# ---------------------------------------------------------------------------- whose checkpoint


async def test_two_outputs_side_by_side_each_have_their_own_checkpoint(
    target: Target, pages_api: Callable[..., Awaitable[PagesAPI]]
) -> None:
    """Two tables of one database (two outputs in one folder), written at the same time
    under the same checkpoint name: neither run is in the other's way, each output gets
    its own source's records; then each checkpoint answers for its own source."""
    api = await pages_api(pages=20)
    api.hold("a", 12)
    api.hold("b", 12)
    before_a, before_b = await target.progress("items"), await target.progress("other")
    run_a = await Fetch.start(*page_args(api, "a", "a"), *target.output("items"))
    run_b = await Fetch.start(*page_args(api, "b", "b"), *target.output("other"))
    await target.until_committed("items", before_a, run_a, run_b)
    await target.until_committed("other", before_b, run_a, run_b)
    await until(  # both hold their lock now
        lambda: api.waiting["a"] > 0 and api.waiting["b"] > 0, "both at page 12", run_a, run_b
    )
    api.release()
    done_a, done_b = await run_a.result(), await run_b.result()

    assert done_a.code == 0, done_a
    assert done_b.code == 0, done_b
    assert_exactly_once(await target.ids("items"), api.ids("a"), f"{target.kind} items")
    assert_exactly_once(await target.ids("other"), api.ids("b"), f"{target.kind} other")

    resume = ["--resume", "--stats-json", "-"]
    again, crossed = await asyncio.gather(  # a's source into a, and into b
        fetch(*page_args(api, "a", "again"), *target.output("items"), *resume),
        fetch(*page_args(api, "a", "crossed"), *target.output("other"), *resume),
    )
    assert again.code == 0, again
    assert "complete already" in again.err, again
    assert json.loads(again.out)["records"] == 0
    assert_exactly_once(await target.ids("items"), api.ids("a"), f"{target.kind} items again")

    assert crossed.code != 0, crossed
    assert f"'{api.url('b')}'" in crossed.err and f"'{api.url('a')}'" in crossed.err, crossed
    assert_exactly_once(await target.ids("other"), api.ids("b"), f"{target.kind} other again")


# ---------------------------------------------------------------------------- replace


async def test_replace_never_shows_a_mix_of_the_old_and_the_new_output(
    target: Target, pages_api: Callable[..., Awaitable[PagesAPI]]
) -> None:
    """``--replace`` from another source, SIGKILLed after its first commit, then run again
    to the end, while a reader reads the output at random moments. A database drops its
    old rows and checkpoint in the transaction of the first new batch: a reader sees the
    old rows, or whole new batches, never both. A file or folder keeps its old output
    until the new one is complete, through the kill: then a file changes at once (one
    rename); a folder's parts are swapped one by one (it can be read between them, or
    lose a part under a reader that listed it), but never shows old and new together."""
    api = await pages_api(pages=20)
    old, new = api.ids("a"), api.ids("b")
    done = await fetch(*page_args(api, "a", "old"), *target.output())
    assert done.code == 0, done
    assert_exactly_once(await target.ids(), old, f"{target.kind} before the replace")
    databases = target.kind in ("sqlite", "postgres")

    def new_batches(seen: list[int]) -> bool:
        """Whole new batches and nothing else: a database after the first new commit."""
        whole = len(seen) % BATCH == 0 and torn_pages(seen) == []
        return bool(seen) and whole and len(seen) == len(set(seen)) and set(seen) <= set(new)

    api.hold("b", 1)  # the run has opened the target and begun its replace: no commit yet
    api.hold("b", 12)  # it has committed a few batches
    killed = Watcher(target.ids, seed=10)  # while the first --replace runs, and after its kill
    async with killed.running():
        before = await target.progress()
        args = [*page_args(api, "b", "replace"), *target.output(), "--replace"]
        replacing = await Fetch.start(*args)
        await until(lambda: api.waiting["b"] > 0, "page 1 held", replacing)
        assert_exactly_once(await target.ids(), old, f"{target.kind} before the first new commit")
        api.release(("b", 1))
        await target.until_committed("items", before, replacing)
        if databases:
            now = await target.ids()
            assert now and new_batches(now), "after the first commit: new rows only"
            _, saved = await target.progress()  # and the new source's checkpoint alone
            assert f'"{api.url("b")}"' in saved and f'"{api.url("a")}"' not in saved, saved
        await replacing.kill()
    api.release()
    for seen in killed.seen:
        if databases:
            assert sorted(seen) == old or new_batches(seen), f"a reader saw {len(seen)} rows"
        else:
            assert_exactly_once(seen, old, f"{target.kind} read before the replace completed")
    assert killed.errors == [], f"reads failed: {killed.errors[:3]}"

    swapped = Watcher(target.ids, seed=12)  # while --replace runs to the end
    async with swapped.running():
        again = await fetch(*page_args(api, "b", "again"), *target.output(), "--replace")

    assert again.code == 0, again
    assert_exactly_once(await target.ids(), new, f"{target.kind} after --replace")
    for seen in swapped.seen:
        if databases:
            assert sorted(seen) == old or new_batches(seen), f"a reader saw {len(seen)} rows"
        elif target.folder:
            assert len(seen) == len(set(seen)), "a reader saw a record twice"
            assert set(seen) <= set(old) or set(seen) <= set(new), "old and new rows together"
        else:
            assert sorted(seen) in (old, new), f"a reader saw {len(seen)} rows, neither output"
    lost = [e for e in swapped.errors if not (target.folder and "No such file" in e)]
    assert lost == [], f"reads failed: {lost[:3]}"


# ---------------------------------------------------------------------------- readers


@pytest.mark.parametrize("target", ["jsonl-folder", "parquet-folder", "parquet"], indirect=True)
async def test_a_dataset_reader_sees_only_committed_data_through_a_kill_and_a_resume(
    target: Target, pages_api: Callable[..., Awaitable[PagesAPI]]
) -> None:
    """pyarrow reads the output folder (for a Parquet file: the folder that holds it) at
    random moments while a run commits, is SIGKILLed at a random moment, and is resumed:
    every read succeeds and sees whole batches of committed rows, nothing else."""
    rnd = random.Random(7)
    api = await pages_api(pages=60, latency=0.02)
    folder, form = target.dataset()
    watcher = Watcher(lambda: asyncio.to_thread(read_folder, folder, form), seed=11)
    async with watcher.running():
        before = await target.progress()
        first = await Fetch.start(*page_args(api, "a", "first"), *target.output())
        await target.until_committed("items", before, first)
        await asyncio.sleep(rnd.uniform(0.0, 0.15))
        await first.kill()
        resumed = await fetch(*page_args(api, "a", "resume"), *target.output(), "--resume")
        await asyncio.sleep(0.05)  # a read or two after the end

    assert resumed.code == 0, resumed
    assert watcher.errors == [], f"reads of {folder} failed: {watcher.errors[:3]}"
    final = await asyncio.to_thread(read_folder, folder, form)
    assert_exactly_once(final, api.ids("a"), f"a dataset read of {folder} at the end")
    assert len(watcher.seen) >= 10, f"only {len(watcher.seen)} reads"
    for seen in watcher.seen:
        assert len(seen) == len(set(seen)), "a reader saw a record twice"
        assert set(seen) <= set(final), "a reader saw rows the output does not hold"
        assert torn_pages(seen) == [], "a reader saw part of a page"
        assert len(seen) % BATCH == 0, f"a reader saw {len(seen)} rows: part of a batch"

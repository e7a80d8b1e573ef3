"""The clients, as ``bench.py`` runs them: their names and labels, the code under test, and
one run of one client in a fresh process (``clients.py``, which stays a lean script of its
own, so that a run's peak RSS and CPU time are the client's alone).

The sinks section's runs each get a fresh target (a directory, or a PostgreSQL schema),
whose records another fresh process counts afterwards (``clients.py verify``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servers import HERE, PER_PAGE, WORK, PgCluster, cpu_seconds

if TYPE_CHECKING:
    from scenarios import Scenario

CLIENTS_PY = HERE / "clients.py"
#: added to every client's environment: servers.FIXED_ALLOCATOR unless bench.py's
#: ``--allocator as-is`` (set by bench.py's main)
ALLOCATOR: dict[str, str] = {}
SINKS_DIR = WORK / "sinks"

#: the reference: every "x hand" ratio is a client's pages/s over this one's, same scenario
REFERENCE = "handloop"
ALL_CLIENTS = [
    "streampage",
    "streampage-uvloop",
    "handloop",
    "handloop-uvloop",
    "gather",
    "threads",
]
LABELS = {
    "streampage": "streampage (asyncio)",
    "streampage-uvloop": "streampage (uvloop)",
    "handloop": "hand-written loop (asyncio)",
    "handloop-uvloop": "hand-written loop (uvloop)",
    "gather": "gather + resp.json() (asyncio)",
    "threads": "threads + requests",
    "sources-streampage": "streampage: one stream, Cursor (asyncio)",
    "sources-handloop": "hand-written per-source loop + Semaphore (asyncio)",
    "sink-none": 'no sink: `async for` over .records("items")',
    "sink-jsonl": "JSONLines",
    "sink-jsonl-gz": "JSONLines, gzip",
    "sink-sqlite": "SQLite",
    "sink-postgres": "PostgreSQL (asyncpg COPY)",
    "sink-parquet": "Parquet (pyarrow, zstd)",
}
#: the sources section's clients (always both, whatever --clients says); the reference first
SOURCES_REFERENCE = "sources-handloop"
SOURCES_CLIENTS = (SOURCES_REFERENCE, "sources-streampage")
#: the sinks section: --sinks names -> clients (clients.py), the no-sink reference first
SINK_REFERENCE = "sink-none"
SINKS = {
    "none": SINK_REFERENCE,
    "jsonl": "sink-jsonl",
    "jsonl-gz": "sink-jsonl-gz",
    "sqlite": "sink-sqlite",
    "postgres": "sink-postgres",
    "parquet": "sink-parquet",
}


def label(key: str) -> str:
    """Table label of a run key: a client, or a client's fault-free run (``client@clean``)."""
    client, _, variant = key.partition("@")
    return LABELS[client] + (", no faults" if variant else "")


# ---------------------------------------------------------------------- code under test


def snapshot_streampage(rev: str | None) -> tuple[Path, str]:
    """Copy the streampage package to measure into .work/src, put first on the clients' path.

    Every run of one invocation then measures the same code, even if the working tree is
    edited meanwhile; ``--rev`` measures a commit instead (for before/after comparisons).
    """
    repo = HERE.parent
    dest = WORK / "src"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)

    def git(*argv: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", "-C", str(repo), *argv], capture_output=True, check=False)

    if rev:
        found = git("rev-parse", "--verify", f"{rev}^{{commit}}")
        if found.returncode != 0:
            raise SystemExit(f"--rev {rev}: not a commit in {repo}")
        sha = found.stdout.decode().strip()
        archive = git("archive", sha, "streampage")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(dest, filter="data")
        what = f"git {rev} ({sha[:12]})"
    else:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(repo / "streampage", dest / "streampage", ignore=ignore)
        described = git("describe", "--always", "--dirty").stdout.decode().strip()
        what = f"working tree ({described or 'not a git checkout'})"
    digest = hashlib.sha256()
    for path in sorted((dest / "streampage").rglob("*.py")):
        digest.update(path.relative_to(dest).as_posix().encode() + b"\0" + path.read_bytes())
    return dest, f"{what}, sources sha256 {digest.hexdigest()[:12]}"


# ---------------------------------------------------------------------- running clients


def run_client(
    client: str,
    url: str,
    pages: int,
    concurrency: int,
    cpu: int | None,
    server_pids: list[int],
    src: Path,
    retry_backoff: float | None = None,
    sources: int = 0,
    extra: tuple[str, ...] = (),
    pg: PgCluster | None = None,
) -> dict[str, Any]:
    """One run of one client in a fresh interpreter; its JSON report plus the server's CPU
    (and the PostgreSQL cluster's, when ``pg`` is given)."""
    cmd = [sys.executable, str(CLIENTS_PY), client, "--url", url, "--pages", str(pages)]
    cmd += ["--concurrency", str(concurrency), *extra]
    if sources:
        cmd += ["--sources", str(sources)]
    if retry_backoff is not None and client.startswith("streampage"):
        cmd += ["--retry-backoff", str(retry_backoff)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    server_before = cpu_seconds(server_pids)
    pg_before = pg.cpu_seconds() if pg is not None else 0.0
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=60 + pages / 100,
            check=False,
            env={**os.environ, **ALLOCATOR, "PYTHONPATH": str(src)},
        )
    except subprocess.TimeoutExpired:
        return {"client": client, "failed": "timed out", "pages_expected": pages}
    server_cpu = cpu_seconds(server_pids) - server_before
    pg_cpu = pg.cpu_seconds() - pg_before if pg is not None else None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        return {"client": client, "failed": " | ".join(tail), "pages_expected": pages}
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    measured = report.get("streampage_file")
    if measured is not None and not Path(measured).is_relative_to(src):
        raise SystemExit(f"{client} imported streampage from {measured}, not the snapshot {src}")
    report["server_cpu_s"] = server_cpu
    report["pg_cpu_s"] = pg_cpu
    return report


# ---------------------------------------------------------------------- sink runs


@dataclass
class SinkTarget:
    """A fresh target for one sink run: a new directory (files), or a new schema (PostgreSQL:
    a new table, and a new checkpoints table, so no run finds another's checkpoint)."""

    kind: str  # clients.py's sink kind: "jsonl", ..., or "" for no sink
    target: str = ""
    table: str = "items"
    folder: Path | None = None
    schema: str = ""

    @property
    def client_args(self) -> tuple[str, ...]:
        return ("--target", self.target, "--table", self.table) if self.kind else ()


FILE_NAMES = {
    "jsonl": "items.jsonl",
    "jsonl-gz": "items.jsonl.gz",
    "sqlite": "items.db",
    "parquet": "items.parquet",
}


def new_target(client: str, serial: int, pg: PgCluster | None) -> SinkTarget:
    """Make a fresh, empty target for run number ``serial``; then flush the page cache, so
    that no earlier run's dirty pages are written out during this one's fsyncs."""
    kind = client.removeprefix("sink-")
    if client == SINK_REFERENCE:
        t = SinkTarget("")
    elif kind == "postgres":
        if pg is None:
            raise SystemExit("the PostgreSQL sink needs the cluster, which did not start")
        schema = f"bench_run_{serial}"
        # CHECKPOINT: the last run's dirty buffers are written now, not during this run
        pg.psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}", "CHECKPOINT")
        t = SinkTarget(kind, target=pg.dsn, table=f"{schema}.items", schema=schema)
    else:
        folder = SINKS_DIR / f"run-{serial:04d}-{kind}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        t = SinkTarget(kind, target=str(folder / FILE_NAMES[kind]), folder=folder)
    os.sync()
    return t


def verify_target(t: SinkTarget, pages: int) -> dict[str, Any]:
    """Count the records in the target from a fresh process (clients.py verify): the rows it
    holds, the expected records it lacks (lost), and rows that are not one of them (extra)."""
    cmd = [sys.executable, str(CLIENTS_PY), "verify", t.kind, "--target", t.target]
    cmd += ["--table", t.table, "--pages", str(pages)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return {"rows": 0, "lost": pages * PER_PAGE, "extra": 0, "error": tail}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def drop_target(t: SinkTarget, pg: PgCluster | None) -> None:
    if t.folder is not None:
        shutil.rmtree(t.folder, ignore_errors=True)
    if t.schema and pg is not None:
        pg.psql(f"DROP SCHEMA IF EXISTS {t.schema} CASCADE")


def run_sink_client(
    client: str,
    url: str,
    s: Scenario,
    cpu: int | None,
    server_pids: list[int],
    src: Path,
    pg: PgCluster | None,
    serial: int,
) -> dict[str, Any]:
    """One sink run on a fresh target, then its records counted in the target and the target
    removed. ``records_lost``/``records_extra``: expected records missing from it, and rows
    not expected (duplicates); with no sink, the records the ``async for`` counted."""
    t = new_target(client, serial, pg)
    try:
        report = run_client(
            client,
            url,
            s.pages,
            s.concurrency,
            cpu,
            server_pids,
            src,
            extra=(*t.client_args, "--batch", str(s.batch)),
            pg=pg if client == "sink-postgres" else None,
        )
        expected = s.pages * PER_PAGE
        if t.kind:
            found = verify_target(t, s.pages)
            report["verify"] = found
            report["records_in_target"] = found["rows"]
            report["records_lost"] = found["lost"]
            report["records_extra"] = found["extra"]
        else:
            counted = report.get("records") or 0
            report["records_in_target"] = counted
            report["records_lost"] = max(0, expected - counted)
            report["records_extra"] = max(0, counted - expected)
    finally:
        drop_target(t, pg)
    return report

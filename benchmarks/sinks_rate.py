"""Into each sink at what rate, beside the same stream with no sink? And where does the time go?

Issue 12's sinks target: ``stream(...).records("items").into(sink, batch=1000)`` at least
0.85x the pages/s of the same records drained by a plain ``async for`` (no sink), for 10^4
pages of ~2 KB (14 records each: 140,000 records). This is bench.py's sinks section,
focused, and self-contained (bench.py's modules are being reorganised; this script
depends on none of them): the same nginx setup (one worker, pinned to CPU 0, serving
bench.py's pages from files), the same client (``clients.py``'s sink clients, each run a
fresh interpreter pinned to CPU 1), a throwaway PostgreSQL started with
``tests/pg_server.py``'s helpers but with PostgreSQL's durable defaults (fsync,
synchronous_commit and full_page_writes on, as in bench.py: every sink's commit is
durable), on CPU 0 beside nginx, and the same check of every target afterwards (every
record there, none twice: ``clients.py verify``, another fresh process). The sinks:

===============================  ==============================================
no sink (the reference)          ``async for record in stream.records("items")``
JSON Lines file                  ``JSONLines(".../items.jsonl")``
gzip JSON Lines file             ``JSONLines(".../items.jsonl.gz")`` (level 6)
gzip, compresslevel=1            ``JSONLines(".../items.jsonl.gz", compresslevel=1)``
Parquet folder                   ``Parquet(".../items/")``
SQLite                           ``SQLite(".../items.db", table="items")``
PostgreSQL                       ``Postgres(dsn, table="bench_rate_K.items")``
SQLite, upsert (not by default)  ``SQLite(..., primary_key="id")``
PostgreSQL, upsert (likewise)    ``Postgres(..., primary_key="id")``
===============================  ==============================================

Every run writes to a fresh target (a new folder; a new schema for PostgreSQL), after a
``sync`` (and a ``CHECKPOINT``). Rounds are interleaved (each round runs every client once,
starting with a different one each round); the tables show medians, each sink's ratio of
medians to the no-sink client's, the per-round ratios (median and range), and the ratio
of CPU time per page (no sink over sink), which other work on the machine disturbs less
than wall time.

``--before REV`` measures a git revision (``git archive``, read only) in the same rounds as
the working tree, client by client: before and after side by side, on the same machine
state. Each code's sinks are compared with its own no-sink stream.

``--profile`` (on by default; ``--no-profile``) then runs each sink once more, in a fresh
process with cProfile on the event-loop thread and on every other thread (each its own
profiler), and sorts the self time of every function into what it is spent on: fetching
(aiohttp, asyncio, the engine, page decoding), into()'s own bookkeeping, record encoding,
compression, file writes, fsync, SQLite, asyncpg, pyarrow, handing work to threads, and
time waiting (the loop's ``epoll``, a worker's idle queue). cProfile slows Python code more
than C code and sees no time inside pyarrow's compiled functions (their callers get it),
so the shares lean towards Python; the split between the loop thread and the worker
threads, and the order of the costs, is what to read from it. The garbage collector's
CPU time is measured beside it (``gc.callbacks``, by thread and generation): cProfile has
no entry for it, it is in the self time of whichever function allocated when a collection
began, and a sink that keeps records alive as Python objects until their commit makes it
collect far more often than the stream alone does.

``--instructions`` counts, under valgrind's callgrind, the instructions each client
executes per page (runs of 1,000 and 3,000 pages, the difference), in all and by shared
object (libpython, msgspec, zlib, libsqlite3, arrow, parquet...): a measure of CPU cost
that the machine's other work cannot disturb, and that sees into C libraries.

Usage::

    python benchmarks/sinks_rate.py                      # 5 rounds, + profiles (~4 min)
    python benchmarks/sinks_rate.py --before HEAD        # before/after in the same rounds
    python benchmarks/sinks_rate.py --quick              # 2,000 pages, 1 round
    python benchmarks/sinks_rate.py --sinks jsonl,sqlite --rounds 9 --no-profile
    python benchmarks/sinks_rate.py --sinks postgres,postgres-upsert,sqlite,sqlite-upsert \
        --no-profile --out benchmarks/results/sinks_upsert.md     # upserts against appends
    python benchmarks/sinks_rate.py --instructions       # + callgrind counts (~30 min)

Writes ``results/sinks_rate.md`` (``--quick``: ``results/sinks_rate-quick.md``). Its work
folder is ``.work/sinks_rate`` (its own nginx, pages and PostgreSQL: it runs beside
``bench.py`` without sharing anything but the CPUs).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import (  # the pages bench.py serves, and its --allocator
    FIXED_ALLOCATOR,
    PER_PAGE,
    add_allocator_option,
    allocator_env,
    free_port,
    page_body,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "sinks_rate"
RESULTS = HERE / "results"
#: the environment every client runs with: glibc's mmap threshold fixed (``--allocator
#: fixed``, the default: servers.FIXED_ALLOCATOR) or as the process's history leaves it
#: (``--allocator as-is``). Set in main().
ALLOCATOR: dict[str, str] = {}

#: --sinks names: (shown as, clients.py client, target file name in a fresh folder)
SINKS: dict[str, tuple[str, str, str]] = {
    "none": ('no sink: `async for` over .records("items")', "sink-none", ""),
    "jsonl": ("JSON Lines file", "sink-jsonl", "items.jsonl"),
    "jsonl-gz": ("gzip JSON Lines file", "sink-jsonl-gz", "items.jsonl.gz"),
    "jsonl-gz1": ("gzip JSON Lines file, compresslevel=1", "sink-jsonl-gz", "items.jsonl.gz"),
    "parquet": ("Parquet folder", "sink-parquet", "items/"),
    "sqlite": ("SQLite", "sink-sqlite", "items.db"),
    "postgres": ("PostgreSQL (COPY, fsync on)", "sink-postgres", ""),
    "sqlite-upsert": ("SQLite, primary_key='id' (upsert)", "sink-sqlite", "items.db"),
    "postgres-upsert": (
        "PostgreSQL, primary_key='id' (COPY to staging, upsert)",
        "sink-postgres",
        "",
    ),
}
#: sinks that are a variant of clients.py's: its kind (to check the target with), and the
#: keyword arguments the ``_client`` role adds to that sink (parameters the code before
#: may lack: a variant runs for the code measured, not for ``--before``)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "jsonl-gz1": ("jsonl-gz", {"gzip": True, "compresslevel": 1}),
    "sqlite-upsert": ("sqlite", {"primary_key": "id"}),
    "postgres-upsert": ("postgres", {"primary_key": "id"}),
}
DEFAULT_SINKS = "jsonl,jsonl-gz,jsonl-gz1,parquet,sqlite,postgres"
GOAL = 0.85


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- profile (child)

#: where self time goes: (bucket, test on (file, function name)), first match wins
BUCKETS: list[tuple[str, Any]] = [
    ("waiting: loop epoll / idle thread", None),
    ("encode records (msgspec)", None),
    ("compress (zlib)", None),
    ("file write", None),
    ("fsync", None),
    ("SQLite calls", None),
    ("asyncpg (protocol, COPY)", None),
    ("pyarrow (build, write, merge)", None),
    ("thread hand-off (anyio, futures, locks)", None),
    ("into() and sink code (Python)", None),
    ("checkpoint", None),
    ("fetch: aiohttp, asyncio, engine, decode", None),
    ("other", None),
]


def bucket_of(file: str, name: str) -> str:
    """The bucket of a function's self time, by its file and name (cProfile's keys)."""
    low = name.lower()
    if "epoll" in low or "select.select" in low:
        return BUCKETS[0][0]
    if file == "~" and ("acquire" in low and "lock" in low):
        return BUCKETS[0][0]  # a thread waiting for work, or for the GIL-free lock
    if "msgspec" in low and ("encode" in low or "to_builtins" in low):
        return BUCKETS[1][0]
    if "zlib" in low or "gzip" in file or "compress" in low:
        return BUCKETS[2][0]
    if name in ("<built-in method posix.write>", "<built-in method posix.pwrite>"):
        return BUCKETS[3][0]
    if "fsync" in low or "fdatasync" in low:
        return BUCKETS[4][0]
    if "sqlite3" in low:
        return BUCKETS[5][0]
    if "asyncpg" in file or "asyncpg" in low:
        return BUCKETS[6][0]
    if "pyarrow" in file or "pyarrow" in low or "arrow" in low:
        return BUCKETS[7][0]
    if any(k in file for k in ("anyio", "concurrent/futures", "threading.py", "queue.py")):
        return BUCKETS[8][0]
    if "streampage/_checkpoint.py" in file:
        return BUCKETS[10][0]
    if "streampage/_into.py" in file or "streampage/sinks/" in file:
        return BUCKETS[9][0]
    if any(k in file for k in ("aiohttp", "asyncio", "streampage", "yarl", "multidict")):
        return BUCKETS[11][0]
    if "msgspec" in low or "socket" in low or file == "~":
        return BUCKETS[11][0]
    return BUCKETS[12][0]


def base_kind(kind: str) -> str:
    """The clients.py sink a --sinks name runs (its own, or that of its variant)."""
    return VARIANTS[kind][0] if kind in VARIANTS else kind


def patch_variant(kind: str) -> None:
    """Make clients.py's sink of ``kind``'s variant (``VARIANTS``) the one it runs."""
    import clients

    if kind not in VARIANTS:
        return
    base, options = VARIANTS[kind]
    make = clients.make_sink

    def variant(sink_kind: str | None, target: str, table: str) -> Any:
        if sink_kind == base:
            from streampage import sinks

            if base == "sqlite":
                return sinks.SQLite(target, table=table, **options)
            if base == "postgres":
                return sinks.Postgres(target, table=table, **options)
            return sinks.JSONLines(target, **options)
        return make(sink_kind, target, table)

    clients.make_sink = variant


def client_main(argv: list[str]) -> None:
    """``_client KIND CLIENTS_ARGS...``: clients.py's sink client, as bench.py runs it (the
    same code, timed the same way), with ``KIND``'s variant of the sink when it is one."""
    import clients

    patch_variant(argv[0])
    sys.argv = [str(HERE / "clients.py"), *argv[1:]]
    clients.main()


def profile_main(argv: list[str]) -> None:
    """``_profile KIND --url U --pages N --target T --table X --batch B --out F [--cpu K]``:
    one sink run under cProfile, every thread its own profiler; the self time of each
    function, by thread kind (the loop's or a worker's), bucketed, written to ``--out``."""
    import cProfile
    import gc
    import pstats
    import threading

    parser = argparse.ArgumentParser(prog="sinks_rate.py _profile")
    parser.add_argument("kind")
    parser.add_argument("--url", required=True)
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--target", default="")
    parser.add_argument("--table", default="items")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import clients  # benchmarks/clients.py: the very client the rate runs time

    patch_variant(args.kind)
    base = base_kind(args.kind)
    kind = None if base == "none" else base
    clients.import_sink(kind)
    threads: list[cProfile.Profile] = []
    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def profiled(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        threads.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    threading.Thread._bootstrap_inner = profiled  # type: ignore[attr-defined]
    meter = clients.Meter()
    ns = argparse.Namespace(
        client=SINKS[args.kind][1],
        url=args.url,
        pages=args.pages,
        concurrency=args.concurrency,
        target=args.target,
        table=args.table,
        batch=args.batch,
    )
    # The garbage collector's own time, by thread: cProfile has no entry for it (a
    # collection runs inside whatever allocation triggered it, in that function's self
    # time), and a sink that keeps records alive until their commit makes it collect often.
    loop_thread = threading.get_ident()
    collecting: dict[int, float] = {}
    gc_time: dict[str, list[float]] = {"loop": [0.0] * 6, "workers": [0.0] * 6}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        me = threading.get_ident()
        if phase == "start":
            collecting[me] = time.thread_time()
            return
        began = collecting.pop(me, None)
        if began is not None:
            row = gc_time["loop" if me == loop_thread else "workers"]
            row[info["generation"]] += 1  # collections of generation 0, 1, 2
            row[3 + info["generation"]] += time.thread_time() - began  # their CPU seconds

    gc.callbacks.append(on_gc)
    main_prof = cProfile.Profile()
    main_prof.enable()
    clients.run_sink(ns, meter)
    main_prof.disable()
    gc.callbacks.remove(on_gc)
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join(5)

    def buckets(profs: list[cProfile.Profile]) -> tuple[dict[str, float], list[Any]]:
        out: dict[str, float] = {}
        top: list[tuple[float, str]] = []
        if not profs:
            return out, []
        stats = pstats.Stats(profs[0])
        for p in profs[1:]:
            stats.add(p)
        for (file, line, name), row in stats.stats.items():  # type: ignore[attr-defined]
            tottime = row[2]
            b = bucket_of(file, name)
            out[b] = out.get(b, 0.0) + tottime
            where = f"{Path(file).name}:{line}({name})" if file != "~" else name
            top.append((tottime, where))
        top.sort(reverse=True)
        return out, [[round(t, 4), w] for t, w in top[:12]]

    loop, loop_top = buckets([main_prof])
    workers, workers_top = buckets(threads)
    report = {
        "kind": args.kind,
        "wall_s": meter.wall,
        "cpu_s": meter.cpu,
        "pages": meter.pages,
        "records": meter.records,
        "errors": meter.errors,
        "first_error": meter.first_error,
        "threads": len(threads),
        "loop": loop,
        "workers": workers,
        "loop_top": loop_top,
        "workers_top": workers_top,
        "gc": gc_time,
    }
    Path(args.out).write_text(json.dumps(report))


# ---------------------------------------------------------------------- pages, servers


def ensure_pages(count: int) -> None:
    folder = WORK / "pages"
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / ".ready"
    have = int(marker.read_text()) if marker.exists() else 0
    if have >= count:
        return
    log(f"writing pages {have + 1}..{count} to {folder} ...")
    for number in range(have + 1, count + 1):
        (folder / f"{number}.json").write_bytes(page_body(number))
    marker.write_text(str(count))


NGINX_CONF = """
worker_processes 1;
{affinity}
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    open_file_cache off;
    default_type application/json;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    server {{
        listen 127.0.0.1:{port} backlog=8192 reuseport;
        root {work};
        location = /items {{ try_files /pages/$arg_page.json =404; }}
        location / {{ return 404; }}
    }}
}}
"""


def start_nginx(pin: bool) -> tuple[subprocess.Popen[bytes], str, list[int]]:
    """bench.py's nginx for ``/items?page=N``: one worker (on CPU 0 when pinned), keep-alive
    for ever, no access log, sendfile. Its process, its URL and its worker's pid."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        raise SystemExit("nginx is not installed: apt-get install nginx-light (or make bench)")
    (WORK / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = WORK / "nginx.conf"
    affinity = "worker_cpu_affinity 01;" if pin else ""
    conf.write_text(NGINX_CONF.format(affinity=affinity, work=WORK, port=port))
    proc = subprocess.Popen(
        [nginx, "-p", str(WORK), "-c", str(conf), "-e", str(WORK / "nginx-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/items"
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"nginx exited at start; see {WORK / 'nginx-error.log'}")
        try:
            with urllib.request.urlopen(url + "?page=1", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"nginx did not answer {url} in 15 s")
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        return proc, url, [int(c) for c in children]
    return proc, url, [proc.pid]


@dataclass
class Pg:
    """A throwaway PostgreSQL cluster, started with ``tests/pg_server.py``'s helpers and
    recipe (initdb, trust, 127.0.0.1 and a free port, as the ``postgres`` OS user when
    root), but with PostgreSQL's durable defaults written out (fsync, synchronous_commit,
    full_page_writes on; the tests turn them off): every sink's commit is durable, so is
    this one's, as in bench.py."""

    bindir: Path
    base: Path
    port: int
    as_user: str | None
    settings: dict[str, str]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        return ["runuser", "-u", self.as_user, "--", *argv] if self.as_user else argv

    def run(self, tool: str, *args: str) -> str:
        done = subprocess.run(
            self._cmd(tool, *args),
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            start_new_session=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"PostgreSQL: {tool} {' '.join(args)[:200]}: {done.stderr.strip()}")
        return done.stdout

    def psql(self, *sql: str) -> str:
        args = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres"]
        args += ["-v", "ON_ERROR_STOP=1", "-qAtX"]
        for statement in sql:
            args += ["-c", statement]
        return self.run("psql", *args)

    def cpu_seconds(self) -> float:
        """The cluster's CPU so far: the postmaster's, its children's that exited, and its
        live children's (the backend of a run ends with its connection)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.base / "data" / "postmaster.pid").read_text().split()[0])
            pids = [pid] + [
                int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            ]
            for n, p in enumerate(pids):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                    total += sum(int(x) for x in fields[11 : 15 if n == 0 else 13])
        return total / ticks

    def stop(self) -> None:
        with contextlib.suppress(SystemExit, subprocess.SubprocessError):
            self.run("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def start_pg() -> Pg | str:
    """The cluster, or why there is none."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import pg_server
    except ImportError as exc:
        return f"PostgreSQL left out: tests/pg_server.py needs {exc.name}"
    finally:
        sys.path.pop(0)
    try:
        bindir = pg_server._bin_dir()
    except BaseException as exc:  # pytest.fail: no server binaries (make pg-server)
        return f"PostgreSQL left out: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    base = WORK / "pg"
    if (base / "data" / "postmaster.pid").exists():
        Pg(bindir, base, 0, "postgres" if os.geteuid() == 0 else None, {}).stop()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    as_user = "postgres" if os.geteuid() == 0 else None
    if as_user:
        shutil.chown(base, user=as_user, group=None)
    pg = Pg(bindir, base, pg_server._free_port(), as_user, {})
    pg.run("initdb", "-D", str(base / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
           "--no-locale", "--no-sync")  # fmt: skip
    (base / "data" / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n"
    )
    options = (
        f"-h 127.0.0.1 -p {pg.port} -k {base} -c fsync=on -c synchronous_commit=on "
        "-c full_page_writes=on -c max_connections=20"
    )
    pg.run("pg_ctl", "-D", str(base / "data"), "-l", str(base / "server.log"), "-w", "-t", "60",
           "-o", options, "start")  # fmt: skip
    names = ("server_version", "fsync", "synchronous_commit", "full_page_writes")
    values = pg.psql("SELECT " + ", ".join(f"current_setting('{n}')" for n in names))
    pg.settings = dict(zip(names, values.strip().split("|"), strict=True))
    return pg


# ---------------------------------------------------------------------- parent


@dataclass
class Code:
    """A snapshot of streampage measured: its label, where it is, what it is."""

    label: str
    src: Path
    what: str


def snapshot(rev: str | None, label: str) -> Code:
    """Copy streampage (the work tree, or ``rev`` by ``git archive``: read only) to
    ``WORK/src-LABEL``: every run of one invocation measures the same code, even while the
    work tree is edited."""
    dest = WORK / f"src-{label}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)

    def git(*argv: str) -> bytes:
        return subprocess.run(
            ["git", "-C", str(REPO), *argv], capture_output=True, check=False
        ).stdout

    if rev:
        sha = git("rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()
        if not sha:
            raise SystemExit(f"{rev}: not a commit")
        with tarfile.open(fileobj=io.BytesIO(git("archive", sha, "streampage"))) as tar:
            tar.extractall(dest, filter="data")
        what = f"git {rev} ({sha[:12]})"
    else:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(REPO / "streampage", dest / "streampage", ignore=ignore)
        what = f"working tree ({git('describe', '--always', '--dirty').decode().strip()})"
    digest = hashlib.sha256()
    for path in sorted((dest / "streampage").rglob("*.py")):
        digest.update(path.relative_to(dest).as_posix().encode() + b"\0" + path.read_bytes())
    return Code(label, dest, f"{what}, sources sha256 {digest.hexdigest()[:12]}")


@dataclass
class Target:
    kind: str
    target: str = ""
    table: str = "items"
    folder: Path | None = None
    schema: str = ""


def new_target(kind: str, serial: int, pg: Pg | None) -> Target:
    """A fresh, empty target (a folder; a schema for PostgreSQL, after a CHECKPOINT), then
    ``sync``: no earlier run's dirty pages are written during this one's fsyncs."""
    if kind == "none":
        t = Target(kind)
    elif base_kind(kind) == "postgres":
        assert pg is not None
        schema = f"bench_rate_{serial}"
        pg.psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}", "CHECKPOINT")
        t = Target(kind, pg.dsn, f"{schema}.items", schema=schema)
    else:
        folder = WORK / "sinks" / f"run-{serial:04d}-{kind}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        name = SINKS[kind][2]
        path = str(folder / name.rstrip("/")) + ("/" if name.endswith("/") else "")
        t = Target(kind, path, folder=folder)
    os.sync()
    return t


def drop_target(t: Target, pg: Pg | None) -> None:
    if t.folder is not None:
        shutil.rmtree(t.folder, ignore_errors=True)
    if t.schema and pg is not None:
        pg.psql(f"DROP SCHEMA IF EXISTS {t.schema} CASCADE")


def target_args(t: Target, batch: int) -> tuple[str, ...]:
    args: tuple[str, ...] = ("--batch", str(batch))
    if t.kind != "none":
        args += ("--target", t.target, "--table", t.table)
    return args


def run_client(
    code: Code, kind: str, t: Target, args: argparse.Namespace, env: Env
) -> dict[str, Any]:
    """clients.py's sink client in a fresh interpreter (pinned), its JSON report."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_client", kind, SINKS[kind][1]]
    cmd += ["--url", env.url]
    cmd += ["--pages", str(args.pages), "--concurrency", str(args.concurrency)]
    cmd += target_args(t, args.batch)
    if env.cpu is not None:
        cmd += ["--cpu", str(env.cpu)]
    postgres = base_kind(kind) == "postgres"
    pg_before = env.pg.cpu_seconds() if env.pg is not None and postgres else None
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=60 + args.pages / 50,
            check=False,
            env={**os.environ, **ALLOCATOR, "PYTHONPATH": str(code.src)},
        )
    except subprocess.TimeoutExpired:
        return {"failed": "timed out"}
    if done.returncode != 0:
        return {"failed": " | ".join(done.stderr.strip().splitlines()[-4:])}
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    measured = report.get("streampage_file")
    if measured is None or not Path(measured).is_relative_to(code.src):
        raise SystemExit(f"{kind} imported streampage from {measured}, not {code.src}")
    if pg_before is not None and env.pg is not None:
        report["pg_cpu_s"] = env.pg.cpu_seconds() - pg_before
    return report


def verify(t: Target, pages: int) -> dict[str, Any]:
    """Every expected record in the target, none twice: clients.py verify, a fresh process."""
    kind = base_kind(t.kind)
    cmd = [sys.executable, str(HERE / "clients.py"), "verify", kind, "--target", t.target]
    cmd += ["--table", t.table, "--pages", str(pages)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        return {"lost": pages * PER_PAGE, "extra": 0, "error": done.stderr.strip()[-300:]}
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def run_once(
    code: Code, kind: str, serial: int, args: argparse.Namespace, env: Env
) -> dict[str, Any]:
    """One timed run of one sink (fresh process, fresh target), then its target checked."""
    t = new_target(kind, serial, env.pg)
    try:
        report = run_client(code, kind, t, args, env)
        expected = args.pages * PER_PAGE
        if "failed" in report:
            report.update(records_lost=expected, records_extra=0)
        elif kind == "none":
            counted = report.get("records") or 0
            report.update(records_lost=max(0, expected - counted), records_extra=0)
        else:
            found = verify(t, args.pages)
            report.update(records_lost=found["lost"], records_extra=found["extra"])
            if found.get("error"):
                report["verify_error"] = found["error"]
    finally:
        drop_target(t, env.pg)
    report.update(kind=kind, code=code.label)
    return report


def profile_once(
    code: Code, kind: str, serial: int, args: argparse.Namespace, env: Env
) -> dict[str, Any]:
    t = new_target(kind, serial, env.pg)
    out = WORK / f"profile-{code.label}-{kind}.json"
    out.unlink(missing_ok=True)
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_profile", kind, "--url", env.url]
        cmd += ["--pages", str(args.pages), "--concurrency", str(args.concurrency)]
        cmd += ["--out", str(out), *target_args(t, args.batch)]
        if env.cpu is not None:
            cmd += ["--cpu", str(env.cpu)]
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, **ALLOCATOR, "PYTHONPATH": f"{code.src}{os.pathsep}{HERE}"},
        )
        if done.returncode != 0 or not out.exists():
            tail = " | ".join(done.stderr.strip().splitlines()[-4:])
            return {"kind": kind, "failed": tail}
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    finally:
        drop_target(t, env.pg)


@dataclass
class Env:
    url: str
    cpu: int | None
    server_pids: list[int]
    pg: Pg | None


def pps(r: dict[str, Any]) -> float:
    return float(r["pages"] / r["wall_s"]) if r.get("wall_s") else 0.0


def summarise(
    runs: list[dict[str, Any]], codes: list[Code], kinds: list[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for code in codes:
        ref = [r for r in runs if r["code"] == code.label and r["kind"] == "none"]
        ref_ok = [r for r in ref if "failed" not in r]
        ref_median = statistics.median(pps(r) for r in ref_ok) if ref_ok else None
        ref_by_round = {r["round"]: pps(r) for r in ref_ok}
        for kind in kinds:
            mine = [r for r in runs if r["code"] == code.label and r["kind"] == kind]
            ok = [r for r in mine if "failed" not in r]
            s: dict[str, Any] = {"runs": len(mine), "failed": len(mine) - len(ok)}
            if ok:
                values = [pps(r) for r in ok]
                med = statistics.median(values)
                paired = [
                    pps(r) / ref_by_round[r["round"]] for r in ok if r["round"] in ref_by_round
                ]
                s.update(
                    pps=med,
                    spread=(max(values) - min(values)) / 2 / med if med else 0.0,
                    ratio=med / ref_median if ref_median else None,
                    paired=paired,
                    cpu_us=statistics.median(r["cpu_s"] / max(r["pages"], 1) * 1e6 for r in ok),
                    lost=max(r["records_lost"] for r in mine),
                    extra=max(r["records_extra"] for r in mine),
                    pg_cpu=statistics.median(
                        r["pg_cpu_s"] / r["wall_s"] * 100 for r in ok if r.get("pg_cpu_s")
                    )
                    if any(r.get("pg_cpu_s") for r in ok)
                    else None,
                )
            out[(code.label, kind)] = s
    return out


def render_rates(
    summary: dict[tuple[str, str], dict[str, Any]], codes: list[Code], kinds: list[str]
) -> list[str]:
    lines = [
        "| sink | code | pages/s | spread | x no sink | per round: median (range) "
        "| CPU µs/page | CPU: x no sink | records lost / extra | PostgreSQL CPU | ≥ 0.85x |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for kind in kinds:
        for code in codes:
            s = summary[(code.label, kind)]
            ref = summary.get((code.label, "none"), {})
            label = SINKS[kind][0]
            if not s["runs"]:
                continue
            if "pps" not in s:
                lines.append(f"| {label} | {code.label} | failed ({s['failed']} runs) |" + " |" * 8)
                continue
            paired = s["paired"]
            per_round = (
                f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f})"
                if paired
                else "—"
            )
            goal = (
                "—"
                if kind == "none" or s["ratio"] is None
                else ("PASS" if s["ratio"] >= GOAL else "**FAIL**")
            )
            pg = "—" if s.get("pg_cpu") is None else f"{s['pg_cpu']:.0f}%"
            ratio = "—" if s["ratio"] is None else f"{s['ratio']:.2f}x"
            cpu_x = f"{ref['cpu_us'] / s['cpu_us']:.2f}x" if ref.get("cpu_us") else "—"
            lines.append(
                f"| {label} | {code.label} | {s['pps']:,.0f} | ±{s['spread'] * 100:.0f}% | "
                f"{ratio} | {per_round} | {s['cpu_us']:.0f} | {cpu_x} | "
                f"{s['lost']} / {s['extra']} | {pg} | {goal} |"
            )
    return lines


def render_profiles(profiles: list[tuple[Code, dict[str, Any]]]) -> list[str]:
    lines: list[str] = []
    names = [b for b, _ in BUCKETS]
    for code, p in profiles:
        kind = p["kind"]
        title = f"#### {SINKS[kind][0]} ({code.label})"
        if "failed" in p:
            lines += [title, "", f"profile failed: {p['failed']}", ""]
            continue
        wall = p["wall_s"]
        lines += [
            title,
            "",
            f"Under cProfile: {p['pages']:,} pages in {wall:.2f} s wall, {p['cpu_s']:.2f} s "
            f"CPU (all threads), {p['threads']} worker thread(s).",
            "",
            "| self time, s | loop thread | worker threads |",
            "|---|--:|--:|",
        ]
        for name in names:
            a, b = p["loop"].get(name, 0.0), p["workers"].get(name, 0.0)
            if a >= 0.0005 or b >= 0.0005:
                lines.append(f"| {name} | {a:.3f} | {b:.3f} |")
        busy_loop = sum(v for k, v in p["loop"].items() if k != names[0])
        busy_workers = sum(v for k, v in p["workers"].items() if k != names[0])
        lines.append(
            f"| **busy (all but waiting)** | **{busy_loop:.3f}** | **{busy_workers:.3f}** |"
        )
        sink_loop = sum(
            p["loop"].get(k, 0.0) for k in names[1:10]
        )  # encode .. into/sink code: the sink's share of the loop
        lines += [
            "",
            f"Sink work on the loop thread (encode to into()/sink code): {sink_loop:.3f} s. "
            "Top self time, loop: "
            + "; ".join(f"{w} {t:.3f}" for t, w in p["loop_top"][:6])
            + (
                ". Workers: " + "; ".join(f"{w} {t:.3f}" for t, w in p["workers_top"][:6])
                if p["workers_top"]
                else ""
            )
            + ".",
            "",
        ]
        collected = p.get("gc")
        if collected:
            said = []
            for where, (n0, n1, n2, s0, s1, s2) in collected.items():
                if n0 + n1 + n2:
                    said.append(
                        ("worker threads " if where == "workers" else "loop thread ")
                        + f"{s0 + s1 + s2:.3f} s in {n0:.0f} / {n1:.0f} / {n2:.0f} collections "
                        f"of generation 0 / 1 / 2 ({s0:.3f} / {s1:.3f} / {s2:.3f} s)"
                    )
            lines += [
                "Garbage collector (CPU time of its collections, part of the self times "
                "above, of whichever function's allocation set them off): "
                + ("; ".join(said) or "none")
                + ".",
                "",
            ]
    return lines


# ---------------------------------------------------------------------- instructions

#: the page counts an instruction count runs at: their difference is the cost per page
COUNTED = (1000, 2000)


def count_instructions(
    code: Code, kind: str, serial: int, pages: int, env: Env
) -> dict[str, Any] | None:
    """One run of ``kind`` under valgrind's callgrind (not pinned: the count does not depend
    on the core, nor on what else runs): the instructions the process executed in user
    space, in all, and by shared object (libpython, msgspec, zlib, libsqlite3, arrow...)."""
    t = new_target(kind, serial, env.pg)
    out = WORK / f"callgrind-{code.label}-{kind}-{pages}.out"
    try:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        cmd += [str(Path(__file__).resolve()), "_client", kind, SINKS[kind][1], "--url", env.url]
        cmd += ["--pages", str(pages), *target_args(t, 1000)]
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
            env={**os.environ, **ALLOCATOR, "PYTHONPATH": str(code.src)},
        )
        if done.returncode != 0 or not out.exists():
            log(f"callgrind {code.label} {kind}: {done.stderr.strip()[-300:]}")
            return None
        annotate = subprocess.run(
            ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    finally:
        drop_target(t, env.pg)
        out.unlink(missing_ok=True)
    by_object: dict[str, int] = {}
    total = 0
    for line in annotate.splitlines():
        found = re.match(r"\s*([\d,]+) \([^)]*\)\s+.*? \[(.*)\]$", line)
        if found:
            n = int(found[1].replace(",", ""))
            obj = Path(found[2]).name.split(".so")[0]
            by_object[obj] = by_object.get(obj, 0) + n
            total += n
    return {"total": total, "objects": by_object}


def instructions(
    codes: list[Code], kinds: list[str], serial: int, env: Env
) -> dict[tuple[str, str], dict[str, Any]]:
    """Instructions per page of each sink's run, from two runs (``COUNTED`` pages): the
    difference over the difference in pages, which leaves out start-up and imports."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for code in codes:
        for kind in kinds:
            if code.label == "before" and kind in VARIANTS:
                continue
            counts = []
            for pages in COUNTED:
                serial += 1
                log(f"counting instructions: {code.label} {kind} {pages} pages ...")
                counts.append(count_instructions(code, kind, serial, pages, env))
            small, big = counts
            if small is None or big is None:
                continue
            span = COUNTED[1] - COUNTED[0]
            objects = {
                obj: (big["objects"].get(obj, 0) - small["objects"].get(obj, 0)) / span
                for obj in set(small["objects"]) | set(big["objects"])
            }
            found[(code.label, kind)] = {
                "per_page": (big["total"] - small["total"]) / span,
                "objects": objects,
            }
    return found


def render_instructions(
    counts: dict[tuple[str, str], dict[str, Any]], codes: list[Code], kinds: list[str]
) -> list[str]:
    lines = [
        "### Instructions per page (callgrind)",
        "",
        f"User-space instructions of the client process per page, from runs of "
        f"{COUNTED[0]:,} and {COUNTED[1]:,} pages (the difference, so start-up and imports "
        "drop out), each under valgrind's callgrind: a count that other work on the machine "
        "does not change. *x no sink* is the no-sink count over the sink's: the rate a "
        "client bound to one core would keep, before the kernel's share (syscalls, fsync) "
        "and waits. *Added, by library*: where the sink's extra instructions are.",
        "",
        "| sink | code | instructions/page | x no sink | added, by library (per page) |",
        "|---|---|--:|--:|---|",
    ]
    for kind in kinds:
        for code in codes:
            c = counts.get((code.label, kind))
            ref = counts.get((code.label, "none"))
            if c is None or ref is None:
                continue
            added = {
                obj: v - ref["objects"].get(obj, 0.0)
                for obj, v in c["objects"].items()
                if abs(v - ref["objects"].get(obj, 0.0)) >= 1000
            }
            top = sorted(added.items(), key=lambda kv: -abs(kv[1]))[:5]
            shown = ", ".join(f"{obj} {v / 1000:+.0f}k" for obj, v in top) or "—"
            lines.append(
                f"| {SINKS[kind][0]} | {code.label} | {c['per_page'] / 1000:,.0f}k | "
                f"{ref['per_page'] / c['per_page']:.2f}x | {shown if kind != 'none' else '—'} |"
            )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--sinks",
        default=DEFAULT_SINKS,
        help=f"of {DEFAULT_SINKS} (no sink always runs)",
    )
    parser.add_argument("--before", default=None, help="also measure this git revision")
    parser.add_argument("--rev", default=None, help="measure this revision, not the work tree")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count each sink's instructions per page under valgrind (~1 min a run)",
    )
    parser.add_argument("--no-pin", action="store_true")
    add_allocator_option(parser)
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--quick", action="store_true", help="2,000 pages, 1 round")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.pages, args.rounds = min(args.pages, 2000), 1
    return args


def main() -> None:
    args = parse_args()
    ALLOCATOR.update(allocator_env(args))
    kinds = ["none", *[k for k in args.sinks.split(",") if k and k != "none"]]
    unknown = set(kinds) - set(SINKS)
    if unknown:
        raise SystemExit(f"unknown sinks {sorted(unknown)}; choose from {sorted(SINKS)}")
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    cpu = None
    if pin:
        os.sched_setaffinity(0, {0})  # this parent, nginx and PostgreSQL: the client has CPU 1
        cpu = 1
    WORK.mkdir(parents=True, exist_ok=True)
    ensure_pages(args.pages)
    codes = [snapshot(args.rev, "after" if args.before else "measured")]
    if args.before:
        codes.insert(0, snapshot(args.before, "before"))
    for code in codes:
        log(f"{code.label}: {code.what}")
    runs: list[dict[str, Any]] = []
    profiles: list[tuple[Code, dict[str, Any]]] = []
    started = time.time()
    notes: list[str] = []
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    nginx, url, server_pids = start_nginx(pin)
    pg: Pg | None = None
    try:
        if any(base_kind(k) == "postgres" for k in kinds):
            found = start_pg()
            if isinstance(found, str):
                log(found)
                notes.append(found)
                kinds = [k for k in kinds if base_kind(k) != "postgres"]
            else:
                pg = found
        env = Env(url, cpu, server_pids, pg)
        # every sink once, on 100 pages, checked: a broken sink fails in seconds
        small = argparse.Namespace(**{**vars(args), "pages": 100})
        serial = 0
        # a variant (a parameter the code before may not have) runs for the code after
        units = [
            (code, kind)
            for kind in kinds
            for code in codes
            if not (code.label == "before" and kind in VARIANTS)
        ]
        for code, kind in units:
            serial += 1
            r = run_once(code, kind, serial, small, env)
            if "failed" in r or r["records_lost"] or r["records_extra"]:
                raise SystemExit(f"preflight {code.label} {kind}: {r}")
        for rnd in range(args.rounds):
            by = rnd * len(codes) % len(units)
            for code, kind in [*units[by:], *units[:by]]:
                serial += 1
                r = run_once(code, kind, serial, args, env)
                r["round"] = rnd
                runs.append(r)
                shown = r.get("failed") or (
                    f"{pps(r):8,.0f} pages/s  cpu {r['cpu_s'] / max(r['pages'], 1) * 1e6:5.0f} "
                    f"µs/page  lost {r['records_lost']} extra {r['records_extra']}"
                )
                log(f"[round {rnd + 1}/{args.rounds}] {code.label:<8} {kind:<9} {shown}")
        if args.profile:
            for code, kind in sorted(units, key=lambda u: codes.index(u[0])):
                serial += 1
                log(f"profiling {code.label} {kind} ...")
                profiles.append((code, profile_once(code, kind, serial, args, env)))
        if args.instructions:
            if shutil.which("valgrind") is None:
                notes.append("No instruction counts: valgrind is not installed.")
            else:
                counts = instructions(codes, kinds, serial + 1000, env)
    finally:
        if pg is not None:
            pg.stop()
        nginx.terminate()
        nginx.wait(timeout=10)
    summary = summarise(runs, codes, kinds)
    from _harness import machine

    load = os.getloadavg()
    lines = [
        f"## Into each sink, against no sink: {args.pages:,} pages x {PER_PAGE} records, "
        f"concurrency {args.concurrency}, batch {args.batch:,}",
        "",
        f"`python benchmarks/sinks_rate.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"Machine: {machine()}. Client pinned to CPU 1, nginx (one worker) and PostgreSQL "
        f"to CPU 0: {pin}. Load average at the end: {load[0]:.2f} (other work shares the "
        "machine: the interleaved rounds give it to every client alike). glibc's mmap "
        + (
            "threshold fixed for every client, no sink included ("
            + ", ".join(f"{k}={v}" for k, v in FIXED_ALLOCATOR.items())
            + "): which client pays asyncio's 256 KiB read buffers as mmap/munmap is "
            "otherwise the luck of its allocation history (docs/performance.md). "
            if ALLOCATOR
            else "threshold as the environment and each client's history leave it "
            "(--allocator as-is). "
        )
        + "; ".join(f"{c.label}: {c.what}" for c in codes)
        + ".",
        "",
        f"Medians of {args.rounds} interleaved rounds; x no sink: median pages/s over the "
        "no-sink median of the same code; per round: each run over the no-sink run of its "
        "round. Pages/s counts committed pages (with a sink) over the whole run: open, every "
        "batch and commit, finish and close. CPU µs/page: the client process, all threads.",
        "",
        *render_rates(summary, codes, kinds),
        "",
        *notes,
    ]
    if pg is not None:
        st = pg.settings
        lines += [
            f"PostgreSQL {st.get('server_version')}: fsync={st.get('fsync')}, "
            f"synchronous_commit={st.get('synchronous_commit')}, "
            f"full_page_writes={st.get('full_page_writes')}; its CPU over the client's wall time.",
            "",
        ]
    if counts:
        lines += [*render_instructions(counts, codes, kinds), ""]
    if profiles:
        lines += [
            "### Where the time goes (cProfile, one run each)",
            "",
            "Self time of every function, by thread: the event loop's, and the others "
            "(the sinks' worker threads) summed. *Waiting* is the loop in epoll (nothing to "
            "do: waiting for the server, or for a commit) and idle workers; the rest is work.",
            "",
            *render_profiles(profiles),
        ]
    report = "\n".join(lines)
    print(report)
    out = args.out or RESULTS / ("sinks_rate-quick.md" if args.quick else "sinks_rate.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    (WORK / "runs.json").write_text(json.dumps({"runs": runs, "profiles": profiles}, default=str))
    log(f"wrote {out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if sys.argv[1:2] == ["_profile"]:
        profile_main(sys.argv[2:])
    elif sys.argv[1:2] == ["_client"]:
        client_main(sys.argv[2:])
    else:
        main()

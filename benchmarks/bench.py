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
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
PAGES_DIR = WORK / "pages"
CURSOR_DIR = WORK / "cursor"
RESULTS = HERE / "results"
CLIENTS_PY = HERE / "clients.py"
SLOW_SERVER_PY = HERE / "slow_server.py"
SINKS_DIR = WORK / "sinks"
PG_DIR = WORK / "pg"

PAGE_BYTES = 2048
PAGE_FORMAT = 1  # bump when page_body() changes, to regenerate the files
CURSOR_FORMAT = 1  # bump when cursor_body() changes, to regenerate the files
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")

REFERENCE = "handloop"
SECTIONS = ("throughput", "latency", "faults", "sources", "sinks")
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
#: what the sources section expects of streampage's wall time over the hand-written loop's
SOURCES_GOAL = 1.05
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
#: where the records are in a page (clients.py: RECORDS_PATH), and how many a page holds
RECORDS_PATH = "items"
PER_PAGE = 14
#: clients run against the flaky endpoint (those of them chosen with --clients)
FAULT_CLIENTS = ("streampage", "handloop", "gather")
#: of those, the ones also run fault-free in the same rounds, for "x own fault-free"
FAULT_BASELINE_CLIENTS = ("streampage",)
#: suffix of a run key for a client's fault-free run inside the faults scenario
CLEAN = "@clean"
#: the client each one is compared with "on the same loop"
SAME_LOOP_REFERENCE = {
    "streampage": "handloop",
    "streampage-uvloop": "handloop-uvloop",
    "handloop": "handloop",
    "handloop-uvloop": "handloop-uvloop",
    "gather": "handloop",
}


def label(key: str) -> str:
    """Table label of a run key: a client, or a client's fault-free run (``client@clean``)."""
    client, _, variant = key.partition("@")
    return LABELS[client] + (", no faults" if variant else "")


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- pages


def page_items(number: int) -> list[dict[str, Any]]:
    """The 14 (PER_PAGE) deterministic records of a page; record ``id`` is ``number * 100 + i``."""
    items = []
    for i in range(PER_PAGE):
        k = number * 100 + i
        items.append(
            {
                "id": k,
                "sku": f"SKU-{k:010d}",
                "name": f"Item {i} of page {number}",
                "price": (k * 7919 % 100000) / 100,
                "quantity": k * 31 % 500,
                "tags": ["alpha", "beta", "gamma"][: k % 3 + 1],
                "active": k % 2 == 0,
            }
        )
    return items


def padded(doc: dict[str, Any]) -> bytes:
    """``doc`` as compact JSON, its ``note`` field padded to make it PAGE_BYTES bytes."""
    doc["note"] = ""
    size = len(json.dumps(doc, separators=(",", ":")))
    doc["note"] = "." * max(0, PAGE_BYTES - size)
    return json.dumps(doc, separators=(",", ":")).encode()


def page_body(number: int) -> bytes:
    """A deterministic JSON page of exactly PAGE_BYTES bytes: a page number and 14 records."""
    items = page_items(number)
    return padded({"page": number, "per_page": len(items), "items": items, "note": ""})


def cursor_body(source: int, number: int, per_source: int) -> bytes:
    """Page ``number`` (1-based) of cursor source ``source``: PAGE_BYTES bytes, 14 records and
    ``next_cursor``, the next page's number as a string, or null on the source's last page."""
    items = page_items(source * 1000 + number)
    last = number >= per_source
    return padded(
        {
            "src": source,
            "items": items,
            "next_cursor": None if last else str(number + 1),
            "note": "",
        }
    )


def ensure_pages(count: int) -> None:
    """Write pages 1..count once; later runs reuse them (and add any missing ones)."""
    PAGES_DIR.mkdir(parents=True, exist_ok=True)
    marker = PAGES_DIR / ".ready.json"
    have = 0
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        info = json.loads(marker.read_text())
        if info["format"] == PAGE_FORMAT and info["bytes"] == PAGE_BYTES:
            have = int(info["count"])
    if have >= count:
        return
    log(f"writing pages {have + 1}..{count} to {PAGES_DIR} ...")
    for number in range(have + 1, count + 1):
        (PAGES_DIR / f"{number}.json").write_bytes(page_body(number))
    marker.write_text(json.dumps({"format": PAGE_FORMAT, "bytes": PAGE_BYTES, "count": count}))


def ensure_cursor_pages(sources: int, per_source: int) -> None:
    """Write ``cursor/K/N.json`` for sources K = 0..sources-1 and pages N = 1..per_source,
    once; rewritten whole when the shape changes (the last page's cursor moves with it)."""
    marker = CURSOR_DIR / ".ready.json"
    want = {"format": CURSOR_FORMAT, "bytes": PAGE_BYTES, "pages": per_source}
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        info = json.loads(marker.read_text())
        if info.pop("sources") >= sources and info == want:
            return
    log(f"writing {sources} cursor sources of {per_source} pages to {CURSOR_DIR} ...")
    shutil.rmtree(CURSOR_DIR, ignore_errors=True)
    for source in range(sources):
        folder = CURSOR_DIR / str(source)
        folder.mkdir(parents=True)
        for number in range(1, per_source + 1):
            (folder / f"{number}.json").write_bytes(cursor_body(source, number, per_source))
    marker.write_text(json.dumps({**want, "sources": sources}))


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


# ---------------------------------------------------------------------- servers


def ensure_nginx(install: bool) -> str:
    """The nginx binary, installed with apt-get when missing (root only)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found and (ECHO_MODULE.exists() or not install):
        return found
    apt = shutil.which("apt-get")
    if not install or apt is None or os.geteuid() != 0:
        if found:
            return found
        raise SystemExit(
            "nginx is not installed and cannot be installed from here; install it "
            "(Debian/Ubuntu: sudo apt-get install nginx-light) and run again"
        )
    log("installing nginx (apt-get install nginx-light) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=False, env=env)
    for packages in (["nginx-light"], ["nginx", "libnginx-mod-http-echo"], ["nginx"]):
        done = subprocess.run([apt, "install", "-y", "-qq", *packages], check=False, env=env)
        if done.returncode == 0:
            break
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        raise SystemExit("apt-get did not install nginx; install it by hand and run again")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nginx_conf(port: int, delay: float, echo: bool, pin: bool, fault_pct: float) -> str:
    """One worker (the other core is the client's), keep-alive for ever, no access log.

    ``/flaky/items`` answers ``fault_pct`` % of requests with a 503 instead of the page.
    ``split_clients`` hashes ``$request_id``, 32 random hex digits per request, so every
    request (a retry of the same page too) gets a fresh draw. ``return`` is the one thing that
    is safe inside ``if`` in a location, and nginx keeps the connection open after a 503 (it
    would close it after a 500), so a fault costs the client one round trip, no reconnect.

    ``/cursor?src=K&cursor=C`` answers ``cursor/K/C.json``; a request without ``cursor`` (a
    walk's first) gets page 1, as a real cursor API answers its first page. The maps let only
    digits into the path; anything else is a 404. ``/slow/cursor`` is the same after the delay.
    """
    slow = (
        f"location = /slow/items {{ echo_sleep {delay}; echo_exec /items $args; }}\n"
        f"        location = /slow/cursor {{ echo_sleep {delay}; echo_exec /cursor $args; }}"
        if echo
        else ""
    )
    cursor_maps = (
        'map $arg_src $cursor_src { "~^[0-9]+$" $arg_src; default "-"; }\n'
        '    map $arg_cursor $cursor_page { "" 1; "~^[0-9]+$" $arg_cursor; default "-"; }'
    )
    faults = f"""split_clients "${{request_id}}" $fault {{ {fault_pct:g}% 1; * 0; }}"""
    flaky = (
        "location = /flaky/items { if ($fault) { return 503; } "
        "try_files /pages/$arg_page.json =404; }"
    )
    return f"""
{f"load_module {ECHO_MODULE};" if echo else ""}
worker_processes 1;
{"worker_cpu_affinity 01;" if pin else ""}
daemon off;
master_process on;
pid {WORK}/nginx.pid;
error_log {WORK}/nginx-error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    # No open_file_cache: it keeps a descriptor per cached file, and 10^5 pages exceed the
    # worker's descriptor limit (requests then fail with 500). open+sendfile+close per request
    # costs the server a few µs, next to the client's ~100 µs per page.
    open_file_cache off;
    default_type application/json;
    client_body_temp_path {WORK}/tmp/body;
    proxy_temp_path {WORK}/tmp/proxy;
    fastcgi_temp_path {WORK}/tmp/fastcgi;
    uwsgi_temp_path {WORK}/tmp/uwsgi;
    scgi_temp_path {WORK}/tmp/scgi;
    {faults if fault_pct > 0 else ""}
    {cursor_maps}
    server {{
        listen 127.0.0.1:{port} backlog=8192 reuseport;
        root {WORK};
        location = /items {{ try_files /pages/$arg_page.json =404; }}
        location = /cursor {{ try_files /cursor/$cursor_src/$cursor_page.json =404; }}
        {slow}
        {flaky if fault_pct > 0 else ""}
        location / {{ return 404; }}
    }}
}}
"""


@dataclass
class Servers:
    """The page servers this run started; stopped (by pid) on exit."""

    fast_url: str = ""
    slow_url: str = ""
    slow_kind: str = ""
    flaky_url: str = ""
    #: cursor sources: ``?src=K[&cursor=C]``, undelayed and delayed
    cursor_url: str = ""
    slow_cursor_url: str = ""
    #: each process we started, with the signal that stops it gracefully
    procs: list[tuple[subprocess.Popen[bytes], signal.Signals]] = field(default_factory=list)
    #: pids whose CPU time is the server's (nginx worker, or the fallback server)
    fast_pids: list[int] = field(default_factory=list)
    slow_pids: list[int] = field(default_factory=list)
    nginx_version: str = ""
    #: the throwaway PostgreSQL cluster of the sinks section, when it runs
    pg: PgCluster | None = None

    def stop(self) -> None:
        if self.pg is not None:
            self.pg.stop()
        for proc, stop_signal in self.procs:
            if proc.poll() is None:
                proc.send_signal(stop_signal)
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited at start (code {proc.returncode}); see {WORK}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer {url} within 15 s; see {WORK}")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def start_servers(
    nginx: str, delay: float, pin: bool, slow_server: str, fault_pct: float
) -> Servers:
    """nginx for all endpoints when the echo module loads; else nginx + the aiohttp fallback
    for the delayed one. ``fault_pct`` > 0 adds the flaky endpoint."""
    servers = Servers()
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (WORK / sub).mkdir(parents=True, exist_ok=True)
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    servers.nginx_version = (version.stderr or version.stdout).strip()
    port = free_port()
    conf = WORK / "nginx.conf"
    (WORK / "nginx-error.log").write_text("")  # server_problems() reads this run's lines only
    echo = ECHO_MODULE.exists() and slow_server != "aiohttp"
    if slow_server == "nginx" and not echo:
        raise SystemExit(f"--slow-server nginx needs the echo module at {ECHO_MODULE}")
    for attempt_echo in [True, False] if echo else [False]:
        conf.write_text(nginx_conf(port, delay, attempt_echo, pin, fault_pct))
        test = subprocess.run(
            [
                nginx,
                "-t",
                "-q",
                "-p",
                str(WORK),
                "-c",
                str(conf),
                "-e",
                str(WORK / "nginx-error.log"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if test.returncode == 0:
            echo = attempt_echo
            break
        log(
            f"nginx -t failed ({'with' if attempt_echo else 'without'} echo): {test.stderr.strip()}"
        )
    else:
        raise SystemExit(f"nginx rejects the generated config {conf}")
    out = (WORK / "nginx.out").open("wb")
    proc = subprocess.Popen(
        [nginx, "-p", str(WORK), "-c", str(conf), "-e", str(WORK / "nginx-error.log")],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    servers.procs.append((proc, signal.SIGQUIT))  # nginx: graceful shutdown
    servers.fast_url = f"http://127.0.0.1:{port}/items"
    _wait_ready(servers.fast_url + "?page=1", proc, "nginx")
    servers.fast_pids = _children(proc.pid) or [proc.pid]
    servers.cursor_url = f"http://127.0.0.1:{port}/cursor"
    _wait_ready(servers.cursor_url + "?src=0", proc, "nginx (cursor endpoint)")
    if fault_pct > 0:
        servers.flaky_url = f"http://127.0.0.1:{port}/flaky/items"
        _wait_ready(servers.flaky_url + "?page=1", proc, "nginx (flaky endpoint)")
    if echo:
        servers.slow_url = f"http://127.0.0.1:{port}/slow/items"
        servers.slow_kind = f"nginx echo_sleep {delay * 1000:g} ms"
        servers.slow_pids = servers.fast_pids
        _wait_ready(servers.slow_url + "?page=1", proc, "nginx (slow endpoint)")
        servers.slow_cursor_url = f"http://127.0.0.1:{port}/slow/cursor"
        _wait_ready(servers.slow_cursor_url + "?src=0", proc, "nginx (slow cursor endpoint)")
    else:
        slow_port = free_port()
        cmd = [sys.executable, str(SLOW_SERVER_PY), "--pages-dir", str(PAGES_DIR)]
        cmd += ["--cursor-dir", str(CURSOR_DIR)]
        cmd += ["--port", str(slow_port), "--delay", str(delay)]
        if pin:
            cmd += ["--cpu", "0"]
        slow = subprocess.Popen(cmd, start_new_session=True)
        servers.procs.append((slow, signal.SIGTERM))
        servers.slow_url = f"http://127.0.0.1:{slow_port}/slow/items"
        servers.slow_kind = f"aiohttp+uvloop fallback, sleep {delay * 1000:g} ms (may limit)"
        servers.slow_pids = [slow.pid]
        _wait_ready(servers.slow_url + "?page=1", slow, "fallback slow server")
        servers.slow_cursor_url = f"http://127.0.0.1:{slow_port}/slow/cursor"
        _wait_ready(servers.slow_cursor_url + "?src=0", slow, "fallback slow server (cursor)")
    return servers


# ---------------------------------------------------------------------- PostgreSQL

#: every role may log in without a password, over the socket and over 127.0.0.1 only
PG_HBA = """\
local all all trust
host all all 127.0.0.1/32 trust
"""
#: what the cluster runs with; fsync and synchronous_commit are PostgreSQL's defaults,
#: written out because they are the point: every sink's commit is durable, so is this one's
PG_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "20",
}


def pg_bindir(install: bool) -> Path | None:
    """initdb/pg_ctl/psql: on PATH or Debian's /usr/lib/postgresql/N/bin; installed with
    apt-get (Debian's ``postgresql``, as ``make test`` does) when missing and root."""

    def find() -> Path | None:
        found = shutil.which("pg_ctl")
        if found and shutil.which("initdb"):
            return Path(found).resolve().parent
        candidates = list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if candidates:
            newest = max(candidates, key=lambda p: int(p.parent.parent.name))
            return newest.parent
        return None

    found = find()
    apt = shutil.which("apt-get")
    if found or not install or apt is None or os.geteuid() != 0:
        return found
    log("installing PostgreSQL (apt-get install postgresql) for the sinks section ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=False, env=env)
    subprocess.run(
        [apt, "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
        check=False,
        env=env,
    )
    return find()


@dataclass
class PgCluster:
    """A throwaway PostgreSQL cluster in ``.work/pg``: initdb, ``pg_ctl start`` on 127.0.0.1
    and a free port, ``pg_ctl stop`` and deleted at the end (tests/pg_server.py's recipe, with
    fsync on). The server refuses to run as root: as root, its commands run as the
    ``postgres`` OS user (``runuser``)."""

    bindir: Path
    base: Path
    port: int
    as_user: str | None
    started: bool = False
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def command(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        return ["runuser", "-u", self.as_user, "--", *argv] if self.as_user else argv

    def run(self, tool: str, *args: str, timeout: float = 120) -> str:
        argv = self.command(tool, *args)
        try:
            done = subprocess.run(
                argv,
                cwd=self.base,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
                start_new_session=True,  # Ctrl-C reaches us, not the server: stop() stops it
            )
        except (OSError, subprocess.SubprocessError) as exc:
            output = ""
            if isinstance(exc, subprocess.CalledProcessError | subprocess.TimeoutExpired):
                output = f"\n{exc.stdout or ''!s}\n{exc.stderr or ''!s}"
            server_log = self.base / "server.log"
            if server_log.exists():
                output += f"\nserver log:\n{server_log.read_text(errors='replace')[-3000:]}"
            raise SystemExit(f"PostgreSQL: `{' '.join(argv)}` failed: {exc}{output}") from None
        return done.stdout

    def psql(self, *sql: str) -> str:
        """Run statements with psql over TCP, as the ``postgres`` role (trust)."""
        args = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres"]
        args += ["-v", "ON_ERROR_STOP=1", "-qAtX"]
        for statement in sql:
            args += ["-c", statement]
        return self.run("psql", *args)

    def cpu_seconds(self) -> float:
        """CPU time of the cluster so far: the postmaster's, its live children's (backends,
        WAL writer, checkpointer...) and its children's that exited (``cutime``/``cstime``):
        a run's backend ends with its connection, and its time moves to the postmaster's."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return total / ticks + cpu_seconds(_children(pid))

    def stop(self) -> None:
        if self.started:
            self.started = False
            with contextlib.suppress(SystemExit):
                self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres(servers: Servers, install: bool) -> PgCluster | None:
    """Start the cluster for the sinks section (None: no PostgreSQL here, and none installable).
    It inherits this process's CPU (0, with nginx): the client keeps CPU 1 to itself."""
    bindir = pg_bindir(install)
    if bindir is None:
        return None
    as_user = "postgres" if os.geteuid() == 0 else None
    base = PG_DIR
    old_pid = base / "data" / "postmaster.pid"
    if old_pid.exists():  # a run killed before its cleanup: stop its server first
        stale = PgCluster(bindir, base, 0, as_user, started=True)
        stale.stop()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    if as_user:
        try:
            shutil.chown(base, user=as_user, group=None)
        except LookupError:
            raise SystemExit(
                "cannot start PostgreSQL as root without the `postgres` OS user (Debian's "
                "postgresql package creates it); or leave postgres out of --sinks"
            ) from None
    pg = PgCluster(bindir, base, free_port(), as_user)
    servers.pg = pg  # from here on, servers.stop() stops it and removes .work/pg
    # --no-sync: initdb's own final fsync of the new cluster; the server's fsync stays on
    pg.run("initdb", "-D", str(pg.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
           "--no-locale", "--no-sync")  # fmt: skip
    (pg.data / "pg_hba.conf").write_text(PG_HBA)
    options = f"-h 127.0.0.1 -p {pg.port} -k {base} " + " ".join(
        f"-c {k}={v}" for k, v in PG_SETTINGS.items()
    )
    pg.started = True  # stop it even if pg_ctl gives up waiting
    pg.run("pg_ctl", "-D", str(pg.data), "-l", str(base / "server.log"), "-w", "-t", "60",
           "-o", options, "start")  # fmt: skip
    names = ("server_version", "fsync", "synchronous_commit", "full_page_writes",
             "wal_sync_method", "shared_buffers")  # fmt: skip
    values = (
        pg.psql("SELECT " + ", ".join(f"current_setting('{n}')" for n in names)).strip().split("|")
    )
    pg.settings = dict(zip(names, values, strict=True))
    if pg.settings["fsync"] != "on" or pg.settings["synchronous_commit"] != "on":
        raise SystemExit(f"PostgreSQL did not take fsync=on, synchronous_commit=on: {pg.settings}")
    return pg


def fs_type(path: Path) -> str:
    """The file system ``path`` is on (from /proc/mounts): fsync costs depend on it."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1] if len(parts) >= 3 else ""
            inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
            if mount and inside and len(mount) > len(best):
                best, kind = mount, f"{parts[2]} ({parts[0]} on {mount})"
    return kind


def server_problems() -> list[str]:
    """nginx's error-log lines of this run (a failing server would make the numbers lie)."""
    try:
        lines = (WORK / "nginx-error.log").read_text().splitlines()
    except OSError:
        return []
    levels = ("[error]", "[crit]", "[alert]", "[emerg]")
    return [line for line in lines if any(level in line for level in levels)]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# ---------------------------------------------------------------------- running clients


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # "throughput", "latency", "faults", "sources" or "sinks"
    pages: int
    concurrency: int
    slow: bool
    clients: tuple[str, ...]
    #: clients also run against the fault-free endpoint in the same rounds (faults only)
    clean_clients: tuple[str, ...] = ()
    #: percentage of requests the server fails with a 503 (faults only)
    fault_pct: float = 0.0
    rounds: int = 3
    #: cursor sources the pages are spread over, ``pages // sources`` each (sources only)
    sources: int = 0
    #: records per commit, ``into(sink, batch=...)`` (sinks only)
    batch: int = 0

    @property
    def run_keys(self) -> tuple[str, ...]:
        """What runs each round: the clients, then the fault-free runs (``client@clean``)."""
        return (*self.clients, *(c + CLEAN for c in self.clean_clients))


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
            env={**os.environ, "PYTHONPATH": str(src)},
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


def check_page_records() -> None:
    """The sink clients take each page's records at RECORDS_PATH: the page files must have
    them there, a list of PER_PAGE records with ids."""
    doc = json.loads((PAGES_DIR / "1.json").read_bytes())
    items = doc.get(RECORDS_PATH) if isinstance(doc, dict) else None
    if not (
        isinstance(items, list)
        and len(items) == PER_PAGE
        and all(isinstance(r, dict) and "id" in r for r in items)
    ):
        raise SystemExit(
            f"preflight: {PAGES_DIR / '1.json'} has no {RECORDS_PATH!r} list of {PER_PAGE} "
            f"records with an id: the sink clients' extraction path does not fit the pages"
        )


def preflight(scenarios: list[Scenario], servers: Servers, cpu: int | None, src: Path) -> None:
    """Run every client once on a few pages (which also warms the server): fail in seconds,
    not after minutes, when a client or the code under test is broken."""
    clients = sorted(
        {c for s in scenarios if s.kind not in ("sources", "sinks") for c in s.clients},
        key=ALL_CLIENTS.index,
    )
    checks = [(c, servers.fast_url) for c in clients]
    if any(s.kind == "latency" for s in scenarios):
        checks.append((REFERENCE, servers.slow_url))
    for client, url in checks:
        report = run_client(client, url, 200, 50, cpu, [], src)
        if "failed" in report or report["lost"]:
            detail = report.get("failed") or f"{report['lost']} pages lost: {report['first_error']}"
            raise SystemExit(f"preflight: {client} against {url} failed: {detail}")
    if any(s.kind == "faults" for s in scenarios):
        # The flaky endpoint must fail some requests, with 503: the hand-written
        # loop does not retry, so at 5% it loses ~25 of 500 pages (none: P = 0.95^500 < 1e-11).
        report = run_client(REFERENCE, servers.flaky_url, 500, 50, cpu, [], src)
        first = str(report.get("first_error"))
        if "failed" in report or not report["lost"] or "HTTP 503" not in first:
            detail = report.get("failed") or f"{report['lost']} of 500 pages lost ({first})"
            raise SystemExit(f"preflight: {servers.flaky_url} does not inject 503s: {detail}")
    if any(s.kind == "sources" for s in scenarios):
        # 10 sources of 20 pages: every cursor chain followed to its end, by both clients,
        # undelayed; then the delayed endpoint once (5 sources: 100 pages in ~0.4 s).
        checks = [(c, servers.cursor_url, 10) for c in SOURCES_CLIENTS]
        checks.append((SOURCES_REFERENCE, servers.slow_cursor_url, 5))
        per_source = next(s.pages // s.sources for s in scenarios if s.kind == "sources")
        for client, url, count in checks:
            report = run_client(client, url, count * per_source, 50, cpu, [], src, sources=count)
            if "failed" in report or report["lost"] or report["errors"]:
                detail = report.get("failed") or (
                    f"{report['lost']} pages lost, {report['errors']} errors: "
                    f"{report['first_error']}"
                )
                raise SystemExit(f"preflight: {client} against {url} failed: {detail}")
    for s in scenarios:
        if s.kind != "sinks":
            continue
        # every sink once, on 100 pages: into a fresh target, then counted in it
        check_page_records()
        small = Scenario(**{**s.__dict__, "pages": 100, "rounds": 1})
        for serial, client in enumerate(s.clients, start=9000):
            report = run_sink_client(
                client, servers.fast_url, small, cpu, [], src, servers.pg, serial
            )
            if "failed" in report or report["lost"] or report["records_lost"] or report["errors"]:
                detail = report.get("failed") or (
                    f"{report['records_lost']} of {100 * PER_PAGE} records lost, "
                    f"{report.get('errors')} errors: {report.get('first_error')} "
                    f"{report.get('verify', {}).get('error', '')}"
                )
                raise SystemExit(f"preflight: {client} failed: {detail}")


def rotated(items: tuple[str, ...], by: int) -> list[str]:
    """Each round starts with a different client, so no client always runs first or last."""
    by %= len(items)
    return [*items[by:], *items[:by]]


def round_order(s: Scenario, rnd: int) -> list[str]:
    """The run keys of one round, rotated; a client's fault-free run goes right next to its
    run against the flaky server (before it in odd rounds, after in even ones), so that the
    two runs of one ratio see the same machine, whatever drifts between rounds."""
    units: list[tuple[str, ...]] = []
    for client in s.clients:
        if client in s.clean_clients:
            pair = (client, client + CLEAN)
            units.append(pair[::-1] if rnd % 2 else pair)
        else:
            units.append((client,))
    by = rnd % len(units)
    return [key for unit in [*units[by:], *units[:by]] for key in unit]


def paired_ratios(runs: list[dict[str, Any]], key: str) -> list[float]:
    """Per round, pages/s of ``key`` over pages/s of its fault-free run in the same round."""
    pps: dict[tuple[str, int], float] = {}
    for r in runs:
        if "failed" not in r and r.get("wall_s"):
            pps[(r["run"], r["round"])] = r["pages"] / r["wall_s"]
    rounds = sorted({rnd for run, rnd in pps if run == key})
    return [
        pps[(key, rnd)] / pps[(key + CLEAN, rnd)] for rnd in rounds if (key + CLEAN, rnd) in pps
    ]


def fmt_progress(s: Scenario, rnd: int, rounds: int, r: dict[str, Any]) -> str:
    head = f"[{s.key} {rnd + 1}/{rounds}] {r.get('run', r['client']):<18}"
    if "failed" in r:
        return f"{head} FAILED: {r['failed']}"
    pps = r["pages"] / r["wall_s"] if r["wall_s"] else 0
    ttfp = r["ttfp_ms"]
    return (
        f"{head} {pps:8.0f} pages/s  cpu {r['cpu_s'] / max(r['pages'], 1) * 1e6:6.1f} µs/page  "
        + (
            ""
            if s.kind == "sinks"
            else f"ttfp {ttfp if ttfp is not None else float('nan'):7.1f} ms  "
        )
        + f"rss {r['peak_rss_mb']:6.1f} MB  lost {r['lost']}  "
        f"server {r['server_cpu_s'] / r['wall_s'] * 100 if r['wall_s'] else 0:3.0f}%"
        + (f"  retries {r['retries']}" if r.get("retries") else "")
        + (f"  wall {r['wall_s']:.3f} s" if s.kind == "sources" else "")
        + (f"  errors {r['errors']}" if r.get("errors") and s.kind == "sources" else "")
        + (
            f"  records {r.get('records') or 0:,} in target {r['records_in_target']:,} "
            f"lost {r['records_lost']:,} extra {r['records_extra']:,}"
            if s.kind == "sinks"
            else ""
        )
        + (
            f"  pg {r['pg_cpu_s'] / r['wall_s'] * 100:3.0f}%"
            if r.get("pg_cpu_s") is not None and r["wall_s"]
            else ""
        )
    )


# ---------------------------------------------------------------------- summary


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of each measurement; pages lost is the worst round."""
    ok = [r for r in runs if "failed" not in r]
    out: dict[str, Any] = {"runs": len(runs), "failed_runs": len(runs) - len(ok)}
    if runs:
        out["pages"] = runs[0]["pages_expected"]
    if not ok:
        return out
    pps = [r["pages"] / r["wall_s"] for r in ok]
    walls = [r["wall_s"] for r in ok]
    ttfps = [r["ttfp_ms"] for r in ok if r["ttfp_ms"] is not None]
    out.update(
        pages_per_s=statistics.median(pps),
        pages_per_s_min=min(pps),
        pages_per_s_max=max(pps),
        wall_s=statistics.median(walls),
        wall_s_min=min(walls),
        wall_s_max=max(walls),
        errors_max=max(r.get("errors", 0) for r in ok),
        cpu_us_per_page=statistics.median(r["cpu_s"] / max(r["pages"], 1) * 1e6 for r in ok),
        ttfp_ms=statistics.median(ttfps) if ttfps else None,
        ttfp_ms_max=max(ttfps) if ttfps else None,
        peak_rss_mb=statistics.median(r["peak_rss_mb"] for r in ok),
        rss_growth_mb=statistics.median(r["peak_rss_mb"] - r["rss_before_mb"] for r in ok),
        lost_max=max(r["lost"] for r in ok),
        lost_median=statistics.median(r["lost"] for r in ok),
        retries=statistics.median(r.get("retries", 0) for r in ok),
        requests=sum(r["requests"] for r in ok if r.get("requests") is not None),
        retries_total=sum(r.get("retries", 0) for r in ok),
        server_cpu_pct=statistics.median(r["server_cpu_s"] / r["wall_s"] * 100 for r in ok),
    )
    return out


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render_table(s: Scenario, stats: dict[str, dict[str, Any]]) -> str:
    ref = stats.get(REFERENCE, {}).get("pages_per_s")
    lines = [
        f"### {s.title}",
        "",
        "| client | pages/s | spread | x hand (asyncio) | x hand (same loop) | CPU µs/page "
        "| TTFP ms | peak RSS MB | RSS growth MB | lost | server CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for client in s.clients:
        st = stats.get(client, {})
        if "pages_per_s" not in st:
            lines.append(
                f"| {LABELS[client]} | failed ({st.get('failed_runs', '?')} runs) |" + " |" * 9
            )
            continue
        pps = st["pages_per_s"]
        spread = (st["pages_per_s_max"] - st["pages_per_s_min"]) / pps * 100
        same_ref = SAME_LOOP_REFERENCE.get(client)
        same = stats.get(same_ref or "", {}).get("pages_per_s") if same_ref else None
        lines.append(
            f"| {LABELS[client]} | {pps:,.0f} | ±{spread / 2:.0f}% "
            f"| {_num(pps / ref if ref else None, 2)}x "
            f"| {_num(pps / same if same else None, 2)}{'x' if same else ''} "
            f"| {st['cpu_us_per_page']:.0f} | {_num(st['ttfp_ms'])} | {st['peak_rss_mb']:.1f} "
            f"| {st['rss_growth_mb']:.1f} | {st['lost_max']} | {st['server_cpu_pct']:.0f}% |"
        )
    return "\n".join(lines)


def render_faults_table(s: Scenario, stats: dict[str, dict[str, Any]]) -> str:
    """Pages/s with faults, over the same client's fault-free pages/s; pages lost; retries."""
    lines = [
        f"### {s.title}",
        "",
        "| client | pages/s | spread | x own fault-free | pages lost (worst round) | retries "
        "| CPU µs/page | server CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key in s.run_keys:
        st = stats.get(key, {})
        if "pages_per_s" not in st:
            lines.append(
                f"| {label(key)} | failed ({st.get('failed_runs', '?')} runs) |" + " |" * 6
            )
            continue
        pps = st["pages_per_s"]
        spread = (st["pages_per_s_max"] - st["pages_per_s_min"]) / pps * 100
        clean = stats.get(key + CLEAN, {}).get("pages_per_s") if CLEAN not in key else None
        ratio = f"{pps / clean:.2f}x" if clean else "—"
        retries = f"{st['retries']:,.0f}" if key.startswith("streampage") else "— (none)"
        lines.append(
            f"| {label(key)} | {pps:,.0f} | ±{spread / 2:.0f}% | {ratio} | {st['lost_max']:,} "
            f"| {retries} | {st['cpu_us_per_page']:.0f} | {st['server_cpu_pct']:.0f}% |"
        )
    return "\n".join(lines)


def wall_floor(s: Scenario, latency_ms: float) -> float:
    """The sources scenario's lower bound on wall time: every request takes the latency and
    at most ``concurrency`` are in flight (200 x 20 x 20 ms / 50 = 1.6 s)."""
    return s.pages * latency_ms / 1000 / s.concurrency


def paired_wall_ratios(runs: list[dict[str, Any]], key: str, ref: str) -> list[float]:
    """Per round, the wall time of ``key`` over that of ``ref`` in the same round."""
    walls = {(r["run"], r["round"]): r["wall_s"] for r in runs if "failed" not in r}
    rounds = sorted({rnd for run, rnd in walls if run == key})
    return [walls[(key, rnd)] / walls[(ref, rnd)] for rnd in rounds if (ref, rnd) in walls]


def render_sources_table(s: Scenario, stats: dict[str, dict[str, Any]], latency_ms: float) -> str:
    """Wall time, over the hand-written loop's and over the floor; pages/s; CPU; RSS; loss."""
    ref = stats.get(SOURCES_REFERENCE, {}).get("wall_s")
    floor = wall_floor(s, latency_ms)
    lines = [
        f"### {s.title}",
        "",
        "| client | wall s | spread | wall ÷ hand-written | floor ÷ wall | pages/s | CPU µs/page "
        "| TTFP ms | peak RSS MB | pages lost (worst round) | server CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for client in s.clients:
        st = stats.get(client, {})
        if "wall_s" not in st:
            lines.append(
                f"| {LABELS[client]} | failed ({st.get('failed_runs', '?')} runs) |" + " |" * 9
            )
            continue
        wall = st["wall_s"]
        spread = (st["wall_s_max"] - st["wall_s_min"]) / wall * 100
        lines.append(
            f"| {LABELS[client]} | {wall:.3f} | ±{spread / 2:.1f}% "
            f"| {_num(wall / ref if ref else None, 3)}{'x' if ref else ''} "
            f"| {floor / wall * 100:.0f}% | {st['pages_per_s']:,.0f} "
            f"| {st['cpu_us_per_page']:.0f} | {_num(st['ttfp_ms'])} | {st['peak_rss_mb']:.1f} "
            f"| {st['lost_max']:,} | {st['server_cpu_pct']:.0f}% |"
        )
    return "\n".join(lines)


def prepare_sinks(
    scenarios: list[Scenario], servers: Servers, args: argparse.Namespace
) -> tuple[list[Scenario], list[str]]:
    """Start PostgreSQL when the sinks section has its client; without a cluster (no
    PostgreSQL here, none installable), leave that client out and say so."""
    out, warnings = [], []
    for s in scenarios:
        if s.kind == "sinks" and "sink-postgres" in s.clients:
            log("starting a throwaway PostgreSQL cluster (fsync on) for the sinks section ...")
            if start_postgres(servers, install=not args.no_install) is None:
                warnings.append(
                    "**WARNING**: no PostgreSQL server binaries (initdb, pg_ctl) here, and "
                    "none could be installed (apt-get install postgresql, as root): the "
                    "PostgreSQL sink was not measured."
                )
                s = replace(s, clients=tuple(c for c in s.clients if c != "sink-postgres"))
            else:
                assert servers.pg is not None
                log(f"PostgreSQL {servers.pg.settings.get('server_version')} at {servers.pg.dsn}")
        out.append(s)
    return out, warnings


def summarise_sink(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the sinks table adds to summarise(): records/s, and records lost/extra."""
    ok = [r for r in runs if "failed" not in r and r.get("wall_s")]
    out: dict[str, Any] = {
        # a failed run counts whatever its target lacks; a run with no report, everything
        "records_lost_max": max((r.get("records_lost", 0) for r in runs), default=0),
        "records_extra_max": max((r.get("records_extra", 0) for r in runs), default=0),
        "records_in_target_min": min((r.get("records_in_target", 0) for r in runs), default=0),
    }
    if ok:
        out["records_per_s"] = statistics.median((r.get("records") or 0) / r["wall_s"] for r in ok)
        pg = [r["pg_cpu_s"] / r["wall_s"] * 100 for r in ok if r.get("pg_cpu_s") is not None]
        out["pg_cpu_pct"] = statistics.median(pg) if pg else None
    return out


def paired_pps_ratios(runs: list[dict[str, Any]], key: str, ref: str) -> list[float]:
    """Per round, pages/s of ``key`` over pages/s of ``ref`` in the same round."""
    pps = {
        (r["run"], r["round"]): r["pages"] / r["wall_s"]
        for r in runs
        if "failed" not in r and r.get("wall_s")
    }
    rounds = sorted({rnd for run, rnd in pps if run == key})
    return [pps[(key, rnd)] / pps[(ref, rnd)] for rnd in rounds if (ref, rnd) in pps]


def render_sinks_table(s: Scenario, stats: dict[str, dict[str, Any]]) -> str:
    """Pages/s and records/s into each sink, over the no-sink stream's; CPU; RSS; records."""
    ref = stats.get(SINK_REFERENCE, {}).get("pages_per_s")
    expected = s.pages * PER_PAGE
    lines = [
        f"### {s.title}",
        "",
        "| sink | pages/s | spread | x no sink | records/s | CPU µs/page | peak RSS MB "
        "| RSS growth MB | records in target (fewest) | records lost (worst round) "
        "| extra rows | server CPU | PostgreSQL CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for client in s.clients:
        st = stats.get(client, {})
        if "pages_per_s" not in st:
            lines.append(
                f"| {LABELS[client]} | failed ({st.get('failed_runs', '?')} runs) |" + " |" * 11
            )
            continue
        pps = st["pages_per_s"]
        spread = (st["pages_per_s_max"] - st["pages_per_s_min"]) / pps * 100
        in_target = f"{st['records_in_target_min']:,}"
        if client == SINK_REFERENCE:
            in_target += " (counted)"
        pg = st.get("pg_cpu_pct")
        lines.append(
            f"| {LABELS[client]} | {pps:,.0f} | ±{spread / 2:.0f}% "
            f"| {_num(pps / ref if ref else None, 2)}{'x' if ref else ''} "
            f"| {st['records_per_s']:,.0f} | {st['cpu_us_per_page']:.0f} "
            f"| {st['peak_rss_mb']:.1f} | {st['rss_growth_mb']:.1f} | {in_target} / {expected:,} "
            f"| {st['records_lost_max']:,} | {st['records_extra_max']:,} "
            f"| {st['server_cpu_pct']:.0f}% | {'—' if pg is None else f'{pg:.0f}%'} |"
        )
    return "\n".join(lines)


def observed_fault_rate(stats: dict[str, dict[str, Any]]) -> str:
    """503s over requests as the clients saw them: streampage's retries (+ pages given up)
    over its responses; the non-retrying clients' failed pages over pages asked for."""
    parts = []
    sp = stats.get("streampage", {})
    if sp.get("requests"):
        parts.append(f"{sp['retries_total'] / sp['requests'] * 100:.2f}% of streampage's requests")
    for client in ("handloop", "gather"):
        st = stats.get(client, {})
        if st.get("runs"):
            parts.append(f"{st['lost_median'] / st['pages'] * 100:.2f}% of {client}'s pages")
    return ", ".join(parts) or "—"


def evaluate_targets(
    scenarios: list[Scenario], summary: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and PASS/FAIL."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, ok: bool | None) -> None:
        out.append({"target": target, "measured": measured, "ok": ok})

    def pps(key: str, client: str) -> float | None:
        value = summary.get(key, {}).get(client, {}).get("pages_per_s")
        return float(value) if value is not None else None

    throughput = [s for s in scenarios if s.kind == "throughput"]
    for s in throughput:
        ref = pps(s.key, REFERENCE)
        for client, goal in (("streampage", 0.95), ("streampage-uvloop", 1.15)):
            value = pps(s.key, client)
            if ref and value:
                add(
                    f"{LABELS[client]} ≥ {goal}x hand (asyncio), {s.pages:,} pages",
                    f"{value / ref:.2f}x",
                    value / ref >= goal,
                )
    for s in throughput:
        for client in ("streampage", "streampage-uvloop"):
            st = summary.get(s.key, {}).get(client, {})
            if st.get("ttfp_ms") is not None:
                add(
                    f"{LABELS[client]} first page < 10 ms, {s.pages:,} pages",
                    f"median {st['ttfp_ms']:.1f} ms (worst {st['ttfp_ms_max']:.1f})",
                    st["ttfp_ms"] < 10,
                )
    if len(throughput) >= 2:
        small, big = throughput[0], throughput[-1]
        for client in ("streampage", "streampage-uvloop"):
            a = summary.get(small.key, {}).get(client, {}).get("peak_rss_mb")
            b = summary.get(big.key, {}).get(client, {}).get("peak_rss_mb")
            if a is not None and b is not None:
                add(
                    f"{LABELS[client]} peak RSS at {big.pages:,} within 2 MB of {small.pages:,}",
                    f"{b - a:+.1f} MB ({a:.1f} → {b:.1f})",
                    b - a <= 2,
                )
    for s in scenarios:
        if s.kind != "latency":
            continue
        for client in ("streampage", "streampage-uvloop"):
            ref_client = SAME_LOOP_REFERENCE[client]
            ref, value = pps(s.key, ref_client), pps(s.key, client)
            if ref and value:
                add(
                    f"{LABELS[client]} ≥ 0.95x {LABELS[ref_client]}, {s.title.split(':')[0]}",
                    f"{value / ref:.2f}x",
                    value / ref >= 0.95,
                )
    for s in scenarios:
        if s.kind != "sources":
            continue
        stats = summary.get(s.key, {})
        where = (
            f"{s.sources} sources x {s.pages // s.sources} pages, "
            f"{s.rounds} round{'s' if s.rounds != 1 else ''}"
        )
        sp, hand = stats.get("sources-streampage", {}), stats.get(SOURCES_REFERENCE, {})
        if sp.get("wall_s") and hand.get("wall_s"):
            ratio = sp["wall_s"] / hand["wall_s"]
            by_round = sp.get("x_hand_wall_by_round") or []
            paired = (
                f"; paired by round: median {statistics.median(by_round):.3f}x, "
                f"{min(by_round):.3f}-{max(by_round):.3f}x"
                if by_round
                else ""
            )
            add(
                f"streampage wall time ≤ {SOURCES_GOAL}x the hand-written per-source loop's "
                f"({where}; no fixed target in the issue, a reasonable expectation)",
                f"{ratio:.3f}x (medians {sp['wall_s']:.3f} / {hand['wall_s']:.3f} s{paired})",
                ratio <= SOURCES_GOAL,
            )
        for client in s.clients:
            st = stats.get(client, {})
            failed = st.get("failed_runs", s.rounds)
            if failed or "lost_max" not in st:
                add(f"{LABELS[client]}: all {s.pages:,} pages", f"{failed} runs failed", False)
                continue
            add(
                f"{LABELS[client]}: all {s.pages:,} pages, every round ({where})",
                f"{st['lost_max']:,} lost, {st['errors_max']:,} source errors (worst round)",
                st["lost_max"] == 0 and st["errors_max"] == 0,
            )
    for s in scenarios:
        if s.kind != "faults":
            continue
        stats = summary.get(s.key, {})
        what = f"{s.fault_pct:g}% faults"
        where = f"{s.pages:,} pages, {s.rounds} round{'s' if s.rounds != 1 else ''}"
        sp = stats.get("streampage", {})
        if "streampage" in s.clients:
            # a failed run (no report) counts as lost pages: it delivered nothing we saw
            lost = sp.get("lost_max") if not sp.get("failed_runs") else None
            add(
                f"{LABELS['streampage']} pages lost with {what} = 0 ({where}, worst round)",
                f"{lost:,}" if lost is not None else f"{sp.get('failed_runs')} runs failed",
                lost == 0,
            )
            clean = stats.get("streampage" + CLEAN, {}).get("pages_per_s")
            if sp.get("pages_per_s") and clean:
                by_round = sp.get("x_fault_free_by_round") or []
                paired = (
                    f"; paired by round: median {statistics.median(by_round):.2f}x, "
                    f"{min(by_round):.2f}-{max(by_round):.2f}x"
                    if by_round
                    else ""
                )
                add(
                    f"{LABELS['streampage']} pages/s with {what} ÷ its fault-free pages/s "
                    f"({where})",
                    f"{sp['pages_per_s'] / clean:.2f}x "
                    f"(medians {sp['pages_per_s']:,.0f} / {clean:,.0f}{paired})",
                    None,
                )
        gathered = stats.get("gather", {})
        if gathered.get("lost_max") is not None:
            add(
                f"(context) {LABELS['gather']} pages lost with {what}, no retry ({where})",
                f"{gathered['lost_median']:,.0f} (worst {gathered['lost_max']:,})",
                None,
            )
    for s in scenarios:
        if s.kind != "sinks":
            continue
        stats = summary.get(s.key, {})
        expected = s.pages * PER_PAGE
        where = f"{s.pages:,} pages, {s.rounds} round{'s' if s.rounds != 1 else ''}"
        for client in s.clients:
            st = stats.get(client, {})
            what = (
                "records counted by the `async for`"
                if client == SINK_REFERENCE
                else "records in the target, counted after the run"
            )
            failed = st.get("failed_runs", s.rounds)
            lost, extra = st.get("records_lost_max", expected), st.get("records_extra_max", 0)
            add(
                f"{LABELS[client]}: records lost = 0, none twice ({what}; {where})",
                f"{lost:,} lost, {extra:,} extra of {expected:,} (worst round)"
                + (f"; {failed} runs failed" if failed else ""),
                lost == 0 and extra == 0 and not failed,
            )
        ref = stats.get(SINK_REFERENCE, {}).get("pages_per_s")
        for client in s.clients:
            st = stats.get(client, {})
            if client == SINK_REFERENCE or not ref or not st.get("pages_per_s"):
                continue
            by_round = st.get("x_no_sink_by_round") or []
            paired = (
                f"; paired by round: median {statistics.median(by_round):.2f}x, "
                f"{min(by_round):.2f}-{max(by_round):.2f}x"
                if by_round
                else ""
            )
            add(
                f"(context) pages/s into {LABELS[client]} ÷ no sink ({where}; the issue sets "
                "no threshold)",
                f"{st['pages_per_s'] / ref:.2f}x (medians {st['pages_per_s']:,.0f} / "
                f"{ref:,.0f}{paired})",
                None,
            )
        pg = stats.get("sink-postgres", {})
        if pg.get("records_per_s"):
            add(
                f"(context) rows/s into PostgreSQL (COPY, batch {s.batch:,}, fsync on; {where})",
                f"{pg['records_per_s']:,.0f} rows/s ({pg['pages_per_s']:,.0f} pages/s)",
                None,
            )
    # What the issue says to expect of the baselines on this kind of machine (not targets).
    for s in throughput:
        ref = pps(s.key, REFERENCE)
        gather = pps(s.key, "gather")
        if ref:
            add(
                f"(context) hand (asyncio) 7,500-8,500 pages/s, {s.pages:,} pages",
                f"{ref:,.0f}",
                None,
            )
        if ref and gather:
            add(f"(context) gather ≈ 0.45x hand, {s.pages:,} pages", f"{gather / ref:.2f}x", None)
    if len(throughput) >= 2:
        small, big = throughput[0], throughput[-1]
        a = summary.get(small.key, {}).get("gather", {}).get("peak_rss_mb")
        b = summary.get(big.key, {}).get("gather", {}).get("peak_rss_mb")
        if a is not None and b is not None:
            per_page = (b - a) * 1024 / (big.pages - small.pages)
            add("(context) gather memory grows ≈ 16 KB per page", f"{per_page:.1f} KB/page", None)
    return out


def render_targets(targets: list[dict[str, Any]]) -> str:
    lines = ["### Targets", "", "| target | measured | result |", "|---|--:|:-:|"]
    for t in targets:
        result = "—" if t["ok"] is None else ("PASS" if t["ok"] else "**FAIL**")
        lines.append(f"| {t['target']} | {t['measured']} | {result} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


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


def build_scenarios(args: argparse.Namespace, clients: list[str]) -> list[Scenario]:
    sections = args.sections.split(",")
    scenarios = []
    sizes = sorted({int(x) for x in args.sizes.split(",") if x})
    for n in sizes if "throughput" in sections else []:
        chosen = [c for c in clients if c != "threads" or n <= args.threads_max_pages]
        scenarios.append(
            Scenario(
                key=f"throughput-{n}",
                title=f"{n:,} pages of ~2 KB, concurrency {args.concurrency}, no delay",
                kind="throughput",
                pages=n,
                concurrency=args.concurrency,
                slow=False,
                clients=tuple(chosen),
                rounds=args.rounds,
            )
        )
    latency = [int(x) for x in args.latency_concurrency.split(",") if x]
    for c in latency if "latency" in sections else []:
        ceiling = c / (args.latency_ms / 1000)
        scenarios.append(
            Scenario(
                key=f"latency-{c}",
                title=(
                    f"{args.latency_ms:g} ms latency, concurrency {c}: {args.latency_pages:,} "
                    f"pages (ceiling {ceiling:,.0f} pages/s)"
                ),
                kind="latency",
                pages=args.latency_pages,
                concurrency=c,
                slow=True,
                clients=tuple(
                    c2
                    for c2 in clients
                    if c2 != "threads" or args.latency_pages <= args.threads_max_pages
                ),
                rounds=args.rounds,
            )
        )
    if "faults" in sections:
        fault_clients = tuple(c for c in FAULT_CLIENTS if c in clients)
        backoff = "default" if args.retry_backoff is None else f"backoff={args.retry_backoff:g}"
        scenarios.append(
            Scenario(
                key="faults",
                title=(
                    f"{args.fault_rate:g}% transient faults (HTTP 503 at random): "
                    f"{args.fault_pages:,} pages, concurrency {args.concurrency}, no delay; "
                    f"streampage's retry policy: {backoff}"
                ),
                kind="faults",
                pages=args.fault_pages,
                concurrency=args.concurrency,
                slow=False,
                clients=fault_clients,
                clean_clients=tuple(c for c in FAULT_BASELINE_CLIENTS if c in fault_clients),
                fault_pct=args.fault_rate,
                rounds=args.fault_rounds,
            )
        )
    if "sources" in sections:
        n = args.source_count * args.source_pages
        floor = n * args.latency_ms / 1000 / args.concurrency
        scenarios.append(
            Scenario(
                key="sources",
                title=(
                    f"{args.source_count} sources x {args.source_pages} pages by cursor, "
                    f"{args.latency_ms:g} ms latency, concurrency {args.concurrency}: "
                    f"{n:,} pages (floor {floor:.2f} s)"
                ),
                kind="sources",
                pages=n,
                concurrency=args.concurrency,
                slow=True,
                clients=SOURCES_CLIENTS,
                rounds=args.source_rounds,
                sources=args.source_count,
            )
        )
    if "sinks" in sections:
        scenarios.append(
            Scenario(
                key="sinks",
                title=(
                    f"Sinks: {args.sink_pages:,} pages of ~2 KB ({PER_PAGE} records each, "
                    f"{args.sink_pages * PER_PAGE:,} records), concurrency {args.concurrency}, "
                    f"no delay; .records({RECORDS_PATH!r}).into(sink, batch={args.sink_batch:,})"
                ),
                kind="sinks",
                pages=args.sink_pages,
                concurrency=args.concurrency,
                slow=False,
                clients=tuple(SINKS[x] for x in args.sinks.split(",")),
                rounds=args.sink_rounds,
                batch=args.sink_batch,
            )
        )
    return scenarios


def machine_info(servers: Servers, pin: bool) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    dists = ["streampage", "aiohttp", "msgspec", "uvloop", "anyio", "requests", "yarl"]
    dists += ["asyncpg", "pyarrow"]  # the sinks section's
    for dist in dists:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "pinned": pin,
        "nginx": servers.nginx_version,
        "slow_server": servers.slow_kind,
        "packages": versions,
    }


@contextlib.contextmanager
def running(servers: Servers) -> Iterator[Servers]:
    """Stop the servers on any exit, including Ctrl-C and SIGTERM."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield servers
    finally:
        servers.stop()
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    args = parse_args()
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
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    client_cpu = None
    if pin:
        os.sched_setaffinity(0, {0})  # this parent mostly waits; keep it off the client's core
        client_cpu = 1
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
        return
    all_runs: list[dict[str, Any]] = []
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    sink_warnings: list[str] = []
    with running(servers):
        log(f"nginx on {servers.fast_url}; delayed endpoint: {servers.slow_kind}")
        scenarios, sink_warnings = prepare_sinks(scenarios, servers, args)
        preflight(scenarios, servers, client_cpu, src)
        serial = 0
        for s in scenarios:
            pids = servers.slow_pids if s.slow else servers.fast_pids
            runs: dict[str, list[dict[str, Any]]] = {key: [] for key in s.run_keys}
            for rnd in range(s.rounds):
                for key in round_order(s, rnd):
                    client = key.partition("@")[0]
                    if s.kind == "sinks":
                        serial += 1
                        report = run_sink_client(
                            client,
                            servers.fast_url,
                            s,
                            client_cpu,
                            pids,
                            src,
                            servers.pg,
                            serial,
                        )
                        report.update(scenario=s.key, round=rnd, run=key, url=servers.fast_url)
                        runs[key].append(report)
                        all_runs.append(report)
                        log(fmt_progress(s, rnd, s.rounds, report))
                        continue
                    if s.kind == "sources":
                        url = servers.slow_cursor_url
                    elif s.slow:
                        url = servers.slow_url
                    elif s.kind == "faults" and not key.endswith(CLEAN):
                        url = servers.flaky_url
                    else:
                        url = servers.fast_url
                    report = run_client(
                        client,
                        url,
                        s.pages,
                        s.concurrency,
                        client_cpu,
                        pids,
                        src,
                        args.retry_backoff,
                        sources=s.sources,
                    )
                    report.update(scenario=s.key, round=rnd, run=key, url=url)
                    runs[key].append(report)
                    all_runs.append(report)
                    log(fmt_progress(s, rnd, s.rounds, report))
            summary[s.key] = {key: summarise(r) for key, r in runs.items()}
            for key in s.clean_clients:
                ratios = paired_ratios(runs[key] + runs[key + CLEAN], key)
                summary[s.key][key]["x_fault_free_by_round"] = ratios
            if s.kind == "sources":
                ratios = paired_wall_ratios(
                    runs["sources-streampage"] + runs[SOURCES_REFERENCE],
                    "sources-streampage",
                    SOURCES_REFERENCE,
                )
                summary[s.key]["sources-streampage"]["x_hand_wall_by_round"] = ratios
            if s.kind == "sinks":
                for key in s.clients:
                    summary[s.key][key].update(summarise_sink(runs[key]))
                    summary[s.key][key]["x_no_sink_by_round"] = paired_pps_ratios(
                        runs[key] + runs[SINK_REFERENCE], key, SINK_REFERENCE
                    )
    targets = evaluate_targets(scenarios, summary)
    problems = server_problems()
    # Pages the non-retrying clients lose to the flaky server are the point of that scenario,
    # not a sign of a broken run; streampage losing any there is a FAIL in the targets.
    expected_loss = {"handloop", "gather"}
    lost = sum(
        r.get("lost", 0)
        for r in all_runs
        if not (r["scenario"] == "faults" and r["client"] in expected_loss)
    ) + sum("failed" in r for r in all_runs)
    # a source that delivered a page twice is an error even when no page is missing
    lost += sum(r.get("errors", 0) for r in all_runs if r["scenario"] == "sources")
    # records missing from a sink's target, or in it twice
    lost += sum(
        r.get("records_lost", 0) + r.get("records_extra", 0) + r.get("errors", 0)
        for r in all_runs
        if r["scenario"] == "sinks"
    )
    info = machine_info(servers, pin)
    info["streampage_source"] = source
    if servers.pg is not None:
        info["postgres"] = servers.pg.settings
    rounds = " or ".join(str(n) for n in sorted({s.rounds for s in scenarios}))
    notes = [
        f"Medians of {rounds} interleaved rounds (client order rotated each round); each run "
        "is a fresh process. Spread is ±half the min-max range of pages/s.",
    ]
    if any(s.kind in ("throughput", "latency") for s in scenarios):
        notes += [
            "x hand (asyncio): pages/s over the hand-written loop on asyncio's loop, same "
            "scenario. x hand (same loop): over the hand-written loop on the client's own "
            "event loop.",
            "TTFP: start of the fetch to the first decoded page in the consumer's hands (gather: "
            "when gather returns). RSS growth: peak RSS minus RSS after imports.",
        ]
    delayed = any(s.slow for s in scenarios)
    notes += [
        "Server CPU: nginx worker CPU time over the client's wall time (100% = server-bound).",
        f"Client pinned to CPU 1, server to CPU 0: {pin}."
        + (f" Delayed server: {servers.slow_kind}." if delayed else ""),
    ]
    if problems or lost:
        notes.insert(
            0,
            f"**WARNING**: {lost} pages (or sink records) lost or runs failed; nginx logged "
            f"{len(problems)} "
            f"errors (first: {problems[0] if problems else 'none'}). The numbers are suspect.",
        )
    else:
        notes.append("No page lost, no run failed, nginx logged no error.")
    faults = next((s for s in scenarios if s.kind == "faults"), None)
    if faults is not None:
        backoff = (
            "its default RetryPolicy() (5 attempts, full-jitter backoff from 0.1 s)"
            if args.retry_backoff is None
            else f"RetryPolicy(backoff={args.retry_backoff:g})"
        )
        notes.append(
            f"Faults: nginx answers {faults.fault_pct:g}% of requests to /flaky/items with a 503, "
            f"drawn per request (observed: {observed_fault_rate(summary[faults.key])}). "
            f"streampage uses {backoff} and on_error='raise'; the hand-written loop and gather "
            "do not retry, so their failed pages are lost pages (expected there, not a warning). "
            "x own fault-free: median pages/s over the same client's median against /items, "
            "run right next to it in every round. Retries: median per run."
        )
    many = next((s for s in scenarios if s.kind == "sources"), None)
    if many is not None:
        notes.append(
            f"Sources: {many.sources} cursor walks of {many.pages // many.sources} pages from "
            f"/slow/cursor?src=K&cursor=C ({args.latency_ms:g} ms each; the first request of a "
            "walk has no cursor and the server answers page 1), fetched by one streampage.stream("
            f"sources, pages=Cursor(), concurrency={many.concurrency}) and by a hand-written "
            "coroutine per source, all gathered, each request under one "
            f"asyncio.Semaphore({many.concurrency}), TCPConnector(limit={many.concurrency}). "
            "Wall times are medians (spread: ±half their min-max range); wall ÷ hand-written "
            "is the ratio of the medians; floor: "
            f"pages x latency / concurrency = {wall_floor(many, args.latency_ms):.2f} s. "
            "Pages lost counts each source's missing pages, worst round."
        )
    sinks = next((s for s in scenarios if s.kind == "sinks"), None)
    if sinks is not None:
        notes += sink_warnings
        notes.append(
            f"Sinks: pages 1..{sinks.pages:,} from /items (nginx), concurrency "
            f"{sinks.concurrency}, records at {RECORDS_PATH!r} ({PER_PAGE} a page), each run a "
            "fresh process (streampage.run, asyncio's loop) writing to a fresh target: a new "
            f"directory under {SINKS_DIR.relative_to(HERE.parent)} on {fs_type(WORK)}, or a new "
            "schema (table and checkpoints table) in PostgreSQL; the page cache is flushed "
            "(sync) before each run. The timed span runs from before the stream exists to "
            "after into() returns: the sink's open, every batch and commit (with its "
            "checkpoint), and its close (Parquet merges its parts there). x no sink: median "
            "pages/s over the median of the no-sink stream (the same .records() extraction, "
            "drained by a plain async for that counts records). Records in target: counted "
            "after each run by another fresh process reading the target back (JSON Lines "
            "lines, SQLite and PostgreSQL rows, Parquet rows); lost = expected records it "
            "lacks, extra = rows beyond them (duplicates). CPU µs/page is the client "
            "process's (sink threads included); PostgreSQL CPU: the cluster's processes, "
            "over the client's wall time."
        )
        if servers.pg is not None:
            st = servers.pg.settings
            notes.append(
                f"PostgreSQL {st.get('server_version')}: a throwaway cluster started for this "
                f"section (initdb in {PG_DIR.relative_to(HERE.parent)}"
                + (", pinned with nginx to CPU 0" if pin else "")
                + "), reached over TCP at 127.0.0.1 (as a database is from an application). "
                f"fsync={st.get('fsync')}, synchronous_commit={st.get('synchronous_commit')}, "
                f"full_page_writes={st.get('full_page_writes')}, wal_sync_method="
                f"{st.get('wal_sync_method')}, shared_buffers={st.get('shared_buffers')}: "
                "PostgreSQL's defaults, because the sinks promise durable commits (JSON Lines "
                "and Parquet fsync each commit, SQLite runs synchronous=FULL), and a "
                "PostgreSQL sink without fsync would not keep that promise, nor be comparable. "
                "CHECKPOINT before each run, so none lands in another run's span."
            )
    if any("threads" in s.clients for s in scenarios):
        notes.append(
            f"threads + requests is skipped above {args.threads_max_pages:,} pages "
            "(--threads-max-pages), to keep the default run short."
        )
    report_md = "\n\n".join(
        [
            f"## streampage benchmark: {source}",
            f"Python {info['python']}, {info['cpus']} CPUs ({info['cpu']}), {info['nginx']}, "
            f"{', '.join(f'{k} {v}' for k, v in info['packages'].items() if k != 'streampage')}",
            *(
                render_faults_table(s, summary[s.key])
                if s.kind == "faults"
                else render_sources_table(s, summary[s.key], args.latency_ms)
                if s.kind == "sources"
                else render_sinks_table(s, summary[s.key])
                if s.kind == "sinks"
                else render_table(s, summary[s.key])
                for s in scenarios
            ),
            render_targets(targets),
            "\n".join(f"- {n}" for n in notes),
        ]
    )
    print(report_md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "meta": {
            **info,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
            "page_bytes": PAGE_BYTES,
        },
        "scenarios": [s.__dict__ for s in scenarios],
        "summary": summary,
        "targets": targets,
        "server_errors": problems[:50],
        "runs": all_runs,
    }
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=list) + "\n")
    tmp.replace(args.out)
    md = args.out.with_suffix(".md")
    md_tmp = md.with_suffix(".md.tmp")
    md_tmp.write_text(report_md + "\n")
    md_tmp.replace(md)
    log(f"wrote {args.out} and {md} in {payload['meta']['duration_s']:.0f} s")


if __name__ == "__main__":
    main()

"""The servers a benchmark run measures against, and what they serve.

- the pages: ~2 KB JSON files written once to ``.work/pages/N.json`` (and the cursor
  sources' to ``.work/cursor/K/N.json``), reused by later runs;
- nginx, one worker pinned to CPU 0, serving them as ``/items?page=N``, after a delay as
  ``/slow/items`` (echo module), with random 503s as ``/flaky/items``, and as cursor walks
  (``/cursor``, ``/slow/cursor``); without the echo module, the aiohttp fallback
  (``slow_server.py``) serves the delayed endpoints;
- a throwaway PostgreSQL cluster (fsync on) for the sinks section;
- the CPU time these servers spend, and the errors nginx logs.

Every other module of ``bench.py`` builds on this one (``log`` and the paths are here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
PAGES_DIR = WORK / "pages"
CURSOR_DIR = WORK / "cursor"
SLOW_SERVER_PY = HERE / "slow_server.py"
PG_DIR = WORK / "pg"

PAGE_BYTES = 2048
PAGE_FORMAT = 1  # bump when page_body() changes, to regenerate the files
CURSOR_FORMAT = 1  # bump when cursor_body() changes, to regenerate the files
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")

#: glibc's mmap threshold, fixed for every client run by a script that compares clients
#: (their ``--allocator fixed``, the default; ``--allocator as-is`` leaves it to luck).
#: asyncio reads each response into a new 256 KiB buffer, which glibc serves with mmap,
#: mremap and munmap (~20 µs a page) unless an earlier free raised its threshold: which
#: client pays it depends on what it happened to allocate before, and it moved a client's
#: CPU a page by 9-23% between runs (docs/performance.md, "The engine": the allocator).
FIXED_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "4194304"}


def add_allocator_option(parser: argparse.ArgumentParser) -> None:
    """``--allocator fixed|as-is``, the same in every script that compares clients."""
    parser.add_argument(
        "--allocator",
        choices=("fixed", "as-is"),
        default="fixed",
        help="glibc's mmap threshold for every client: fixed (default) or left to each "
        "client's allocation history (asyncio's 256 KiB read buffers: docs/performance.md)",
    )


def allocator_env(args: argparse.Namespace) -> dict[str, str]:
    """What ``--allocator`` adds to a client's environment."""
    return dict(FIXED_ALLOCATOR) if args.allocator == "fixed" else {}


#: where the records are in a page (clients.py: RECORDS_PATH), and how many a page holds
RECORDS_PATH = "items"
PER_PAGE = 14


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


# ---------------------------------------------------------------------- what the servers did


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

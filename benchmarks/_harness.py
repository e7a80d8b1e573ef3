"""What the standalone benchmarks (auto_fanout.py, throttle.py) share: a server process that
lives as long as its parent, a snapshot of the code measured, and the machine it ran on."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the clients import this module too: aiohttp.web is the server's alone
    from aiohttp import web

REPO = Path(__file__).resolve().parent.parent


def serve_forever(app: web.Application) -> None:
    """Serve ``app`` on 127.0.0.1 (a free port, printed as ``{"port": N}`` on stdout) until
    SIGTERM, or until the parent closes our stdin (so that a dead parent leaves no server)."""

    from aiohttp import web

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        stdin = sys.stdin.fileno()

        def on_stdin() -> None:  # the parent holds our stdin open: EOF means it is gone
            if not os.read(stdin, 4096):
                loop.remove_reader(stdin)
                stop.set()

        if stat.S_ISFIFO(os.fstat(stdin).st_mode):  # run by hand: SIGTERM or Ctrl-C
            loop.add_reader(stdin, on_stdin)
        print(json.dumps({"port": port}), flush=True)
        await stop.wait()
        await runner.cleanup()

    try:  # the server is not what is measured: give it the faster loop when there is one
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve())


def stop_server(server: subprocess.Popen[str]) -> None:
    """Close its stdin (the server stops on EOF), then SIGTERM, then SIGKILL if it hangs."""
    if server.stdin is not None:
        server.stdin.close()
    for escalate in (server.terminate, server.kill):
        try:
            server.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            escalate()
    server.wait()


def snapshot_streampage(dest: Path) -> str:
    """Copy streampage/ to ``dest`` and return what was copied (git describe, sha256).

    The library is being edited while benchmarks run; every client of one invocation must
    measure the same code, so they import this copy (PYTHONPATH), not the working tree.
    """
    shutil.copytree(
        REPO / "streampage",
        dest / "streampage",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    described = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    digest = hashlib.sha256()
    for path in sorted((dest / "streampage").rglob("*.py")):
        digest.update(path.relative_to(dest).as_posix().encode() + b"\0" + path.read_bytes())
    what = f"working tree ({described or 'not a git checkout'})"
    return f"{what}, sources sha256 {digest.hexdigest()[:12]}"


def machine() -> str:
    """CPU count and model, Python, OS and the HTTP stack: what the numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = f" ({line.split(':', 1)[1].strip()})"
                break
    stack = []
    for dist in ("aiohttp", "yarl", "msgspec", "uvloop"):
        with contextlib.suppress(PackageNotFoundError):
            stack.append(f"{dist} {version(dist)}")
    return (
        f"{os.cpu_count()} CPUs{model}, Python {platform.python_version()} "
        f"({platform.system()} {platform.release()}), {', '.join(stack)}"
    )


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def write_result(output: Path, table: str) -> None:
    """Write a results file whole (a rename), and say where it went."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".tmp")
    partial.write_text(table)
    partial.replace(output)
    print(f"\nwritten to {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")


def entry(main: Callable[[], None], **roles: Callable[[list[str]], None]) -> None:
    """A benchmark script's entry point: ``script.py _serve ARGS`` (or another role the
    script runs itself as, in a subprocess) calls that role, anything else ``main``."""
    if len(sys.argv) > 1 and sys.argv[1].startswith("_") and sys.argv[1][1:] in roles:
        roles[sys.argv[1][1:]](sys.argv[2:])
    else:
        main()

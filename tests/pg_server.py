"""A real, throwaway PostgreSQL server for the tests: ``postgres_dsn`` (session-scoped).

The cluster lives in a temporary directory: initdb, then ``pg_ctl start`` on 127.0.0.1 and
a free port, stopped and deleted at the end of the session. The server refuses to run as
root, so as root every server command runs as the ``postgres`` OS user (``runuser``).
Authentication is trust for every role but ``PASSWORD_ROLE``, which needs its password
(scram-sha-256): ``postgres_password_dsn`` logs in as it, for the tests of a wrong password.

No PostgreSQL is a failure, not a skip: ``make test`` installs it (Debian's ``postgresql``).

    pytest_plugins = ["pg_server"]

    async def test_x(postgres_dsn: str) -> None: ...
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PASSWORD_ROLE", "postgres_dsn", "postgres_password_dsn"]

#: (role, password): the one role that must authenticate with a password
PASSWORD_ROLE = ("streampage_pw", "correct-horse-battery")

_HBA = f"""\
local all all trust
host all {PASSWORD_ROLE[0]} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""


def _bin_dir() -> Path:
    """The directory of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    if candidates:
        newest = max(candidates, key=lambda p: int(Path(p).parent.parent.name))
        return Path(newest).parent
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's package "
        "with `apt-get install -y postgresql` (`make test` does this)",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as(user: str | None, args: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *args] if user else args


def _run(args: list[str], *, as_user: str | None, cwd: Path, log: Path | None = None) -> None:
    command = _as(as_user, args)
    try:
        subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True, timeout=90)
    except (OSError, subprocess.SubprocessError) as exc:
        output = ""
        if isinstance(exc, subprocess.CalledProcessError | subprocess.TimeoutExpired):
            output = f"\n{exc.stdout or ''}\n{exc.stderr or ''}"
        if log is not None and log.exists():
            output += f"\nserver log:\n{log.read_text(errors='replace')[-4000:]}"
        pytest.fail(f"cannot start PostgreSQL: `{' '.join(command)}`: {exc}{output}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of a server started for the session."""
    bindir = _bin_dir()
    as_user = None
    base = Path(tempfile.mkdtemp(prefix="streampage-pg-"))
    if os.geteuid() == 0:
        as_user = "postgres"
        try:
            shutil.chown(base, user=as_user, group=None)
        except LookupError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.fail(
                "cannot start PostgreSQL as root without the `postgres` OS user "
                "(Debian's postgresql package creates it)",
                pytrace=False,
            )
    data, log = base / "data", base / "server.log"
    port = _free_port()
    started = False
    try:
        _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-locale", "--no-sync"],
            as_user=as_user,
            cwd=base,
        )  # fmt: skip
        (data / "pg_hba.conf").write_text(_HBA)
        options = (
            f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=50"
        )
        try:
            _run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                 "-o", options, "start"],
                as_user=as_user,
                cwd=base,
                log=log,
            )  # fmt: skip
        finally:
            started = True  # stop it even if pg_ctl gave up waiting
        role, password = PASSWORD_ROLE
        _run(
            [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q",
             "-c", f"CREATE ROLE {role} LOGIN PASSWORD '{password}'",
             "-c", f"CREATE DATABASE {role} OWNER {role}"],
            as_user=None,
            cwd=base,
        )  # fmt: skip
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                _as(as_user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                cwd=base,
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_password_dsn(postgres_dsn: str) -> str:
    """The DSN of ``PASSWORD_ROLE`` with its (right) password: change it to test a wrong one."""
    role, password = PASSWORD_ROLE
    server = postgres_dsn.replace("//postgres@", f"//{role}:{password}@", 1)
    return server.rsplit("/", 1)[0] + f"/{role}"  # its own database: it may create tables

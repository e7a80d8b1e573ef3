"""One writer per checkpoint: a lock held for a run's whole life, released by the system.

File-based sinks (JSON Lines, Parquet, SQLite) take an exclusive ``flock`` on a lock file in
the target's hidden state folder. The kernel releases it when the holder's file descriptor
closes, a process killed with SIGKILL included: no stale lock, and no timeout guessed. The
file holds who took it (pid, host, time), so a second run can say who is in its way.
PostgreSQL takes an advisory lock instead (see ``postgres.py``), released with the session.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from pathlib import Path

import msgspec

from .._errors import CheckpointInUseError

__all__ = ["FileLock", "holder_text", "in_use", "state_dir"]


def state_dir(target: Path) -> Path:
    """The hidden folder beside a file target (``out/.items.jsonl.streampage``), or inside
    a folder target (``out/items/.streampage``), where its journal, lock and unpublished
    parts live: readers of the output (pyarrow, DuckDB, Spark skip names starting with ``.``
    or ``_``) never see them."""
    return (
        target / ".streampage"
        if _is_folder(target)
        else target.with_name(f".{target.name}.streampage")
    )


def _is_folder(target: Path) -> bool:
    return str(target).endswith(os.sep) or target.is_dir()


def holder_text(since: str | None, pid: int | str | None, host: str | None) -> str:
    """``since T, pid P on host H``, with whichever parts are known."""
    parts = []
    if since:
        parts.append(f"since {since}")
    if pid:
        parts.append(f"pid {pid}" + (f" on host {host}" if host else ""))
    elif host:
        parts.append(f"on host {host}")
    return ", ".join(parts)


def in_use(what: str, holder: str | None) -> CheckpointInUseError:
    """The error for a checkpoint another run holds; ``what`` names it and its target."""
    who = f" ({holder})" if holder else ""
    return CheckpointInUseError(
        f"another run holds {what}{who}: wait for it to end, or stop it (its committed pages "
        "stay; a later --resume goes on from them)",
        holder=holder,
    )


class _Holder(msgspec.Struct):
    pid: int
    host: str
    since: str


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``path`` (created 0600), held until
    ``release``. ``what`` names the checkpoint in the error a second run gets."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        import fcntl  # POSIX; see the README for Windows

        if self._fd is not None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise in_use(self.what, holder) from None
        except BaseException:
            os.close(fd)
            raise
        now = _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")
        info = msgspec.json.encode(_Holder(os.getpid(), socket.gethostname(), now))
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the kernel drops the flock with the descriptor

    @staticmethod
    def _read_holder(fd: int) -> str | None:
        try:
            found = msgspec.json.decode(os.pread(fd, 4096, 0), type=_Holder)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None  # the holder is writing it this instant, or it is not ours
        return holder_text(found.since, found.pid, found.host)

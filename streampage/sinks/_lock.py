"""One writer per checkpoint: a lock held for a run's whole life, released by the system.

File-based sinks (JSON Lines, Parquet, SQLite) take an exclusive ``flock`` on a lock file in
the target's hidden state folder. The kernel releases it when the holder's file descriptor
closes, a process killed with SIGKILL included: no stale lock, and no timeout guessed. The
file holds who took it (pid, host, time), so a second run can say who is in its way.
PostgreSQL takes an advisory lock instead (see ``postgres.py``), released with the session.

A lock may be taken ``shared`` (``LOCK_SH``): any number of runs hold it at once, and
``exclusive()`` converts one of them into the only holder, when no one else holds it. The
databases use that for their tables: every run holds its table shared, and a replace (which
empties the table under every checkpoint of it) holds it exclusively.
"""

from __future__ import annotations

import contextlib
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
    """A non-blocking ``flock`` on ``path`` (created 0600), held until ``release``: exclusive,
    or with ``shared=True`` shared with other shared holders (see ``exclusive``). ``what``
    names what it guards in the error a second run gets.

    An exclusive holder writes who it is (pid, host, since) into the file, and empties it
    when it releases the lock (a killed holder's stays: its pid tells it is gone). Shared
    holders write nothing: there may be many."""

    def __init__(self, path: Path, what: str, *, shared: bool = False) -> None:
        self.path = path
        self.what = what
        self.shared = shared
        self._fd: int | None = None
        self._exclusive = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def is_exclusive(self) -> bool:
        """Held, and by this holder alone."""
        return self._fd is not None and self._exclusive

    def acquire(self) -> None:
        import fcntl  # POSIX; see the README for Windows

        if self._fd is not None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise in_use(self.what, holder) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if not self.shared:
            try:
                self._became_exclusive()
            except BaseException:
                self.release()
                raise

    def exclusive(self) -> bool:
        """Make a held shared lock exclusive, without waiting: True when this holder is
        now the only one (it stays so until ``release``), False when others hold it too.

        After False the lock is shared again, as far as the system allows: ``flock``
        drops the shared lock before it tries the exclusive one (Linux, the BSDs), so
        another holder's ``exclusive()`` may get in between and keep it from coming back.
        Then the lock is no longer held (``held`` is False): the caller, which is failing
        anyway, holds nothing it would have to give back."""
        import fcntl

        fd = self._fd
        if fd is None:
            raise RuntimeError(f"the lock {self.path} is not held: acquire() it first")
        if self._exclusive:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                self.release()
            return False
        self._became_exclusive()
        return True

    def _became_exclusive(self) -> None:
        assert self._fd is not None
        self._exclusive = True
        now = _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")
        info = msgspec.json.encode(_Holder(os.getpid(), socket.gethostname(), now))
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, info, 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        exclusive, self._exclusive = self._exclusive, False
        if fd is not None:
            try:
                if exclusive:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, 0)  # no one holds it now: who held it is no news
            finally:
                os.close(fd)  # the kernel drops the flock with the descriptor

    @staticmethod
    def holder_of(path: Path, *, alive: bool = True) -> str | None:
        """Who holds the lock file ``path`` exclusively, as it wrote (``since T, pid P on
        host H``), without touching the lock; None when the file says no one. With
        ``alive``, a holder on this host whose process is gone (killed: its lock went with
        it, its note stayed) is no one."""
        try:
            data = path.read_bytes()
            found = msgspec.json.decode(data, type=_Holder)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        if alive and found.host == socket.gethostname() and not _running(found.pid):
            return None
        return holder_text(found.since, found.pid, found.host)

    @staticmethod
    def _read_holder(fd: int) -> str | None:
        try:
            found = msgspec.json.decode(os.pread(fd, 4096, 0), type=_Holder)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None  # the holder is writing it this instant, or it is not ours
        return holder_text(found.since, found.pid, found.host)


def _running(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (it may be another program that got the
    number of a dead one: the answer errs towards naming a holder)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's (PermissionError), or not ours to ask
    return True

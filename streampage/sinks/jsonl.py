"""JSON Lines, optionally gzip, with a journal beside the file for exactly-once.

Each commit flushes and fsyncs the data, then appends ``{"name", "offset", "checkpoint"}``
to ``<path>.journal`` and fsyncs that. On open, the file is cut back to the last journalled
offset (so records written after the last commit, by a process that died, disappear) and
that entry's checkpoint is returned. A torn last journal line (a crash mid-append) is
ignored. With gzip, every commit ends a gzip member, so the file is a valid multi-member
gzip stream at every journalled offset.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import anyio.to_thread
import msgspec

from .._errors import ConfigurationError

__all__ = ["JSONLines"]


class JSONLines:
    """One JSON document a line in ``path`` (``.gz``: gzip, or ``gzip=True``)."""

    def __init__(self, path: str | os.PathLike[str], *, gzip: bool | None = None) -> None:
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.name + ".journal")
        self._gzip = self.path.suffix == ".gz" if gzip is None else gzip
        self._encoder = msgspec.json.Encoder()
        self._file: IO[bytes] | None = None
        self._pending: list[bytes] = []

    def __repr__(self) -> str:
        return f"JSONLines({str(self.path)!r})"

    async def open(self, name: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._open, name)

    def _open(self, name: str) -> bytes | None:
        offset, checkpoint = 0, None
        if self.journal.exists():
            raw = self.journal.read_bytes()
            whole = 0  # bytes of the journal made of complete entries
            for line in raw.splitlines(keepends=True):
                try:
                    if not line.endswith(b"\n"):
                        raise msgspec.DecodeError("no newline")
                    entry = msgspec.json.decode(line)
                except msgspec.DecodeError:
                    break  # a torn last line: the commit it was writing did not happen
                whole += len(line)
                if entry.get("name") == name:
                    offset, checkpoint = entry["offset"], entry["checkpoint"]
            if whole < len(raw):  # cut the torn tail, or later entries would follow it
                with open(self.journal, "r+b") as journal:
                    journal.truncate(whole)
                    os.fsync(journal.fileno())
        elif self.path.exists() and self.path.stat().st_size > 0:
            raise ConfigurationError(
                f"{self.path} exists and has no journal from an earlier run, so it cannot be "
                "resumed or safely appended to: remove it or choose another path"
            )
        else:
            # The (empty) journal exists before the first byte of data does: a run killed
            # inside its first commit leaves a file this sink recognises and cuts back to 0.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.journal.touch(mode=0o600)  # it holds checkpoints: the owner's alone
            with open(self.journal, "ab") as journal:
                os.fsync(journal.fileno())
            _fsync_dir(self.path.parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open across calls
        self._file.truncate(offset)
        self._file.seek(offset)
        return None if checkpoint is None else msgspec.json.encode(checkpoint)

    async def write(self, records: Sequence[Any]) -> None:
        encode = self._encoder.encode
        self._pending.append(b"".join(encode(r) + b"\n" for r in records))

    async def commit(self, name: str, checkpoint: bytes) -> None:
        data, self._pending = b"".join(self._pending), []
        await anyio.to_thread.run_sync(self._commit, name, data, checkpoint)

    def _commit(self, name: str, data: bytes, checkpoint: bytes) -> None:
        f = self._file
        assert f is not None, "open() first"
        if data:
            f.write(gzip.compress(data, compresslevel=6) if self._gzip else data)
        f.flush()
        os.fsync(f.fileno())
        entry = msgspec.json.encode(
            {"name": name, "offset": f.tell(), "checkpoint": msgspec.json.decode(checkpoint)}
        )
        with open(self.journal, "ab") as journal:
            journal.write(entry + b"\n")
            journal.flush()
            os.fsync(journal.fileno())

    async def close(self) -> None:
        self._pending = []  # uncommitted records are discarded, as after a crash
        if self._file is not None:
            f, self._file = self._file, None
            await anyio.to_thread.run_sync(f.close)


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (a created file survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

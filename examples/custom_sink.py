"""A sink of your own: records into a CSV file, exactly once, resumable.

The four methods of ``streampage.sinks.Sink`` are all there is to it. ``commit`` must make
the rows written since the previous commit durable *together with* the checkpoint; here the
checkpoint and the committed byte offset go into a small state file, replaced atomically
after the rows are on disk, and ``open`` cuts the CSV back to that offset. ``open`` also
takes the target's lock, so that a second run on the same file fails at once instead of
committing the same pages twice; the lock and the state file live in a hidden folder
beside the CSV (``.items.csv.streampage/``), where readers of the output do not look.

    python examples/custom_sink.py                # against the embedded demo API
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streampage
from streampage.sinks import FileLock, state_dir


class CSVSink:
    def __init__(self, path: str, columns: Sequence[str]) -> None:
        self.path = Path(path)
        hidden = state_dir(self.path)
        self.state = hidden / "state.json"
        self.lock = FileLock(hidden / "lock", what=f"the checkpoint of {self.path}")
        self.columns = list(columns)
        self._rows = io.StringIO()
        self._file: Any = None

    async def open(self, name: str) -> bytes | None:
        self.lock.acquire()  # CheckpointInUseError if another run writes this file
        state = json.loads(self.state.read_text()) if self.state.exists() else {}
        self._file = open(self.path, "a+b")  # noqa: SIM115, ASYNC230 - held across calls
        self._file.truncate(state.get("offset", 0))  # drop rows no commit covered
        if self._file.tell() == 0:
            self._file.write((",".join(self.columns) + "\n").encode())
        entry = state.get("checkpoints", {}).get(name)
        return None if entry is None else entry.encode()

    async def write(self, records: Sequence[Any]) -> None:
        writer = csv.writer(self._rows)
        for record in records:
            writer.writerow([record.get(c) for c in self.columns])

    async def commit(self, name: str, checkpoint: bytes) -> None:
        self._file.write(self._rows.getvalue().encode())
        self._rows = io.StringIO()
        self._file.flush()
        os.fsync(self._file.fileno())  # the rows are durable before the state names them
        state = json.loads(self.state.read_text()) if self.state.exists() else {}
        state["offset"] = self._file.tell()
        state.setdefault("checkpoints", {})[name] = checkpoint.decode()
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state)  # atomic: the old state or the new one, never half

    async def close(self) -> None:
        self._rows = io.StringIO()  # rows not committed are dropped, as after a crash
        if self._file is not None:
            self._file.close()
        self.lock.release()


def remove(out: Path) -> None:
    """The output and its hidden state, from an earlier run of this example."""
    out.unlink(missing_ok=True)
    shutil.rmtree(state_dir(out), ignore_errors=True)


async def main() -> None:
    from streampage.demo import serve

    server, url = await serve(items=2_000, latency=0.002)
    try:
        out = Path("items.csv")
        remove(out)
        pages = streampage.PageNumber(size=100, total_pages="total_pages")
        stats = (
            await streampage.stream(url, pages=pages)
            .records("items")
            .into(CSVSink(str(out), ["id", "name", "price"]), batch=500)
        )
        print(f"{stats.records} records from {stats.pages} pages into {out}")
    finally:
        await server.cleanup()


if __name__ == "__main__":
    streampage.run(main())

"""One shard of a sharded job: a stream over a range of pages (or one source) into a sink,
under its own checkpoint. Plain values in, a plain dict out, and no Dask: whatever drives a
pool of processes can run it (Dask here; Ray or a process pool later).

Exactly once, per shard: the shard commits with the checkpoint ``<job>/shard-NNNNNN``, the
mechanism of a single run, so a shard run again (its worker died, the job was stopped)
goes on from its last commit. A file sink writes into a hidden folder of the shard's own
(``<folder>/.streampage/shards/<job>/NNNNNN/``: the shard's parts, journal and lock), and
the shard's committed parts are published into the dataset folder by hard links, each
made whole at once, when the shard ends: a reader of the folder sees a shard's rows all
or not at all, and a shard published twice links nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .._errors import CheckpointInUseError, StreamPageError
from .._policy import PoolControl
from .._runner import run
from .._stream import stream
from ..sinks._layout import fsync_dir

__all__ = ["JobControl", "ShardSpec", "publish", "run_shard", "shard_folder"]

#: how often a running shard asks the job for its share of the rate, a pause, or a stop
POLL_SECONDS = 0.25
#: how long a shard waits for another run of itself to let go of its checkpoint
LOCK_PATIENCE = 120.0
_PART = re.compile(r"part-(\d+)\.(jsonl|jsonl\.gz|parquet)")


class JobControl(Protocol):
    """What a shard hears from its job while it runs, and tells it: the driver's side is
    Dask's (``_dask.DaskControl``); a process pool would pass its own."""

    def bind(self) -> None:
        """Called once, in the thread the shard runs in, before the shard starts."""

    def poll(self) -> tuple[float | None, float, bool]:
        """(this shard's share of the job's rate, None: no limit; the wall-clock time until
        which every shard waits, a Retry-After one of them was given; stop now)."""

    def throttled(self, seconds: float) -> None:
        """The server asked this shard to wait ``seconds``: every shard should."""

    def progress(self, shard: int, pages: int, records: int, started: bool) -> None:
        """Pages and records committed so far (``started``: the shard just began)."""


@dataclass(frozen=True, repr=False)
class ShardSpec:
    """One shard's work, in values that pickle: the job, the shard's number, what to fetch
    (``sources``: a URL, a Source or a list of them; ``pages``: its paginator), the records
    path, the sink as configured (it pickles as its configuration), the dataset folder a
    file sink publishes into, and ``stream()``'s other keyword arguments.

    Its repr names the job and the shard alone: the headers and URLs it holds may carry
    credentials, and Dask shows a task's arguments in logs and on its dashboard."""

    job: str
    shard: int
    sources: Any
    pages: Any
    records: str | None
    sink: Any
    folder: str | None
    options: dict[str, Any] = field(default_factory=dict)
    batch: int = 1000

    def __repr__(self) -> str:
        return f"ShardSpec(job={self.job!r}, shard={self.shard})"

    @property
    def checkpoint(self) -> str:
        return f"{self.job}/shard-{self.shard:06d}"


def shard_folder(folder: str | os.PathLike[str], job: str, shard: int) -> Path:
    """The hidden folder a file sink's shard writes to, inside the dataset folder."""
    return Path(folder) / ".streampage" / "shards" / job / f"{shard:06d}"


def published_name(job: str, shard: int, number: int, ext: str) -> str:
    return f"part-{job}-s{shard:06d}-{number:06d}.{ext}"


def publish(spec: ShardSpec) -> int:
    """Link the shard's committed parts into the dataset folder under names that say the
    job and shard; a part linked already is left as it is. Returns the parts linked."""
    if spec.folder is None:
        return 0
    own = shard_folder(spec.folder, spec.job, spec.shard)
    target = Path(spec.folder)
    linked = 0
    try:
        names = sorted(os.listdir(own))
    except FileNotFoundError:
        return 0
    for name in names:
        match = _PART.fullmatch(name)
        if match is None:
            continue
        public = target / published_name(spec.job, spec.shard, int(match[1]), match[2])
        with contextlib.suppress(FileExistsError):
            os.link(own / name, public)  # whole at once, and never twice
            linked += 1
    if linked:
        fsync_dir(target)
    return linked


def run_shard(spec: ShardSpec, control: JobControl | None = None) -> dict[str, Any]:
    """Run one shard to its end, on an event loop of its own (uvloop when installed), and
    say how it went: ``state`` "done", "failed" (``error`` says why: a page that failed
    after its retries, an incomplete source, the sink) or "cancelled" (the job was
    stopped); ``pages`` and ``records`` held by the shard's checkpoint, earlier attempts'
    included. A failure is returned, not raised, so that a driver does not run a shard
    again that would fail the same way; a dead process is what a driver retries."""
    if control is not None:
        control.bind()
    return run(_run_shard(spec, control))


async def _run_shard(spec: ShardSpec, control: JobControl | None) -> dict[str, Any]:
    sink = spec.sink
    if spec.folder is not None:
        own = shard_folder(spec.folder, spec.job, spec.shard)
        own.mkdir(parents=True, exist_ok=True, mode=0o700)
        sink = sink.renamed(str(own) + os.sep)
    if control is not None:
        await asyncio.to_thread(control.progress, spec.shard, 0, 0, True)
    waited = 0.0
    while True:
        try:
            return await _attempt(spec, sink, control)
        except CheckpointInUseError:
            # Another run of this shard holds its checkpoint: a worker the scheduler gave
            # up on that is still running it. Its lock goes when it ends (or dies); then
            # this run goes on from where it stopped.
            if waited >= LOCK_PATIENCE:
                raise
            await asyncio.sleep(1.0)
            waited += 1.0


async def _attempt(spec: ShardSpec, sink: Any, control: JobControl | None) -> dict[str, Any]:
    source = stream(spec.sources, pages=spec.pages, **spec.options)
    records = source.records(spec.records)
    result: dict[str, Any] = {"shard": spec.shard, "state": "done", "error": None}
    pools: list[PoolControl] = []
    if control is not None:
        source._on_control = pools.append
    work = asyncio.ensure_future(
        records.into(sink, batch=spec.batch, checkpoint=spec.checkpoint, mode="resume")
    )
    stats = source.stats
    try:
        if control is not None:
            await _follow(control, spec, work, pools, stats)
        await work
        publish(spec)
        result["completeness"] = source.completeness.status
    except asyncio.CancelledError:
        if not work.cancelled():
            raise  # the shard itself is being cancelled
        result["state"] = "cancelled"
    except CheckpointInUseError:
        raise
    except StreamPageError as exc:
        result["state"], result["error"] = "failed", str(exc)  # redacted where raised
    except OSError as exc:  # publishing: a full disk, a folder gone
        result["state"], result["error"] = "failed", f"publishing the parts: {exc}"
    finally:
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
    result["pages"] = stats.checkpoint_pages
    result["records"] = stats.checkpoint_records
    result["counted"] = stats.checkpoint_counted
    result["requests"] = stats.requests
    result["retries"] = stats.total_retries
    return result


async def _follow(
    control: JobControl,
    spec: ShardSpec,
    work: asyncio.Future[Any],
    pools: list[PoolControl],
    stats: Any,
) -> None:
    """While the shard runs: take the job's share of the rate, wait out a pause another
    shard was asked for, pass this shard's own throttling on, report progress, and stop
    the work (cooperatively: Dask cannot stop a running task) when the job says so."""
    loop = asyncio.get_running_loop()
    heard: set[int] = set()
    told = [0.0]  # the pause this shard passed on last (a burst of 429s is one)
    rate: float | None = -1.0
    while not work.done():
        share, until, stop = await asyncio.to_thread(control.poll)
        if stop:
            work.cancel()
            break
        for pool in pools:
            if id(pool) not in heard:
                heard.add(id(pool))
                pool.on_throttle = functools.partial(_tell, loop, control, told)
            if share != rate:
                pool.set_rate(share)
            wait = until - time.time()
            if wait > 0:
                pool.pause(wait)
        if pools:
            rate = share
        await asyncio.to_thread(
            control.progress, spec.shard, stats.checkpoint_pages, stats.checkpoint_records, False
        )
        await asyncio.wait([work], timeout=POLL_SECONDS)


def _tell(
    loop: asyncio.AbstractEventLoop, control: JobControl, told: list[float], seconds: float
) -> None:
    """Pass a wait the server asked for on to the job, off the event loop (a round trip),
    once for a burst of answers that ask for about the same."""
    until = time.time() + seconds
    if until > told[0] + 0.1:
        told[0] = until
        loop.run_in_executor(None, control.throttled, seconds)

"""``run_sharded``: a job's shards run as tasks on a Dask cluster, driven from here.

The driver plans the shards (``_plan``), keeps the job's checkpoint in the sink, submits
one task per unfinished shard (``_shard.run_shard``: no Dask in it) and follows them:

- **one rate for the job**: the driver gives each running shard its share of ``rate``
  (the rate over the shards that can run at once) through a Dask ``Variable``, moved as
  shards end; a shard told to wait by the server (Retry-After, a budget gone) sets the
  job's pause ``Variable``, and every shard waits it out. Both are read by each shard four
  times a second: a scheduler round trip, not one per request.
- **exactly once**: Dask runs a shard again when its worker dies; the shard goes on from
  its own checkpoint. A finished shard is marked in the job's checkpoint; a re-run skips it.
- **stopping**: Dask cannot stop a running task (``future.cancel()`` does not), so Ctrl-C
  sets ``stop`` in the control ``Variable``, and each shard cancels its own stream, which
  leaves its sink at its last commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal

from .._auto import Auto
from .._errors import ConfigurationError
from .._fingerprint import differences, fingerprint
from .._pagination import Offset, PageNumber
from .._stream import DEFAULT_MAX_PAGE_BYTES, stream
from .._walks import Cursor, LinkHeader, NextURL
from ..sinks._base import Configured
from ._job import JobProgress, JobReport, JobState, ShardReport
from ._plan import Discovery, Plan, discover, job_tally, make_plan, shard_work
from ._shard import ShardSpec, run_shard

__all__ = ["DaskControl", "run_sharded"]

logger = logging.getLogger("streampage")

_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: how long a stopped job waits for its shards to stop and say where they are
STOP_GRACE = 60.0
#: how long a shard waits for the job's control before it takes the driver for gone
POLL_PATIENCE = 10.0


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigurationError(
            "a sharded run needs Dask distributed, which is not installed: "
            "pip install 'streampage[dask]'"
        ) from None
    return distributed


class DaskControl:
    """The shards' side of the job's control, through Dask's coordination primitives on
    the scheduler (they outlive any worker): the rate share and the stop flag (set by the
    driver), the pause (set by any shard) and a queue of progress reports. It pickles as
    its name alone."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._client: Any = None
        self._last_report = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"])  # type: ignore[misc]

    def _bind(self, client: Any) -> None:
        distributed = _distributed()
        self._client = client
        self._control = distributed.Variable(f"{self.name}-control", client=client)
        self._pause = distributed.Variable(f"{self.name}-pause", client=client)
        self._queue = distributed.Queue(f"{self.name}-progress", client=client)

    # the shard's side (JobControl)

    def bind(self) -> None:
        self._bind(_distributed().get_client())

    def poll(self) -> tuple[float | None, float, bool]:
        try:
            control = self._control.get(timeout=POLL_PATIENCE)
            pause = float(self._pause.get(timeout=POLL_PATIENCE))
        except Exception:  # the driver has gone and taken its control with it: stop
            return None, 0.0, True
        return control["share"], pause, bool(control["stop"])

    def throttled(self, seconds: float) -> None:
        until = time.time() + seconds
        if until > float(self._pause.get()):
            self._pause.set(until)

    def progress(self, shard: int, pages: int, records: int, started: bool) -> None:
        now = time.monotonic()
        if started or now - self._last_report >= 1.0:
            self._last_report = now
            self._queue.put([shard, pages, records, started])

    # the driver's side

    def start(self, client: Any, share: float | None) -> None:
        self._bind(client)
        self._control.set({"share": share, "stop": False})
        self._pause.set(0.0)

    def share(self, share: float | None, stop: bool = False) -> None:
        self._control.set({"share": share, "stop": stop})

    def reports(self) -> list[list[Any]]:
        got: list[list[Any]] = self._queue.get(batch=True)
        return got

    def close(self) -> None:
        for held in (self._control, self._pause):
            with contextlib.suppress(Exception):
                held.delete()
        with contextlib.suppress(Exception):
            self._queue.close()


def run_sharded(
    url: Any,
    *,
    sink: Any,
    job: str,
    pages: Any = None,
    records: str | None = None,
    shard_size: int = 5_000,
    cluster: Any = None,
    concurrency: int = 16,
    rate: float | None = None,
    batch: int = 1000,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    secret_headers: tuple[str, ...] = (),
    timeout: Any = None,
    retry: Any = True,
    verify: bool = True,
    verify_tls: bool = True,
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
    on_progress: Callable[[JobProgress], None] | None = None,
) -> JobReport:
    """Fetch every page of ``url`` (or of many sources) into ``sink`` as shards that run
    on a Dask cluster, each a stream with its own checkpoint: every record exactly once,
    whatever worker dies, and a re-run of ``job`` goes on where it stopped.

    ``pages`` is split into shards of ``shard_size`` pages when its end is known before it
    runs: ``stop=``, or a total read from page 1 (fetched here first; ``pages=None`` is
    ``Auto()``). A list of sources is one shard per source. A walk (cursor, next URL, Link
    header), or pages whose end only fetching finds, is one shard.

    ``sink``: a dataset folder (``Parquet("out/items/")``, ``JSONLines("out/items/")``),
    where each shard's parts appear when it ends, or ``Postgres(...)``, committed per batch.
    SQLite cannot be shared by machines: it is refused.

    ``cluster``: None starts a LocalCluster of one single-threaded worker process per core
    (closed at the end), ``"local:N"`` one of N workers, ``"tcp://host:8786"`` connects to
    a scheduler, and a ``distributed.Client`` is used as it is (and left running).
    ``concurrency`` is per shard; ``rate`` (requests a second) is for the whole job, all
    workers together. The other options are ``stream()``'s, for every shard.

    Ctrl-C stops every shard at its last commit (and raises KeyboardInterrupt); run the same
    job again to go on. The report says what each shard did, and whether the job is whole.
    """
    started = time.perf_counter()
    distributed = _distributed()
    if not isinstance(job, str) or not _JOB_NAME.fullmatch(job):
        raise ConfigurationError(
            f"job={job!r} must be a name of letters, digits, '.', '_' and '-' (it names the "
            "job's checkpoint and its part files)"
        )
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigurationError(f"shard_size={shard_size!r} must be a whole number >= 1")
    if rate is not None and rate <= 0:
        raise ConfigurationError(f"rate={rate!r} must be > 0 requests a second, or None")
    folder = _dataset_folder(sink)
    pages = Auto() if pages is None else pages
    single = not _is_many(url)
    if not single:
        url = list(url)
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "params": params,
        "headers": headers,
        "secret_headers": secret_headers,
        "timeout": timeout,
        "retry": retry,
        "verify": verify,
        "verify_tls": verify_tls,
        "max_page_bytes": max_page_bytes,
    }
    checked = stream(url, pages=pages, **options)  # every option checked now, no request
    mark = fingerprint(checked._sources, records)
    report = JobReport(job)
    with start_blocking_portal() as portal:
        stored = portal.call(sink.open, job)
        try:
            state = _job_state(sink, job, stored, mark, shard_size)
            if state is not None and state.finished:
                return _finished_already(report, state, started)
            found = None
            if single and _needs_page_one(pages, state):
                found = portal.call(discover, url, pages, options, verify)
            plan, spec, at = make_plan(url, pages, shard_size, found)
            if state is None:
                state = JobState(mark, shard_size, plan)
                portal.call(sink.commit, job, state.to_json())
            else:
                _same_plan(sink, job, state.plan, plan, found)
                plan = state.plan
            shards = _shard_reports(plan, state)
            report.shards = shards
            report.planned_pages = plan.pages
            pending = [s.id for s in shards if s.state == "pending"]
            specs = []
            for i in pending:
                sources, shard_pages = shard_work(plan, i, spec, at)
                specs.append(
                    ShardSpec(job, i, sources, shard_pages, records, sink, folder, options, batch)
                )
            if specs:
                _run_on_cluster(
                    distributed,
                    cluster,
                    specs,
                    rate,
                    state,
                    report,
                    lambda: portal.call(sink.commit, job, state.to_json()),
                    on_progress,
                    started,
                )
            _conclude(report, state, plan, at, folder, job)
            portal.call(sink.commit, job, state.to_json())
        finally:
            portal.call(sink.close)
    report.elapsed = time.perf_counter() - started
    return report


def _is_many(url: Any) -> bool:
    from .._sources import Source

    return not isinstance(url, str | Source | tuple) and hasattr(url, "__iter__")


def _dataset_folder(sink: Any) -> str | None:
    """The folder a file sink publishes the shards' parts into; None for a database. A
    single file, and SQLite, cannot take writers on many machines: refused."""
    kind = type(sink).__name__
    if kind == "SQLite":
        raise ConfigurationError(
            f"{sink!r}: SQLite is one file on one machine and cannot be written by the "
            "workers of a cluster; write a dataset folder (Parquet('out/items/'), "
            "JSONLines('out/items/')) or PostgreSQL"
        )
    if not isinstance(sink, Configured):
        raise ConfigurationError(
            f"sink={sink!r}: a sharded job sends its sink to the workers as the sink's "
            "configuration, and each shard writes its own part under its own checkpoint; "
            "a sink of your own cannot do that here. Write a dataset folder "
            "(Parquet('out/items/'), JSONLines('out/items/')) or PostgreSQL"
        )
    folder = getattr(sink, "folder", None)
    path: Path | None = getattr(sink, "path", None)
    if folder is False and path is not None:
        raise ConfigurationError(
            f"{sink!r} is one file: the shards of a job each write their own parts, into a "
            f"dataset folder. Name a folder (a path ending in '/'): "
            f"{kind}({str(path.with_suffix('')) + os.sep!r})"
        )
    if folder and path is not None:
        return str(path)
    return None


def _job_state(
    sink: Any, job: str, stored: bytes | None, mark: dict[str, str], shard_size: int
) -> JobState | None:
    if stored is None:
        return None
    try:
        state = JobState.from_json(stored)
    except Exception:
        raise ConfigurationError(
            f"{sink!r} holds a checkpoint {job!r} that is not a sharded job's: name the job "
            "otherwise"
        ) from None
    changed = differences(state.fingerprint, mark)
    if state.shard_size != shard_size:
        changed.append(
            f"pages per shard (shard_size=, --shards) was {state.shard_size}, now {shard_size}"
        )
    if changed:
        raise ConfigurationError(
            f"job {job!r} in {sink!r} is another job: {'; '.join(changed)}. Run it as it "
            "was to go on with it, or give this one another job name (job=, --job)"
        )
    return state


def _needs_page_one(pages: Any, state: JobState | None) -> bool:
    """Does splitting the pages need page 1 (a total, what Auto chooses)? Not for a named
    range or walk, and not for a job whose plan kept nothing page 1 decides."""
    if isinstance(pages, Cursor | NextURL | LinkHeader):
        return False
    if isinstance(pages, PageNumber | Offset) and pages.stop is not None:
        return False
    if not isinstance(pages, Auto | PageNumber | Offset):
        return False
    return state is None or state.plan.kind in ("pages", "offsets")


def _same_plan(sink: Any, job: str, kept: Plan, now: Plan, found: Discovery | None) -> None:
    """A re-run goes on with the plan it made; what page 1 says now must number the pages
    the same way (the total may have moved: the plan holds)."""
    if kept.kind == "sources" and kept.sources != now.sources:
        raise ConfigurationError(
            f"job {job!r} in {sink!r} had {len(kept.sources)} sources, and this run names "
            "others: run it with the same sources to go on, or give this one another job name"
        )
    if found is None or kept.numbering == now.numbering:
        return
    raise ConfigurationError(
        f"job {job!r} in {sink!r} numbered its pages as {kept.numbering}, and page 1 now "
        f"gives {now.numbering}: the API changed how it paginates. Start the job over "
        "under another name"
    )


def _shard_reports(plan: Plan, state: JobState) -> list[ShardReport]:
    reports = []
    for i in range(plan.shards):
        shard = ShardReport(i)
        if plan.kind in ("pages", "offsets"):
            shard.first, shard.last = plan.ranges[i]
        elif plan.kind == "sources":
            shard.source = plan.sources[i]
        if i in state.done:
            shard.state = "skipped"
        reports.append(shard)
    return reports


def _finished_already(report: JobReport, state: JobState, started: float) -> JobReport:
    report.shards = _shard_reports(state.plan, state)
    report.skipped = len(report.shards)
    report.complete = True
    report.completeness = "complete already (every shard finished in an earlier run)"
    report.pages, report.records = state.pages, state.records
    report.planned_pages = state.plan.pages
    report.elapsed = time.perf_counter() - started
    return report


def _connect(distributed: Any, cluster: Any) -> tuple[Any, Callable[[], None]]:
    """A Client for ``cluster``, and how to let go of it (a cluster started here is closed,
    a Client passed in is left running)."""
    if isinstance(cluster, distributed.Client):
        return cluster, lambda: None
    if cluster is None or (isinstance(cluster, str) and cluster.startswith("local")):
        workers = os.cpu_count() or 1
        if isinstance(cluster, str) and cluster != "local":
            count = cluster.partition(":")[2]
            if not count.isdigit() or int(count) < 1:
                raise ConfigurationError(
                    f"cluster={cluster!r}: say 'local:N' for a local cluster of N workers"
                )
            workers = int(count)
        local = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        client = distributed.Client(local)

        def close() -> None:
            client.close()
            local.close()

        return client, close
    if isinstance(cluster, str) and "://" in cluster:
        client = distributed.Client(cluster)
        return client, client.close
    raise ConfigurationError(
        f"cluster={cluster!r}: pass None (a local cluster), 'local:N', a scheduler address "
        "('tcp://host:8786') or a distributed.Client"
    )


def _run_on_cluster(
    distributed: Any,
    cluster: Any,
    specs: list[ShardSpec],
    rate: float | None,
    state: JobState,
    report: JobReport,
    save: Callable[[], None],
    on_progress: Callable[[JobProgress], None] | None,
    started: float,
) -> None:
    client, let_go = _connect(distributed, cluster)
    control = DaskControl(f"streampage-{specs[0].job}-{uuid.uuid4().hex[:8]}")
    try:
        slots = max(1, sum(client.nthreads().values()))

        def share_now(left: int) -> float | None:
            return None if rate is None else rate / max(1, min(slots, left))

        share = share_now(len(specs))
        control.start(client, share)
        futures = {}
        for spec in specs:
            first = ShardSpec(
                spec.job,
                spec.shard,
                spec.sources,
                spec.pages,
                spec.records,
                spec.sink,
                spec.folder,
                {**spec.options, "rate": share},
                spec.batch,
            )
            key = f"streampage-shard-{spec.shard:06d}-{control.name}"
            futures[client.submit(run_shard, first, control, key=key, pure=False)] = spec.shard
        follow = _Follow(report, state, futures, on_progress, started)
        try:
            while follow.running:
                changed = follow.step(distributed, control)
                if changed:
                    save()
                now = share_now(len(follow.running))
                if now != share:
                    share = now
                    control.share(share)
                time.sleep(0.2)
        except KeyboardInterrupt:
            logger.warning("stopping every shard at its last commit (Ctrl-C)")
            control.share(share, stop=True)
            deadline = time.monotonic() + STOP_GRACE
            while follow.running and time.monotonic() < deadline:
                if follow.step(distributed, control):
                    save()
                time.sleep(0.1)
            for future in follow.running:
                future.cancel()
            raise
        except BaseException:
            # the driver failed (its sink, a callback): the shards stop at their last
            # commit rather than run on unwatched (a rerun goes on from there)
            with contextlib.suppress(Exception):
                control.share(share, stop=True)
            for future in follow.running:
                future.cancel()
            raise
    finally:
        control.close()
        let_go()


class _Follow:
    """The driver's view of the shards while they run."""

    def __init__(
        self,
        report: JobReport,
        state: JobState,
        futures: dict[Any, int],
        on_progress: Callable[[JobProgress], None] | None,
        started: float,
    ) -> None:
        self.report = report
        self.state = state
        self.running = dict(futures)
        self.on_progress = on_progress
        self.started = started
        self.live: dict[int, tuple[int, int]] = {}
        self.last_progress = 0.0

    def step(self, distributed: Any, control: DaskControl) -> bool:
        """Take in the shards that ended and the progress reports; True when the job's
        checkpoint has news (a shard finished)."""
        shards = self.report.shards
        for shard, pages, records, began in control.reports():
            if began:
                shards[shard].attempts += 1
            self.live[shard] = (pages, records)
        changed = False
        for future in [f for f in self.running if f.done()]:
            i = self.running.pop(future)
            shard = shards[i]
            self.live.pop(i, None)
            if future.status == "error":
                shard.state = "failed"
                shard.error = _task_error(future)
                continue
            if future.cancelled():
                shard.state = "cancelled"
                continue
            result = future.result()
            shard.state = result["state"]
            shard.pages, shard.records = result["pages"], result["records"]
            shard.error = result["error"]
            shard.attempts = max(shard.attempts, 1)
            if shard.state == "done":
                self.state.mark_done(i, result["pages"], result["records"], result["counted"])
                changed = True
        now = time.monotonic()
        if self.on_progress is not None and (now - self.last_progress >= 0.5 or changed):
            self.last_progress = now
            self.on_progress(self.progress())
        return changed

    def progress(self) -> JobProgress:
        state = self.state
        live_pages = sum(p for p, _ in self.live.values())
        live_records = sum(r for _, r in self.live.values())
        shards = self.report.shards
        return JobProgress(
            shards=len(shards),
            shards_done=len(state.done),
            pages=state.pages + live_pages,
            records=state.records + live_records,
            planned_pages=state.plan.pages,
            elapsed=time.perf_counter() - self.started,
            running=len(self.running),
            failed=sum(1 for s in shards if s.state == "failed"),
        )


def _task_error(future: Any) -> str:
    error = future.exception()
    name = type(error).__name__
    if name == "KilledWorker":
        return (
            "the workers running it died more often than the cluster allows "
            "(distributed.scheduler.allowed-failures); run the job again to go on from its "
            "checkpoint"
        )
    return f"{name}: {error}"


def _conclude(
    report: JobReport, state: JobState, plan: Plan, url: Any, folder: str | None, job: str
) -> None:
    """The job's verdict: every shard finished, and the whole held to page 1's totals."""
    shards = report.shards
    report.skipped = sum(1 for s in shards if s.state == "skipped")
    report.pages, report.records = state.pages, state.records
    for shard in shards:
        if shard.state in ("failed", "cancelled", "pending"):
            where = f"pages {shard.first}-{shard.last}" if shard.first is not None else ""
            where = where or (f"source {shard.source}" if shard.source else "the walk")
            why = shard.error or ("stopped" if shard.state != "pending" else "not started")
            report.failures.append(f"shard {shard.id} ({where}) {shard.state}: {why}")
    if report.failures:
        report.completeness = "incomplete: " + f"{len(report.failures)} shard(s) did not finish"
        return
    planned = plan.pages
    if planned is not None and state.pages != planned:
        report.failures.append(
            f"the shards hold {state.pages:,} pages, and the plan has {planned:,}: pages "
            "went missing between shards"
        )
        report.completeness = "incomplete"
        return
    if plan.totals and not isinstance(url, list):
        error, note, checked = job_tally(plan, url, state.pages, state.counted).verdict()
        if error is not None:
            report.failures.append(str(error))
            report.completeness = "incomplete"
            return
        report.completeness = ("verified: " if checked else "") + note
    elif plan.kind in ("pages", "offsets"):
        report.completeness = f"every page of the plan: {state.pages:,} pages"
    else:
        report.completeness = "every shard checked its own source"
    report.complete = True
    state.finished = True
    if folder is not None:
        shutil.rmtree(Path(folder) / ".streampage" / "shards" / job, ignore_errors=True)

"""A sharded job's own checkpoint, and what a run of it reports.

The job's state is committed to its sink under the checkpoint named by the job, like a
shard's: what the job is (its fingerprint), the plan, the shards finished and what they
hold. A re-run reads it, skips the finished shards and checks that it is the same job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from .._checkpoint import RangeSet
from ._plan import Plan

__all__ = ["JobReport", "JobState", "ShardReport"]


class _Stored(msgspec.Struct, omit_defaults=True, tag_field="job", tag=1):
    fingerprint: dict[str, str]
    shard_size: int
    plan: Plan
    done: list[list[int]] = []
    pages: int = 0
    records: int = 0
    counted: int | None = 0
    finished: bool = False


class JobState:
    """The job's checkpoint, in memory: its plan, and its finished shards with the sums of
    what they hold (each shard is added once, when it is marked finished)."""

    def __init__(self, fingerprint: dict[str, str], shard_size: int, plan: Plan) -> None:
        self.fingerprint = fingerprint
        self.shard_size = shard_size
        self.plan = plan
        self.done = RangeSet()
        self.pages = 0
        self.records = 0
        self.counted: int | None = 0
        self.finished = False

    @classmethod
    def from_json(cls, data: bytes) -> JobState:
        stored = msgspec.json.decode(data, type=_Stored)
        state = cls(stored.fingerprint, stored.shard_size, stored.plan)
        state.done = RangeSet(stored.done)
        state.pages, state.records, state.counted = stored.pages, stored.records, stored.counted
        state.finished = stored.finished
        return state

    def to_json(self) -> bytes:
        stored = _Stored(
            self.fingerprint,
            self.shard_size,
            self.plan,
            self.done.ranges(),
            self.pages,
            self.records,
            self.counted,
            self.finished,
        )
        return msgspec.json.encode(stored)

    def mark_done(self, shard: int, pages: int, records: int, counted: int | None) -> None:
        if shard in self.done:
            return
        self.done.add(shard)
        self.pages += pages
        self.records += records
        self.counted = None if self.counted is None or counted is None else self.counted + counted


@dataclass
class ShardReport:
    """One shard: ``id`` (from 0), its pages ``first``..``last`` (a range shard) or its
    ``source`` id, the ``pages`` and ``records`` its checkpoint holds, the times it was
    started in this run (``attempts``: more than one when a worker died under it), and its
    ``state``: "done", "skipped" (finished by an earlier run), "failed", "cancelled" or
    "pending" (never started: the job was stopped first). ``error`` says why it failed."""

    id: int
    first: int | None = None
    last: int | None = None
    source: str | None = None
    pages: int = 0
    records: int = 0
    attempts: int = 0
    state: str = "pending"
    error: str | None = None


@dataclass
class JobReport:
    """What a run of a sharded job did. ``complete`` is true when every shard finished and
    the job as a whole agrees with the totals page 1 reported (``completeness`` says what
    was checked); ``failures`` says, one line each, what did not."""

    job: str
    complete: bool = False
    completeness: str = ""
    failures: list[str] = field(default_factory=list)
    shards: list[ShardReport] = field(default_factory=list)
    pages: int = 0
    records: int = 0
    planned_pages: int | None = None
    skipped: int = 0
    elapsed: float = 0.0


@dataclass
class JobProgress:
    """Where a running job is, given to ``on_progress`` about twice a second."""

    shards: int
    shards_done: int
    pages: int
    records: int
    planned_pages: int | None
    elapsed: float
    running: int = 0
    failed: int = 0

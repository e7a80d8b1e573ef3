"""How a job's pages split into shards, decided once, on the driver, and kept in the job's
checkpoint: a re-run goes on with the plan it made, whatever the API's total says now.

- a page-number or offset range whose end is known (``stop``, or a total read from page 1,
  fetched here first) splits into ranges of ``shard_size`` pages;
- many sources split by source, one shard each;
- a walk (cursor, next URL, Link header), or pages whose end only looking finds, is one
  shard: its next page is known only from the one before.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import msgspec
from yarl import URL

from .._auto import Auto
from .._checkpoint import source_id
from .._errors import ConfigurationError
from .._evidence import Reported, Tally, own_totals
from .._fingerprint import numbering
from .._page import Page
from .._pagination import Offset, PageNumber
from .._sources import Source, as_source
from .._stream import stream

__all__ = ["Discovery", "Plan", "discover", "make_plan", "shard_work"]

logger = logging.getLogger("streampage")


class Plan(msgspec.Struct, omit_defaults=True):
    """A job's shards, as its checkpoint keeps them.

    ``kind``: "pages" (ranges of page numbers, as the API numbers them), "offsets" (ranges
    of pages of ``step`` records from ``start``), "sources" (one shard per source, by id)
    or "walk" (one shard, the whole run). ``numbering`` is the paginator's, as checkpoints
    compare it (what pages=auto chose, for Auto); ``totals`` what page 1 reported, checked
    against the whole job at its end."""

    kind: str
    ranges: list[tuple[int, int]] = []
    sources: list[str] = []
    numbering: str = ""
    start: int = 0
    step: int = 0
    end: int | None = None  # offsets: the offset past the last record
    totals: list[tuple[str, str, int, int]] = []

    @property
    def shards(self) -> int:
        if self.kind in ("pages", "offsets"):
            return len(self.ranges)
        return len(self.sources) if self.kind == "sources" else 1

    @property
    def pages(self) -> int | None:
        """The pages the plan covers, when it knows (ranges)."""
        if self.kind in ("pages", "offsets"):
            return sum(last - first + 1 for first, last in self.ranges)
        return None


@dataclass
class Discovery:
    """What page 1 told: the paginator that numbers the pages (the one pages=auto chose),
    the URL it runs over, the first page number and the last, and the page itself."""

    spec: Any
    url: Any
    first: int
    last: int | None
    page: Page[Any] | None
    step: int | None = None
    totals: dict[str, Reported] = field(default_factory=dict)


async def discover(url: Any, pages: Any, options: dict[str, Any], verify: bool) -> Discovery:
    """Fetch page 1 alone (the end it reports splits the rest), and see what it says."""
    first_stream = stream(url, pages=pages, **{**options, "concurrency": 1})
    page: Page[Any] | None = None
    async with first_stream:
        async for got in first_stream:
            page = got
            break
    run: Any = first_stream._sources._single_run
    spec, at, first = pages, url, getattr(pages, "start", 1)
    if isinstance(pages, Auto):
        spec, at, first = run.spec, run.spec_url, 1
    elif isinstance(pages, Offset):
        first = 1
    last = getattr(run, "last", None) if run is not None else None
    step = None
    if isinstance(spec, Offset) and run is not None:
        step = run._run._offsets[1] if isinstance(pages, Auto) else run._offsets[1]
    found = Discovery(spec, at, first, last, page, step)
    if page is not None and spec is not None:
        tally = Tally(URL(str(at)), own=own_totals(spec), generic=verify)
        tally.witness(page)
        found.totals = tally.totals
    return found


def make_plan(
    url: Any, pages: Any, shard_size: int, found: Discovery | None
) -> tuple[Plan, Any, Any]:
    """The plan, and the paginator and URL the shards run (the chosen one, for Auto)."""
    if not isinstance(url, str | URL | Source):
        sources = [as_source(item) for item in url]
        ids = [source_id(s) for s in sources]
        if len(set(ids)) != len(ids):
            raise ConfigurationError(
                "two sources of the job have the same key or URL: give each a key "
                "(streampage.Source(url, key=...)), a shard's checkpoint is named by it"
            )
        return Plan("sources", sources=ids, numbering=numbering(pages)), pages, sources
    spec, at, first, last, step = pages, url, getattr(pages, "start", 1), None, None
    if found is not None:
        spec, at, first, last, step = found.spec, found.url, found.first, found.last, found.step
    elif isinstance(pages, PageNumber) and pages.stop is not None:
        last = pages.stop
    elif isinstance(pages, Offset) and pages.stop is not None:
        first, last, step = 1, math.ceil((pages.stop - pages.start) / pages.limit), pages.limit
    totals = [
        (rep.evidence, rep.unit, rep.lo, rep.hi) for rep in (found.totals if found else {}).values()
    ]
    if spec is None or last is None or not isinstance(spec, PageNumber | Offset):
        why = "it is a walk" if spec is not None else "it has no page 2"
        if spec is not None and isinstance(spec, PageNumber | Offset):
            why = "no total says where its pages end"
        logger.info("the job is one shard: %s (it cannot be split)", why)
        return Plan("walk", numbering=numbering(pages), totals=totals), pages, url
    count = last - first + 1
    ranges = []
    for k in range(0, max(count, 0), shard_size):
        ranges.append((k + 1, min(k + shard_size, count)))
    if isinstance(spec, Offset):
        assert step is not None
        end = spec.stop
        if end is None and found is not None:
            end = spec.start + count * step
        plan = Plan(
            "offsets",
            ranges=ranges,
            numbering=numbering(spec),
            start=spec.start,
            step=step,
            end=end,
            totals=totals,
        )
        return plan, spec, at
    base = spec.start if isinstance(pages, Auto) or found is None else first
    shifted = [(base + a - 1, base + b - 1) for a, b in ranges]
    return Plan("pages", ranges=shifted, numbering=numbering(spec), totals=totals), spec, at


def shard_work(plan: Plan, shard: int, spec: Any, at: Any) -> tuple[Any, Any]:
    """What shard ``shard`` fetches: (its sources, its paginator)."""
    if plan.kind == "pages":
        first, last = plan.ranges[shard]
        return at, dataclasses.replace(spec, start=first, stop=last)
    if plan.kind == "offsets":
        first, last = plan.ranges[shard]
        begin = plan.start + (first - 1) * plan.step
        stop = plan.start + last * plan.step
        if plan.end is not None:
            stop = min(stop, plan.end)
        return at, dataclasses.replace(spec, start=begin, stop=stop)
    if plan.kind == "sources":
        return at[shard], spec
    return at, spec


def job_tally(plan: Plan, url: Any, pages: int, counted: int | None) -> Tally:
    """The whole job held to the totals page 1 reported: every page and record of it."""
    tally = Tally(URL(str(url)) if not isinstance(url, URL) else url)
    tally.totals = {e: Reported(e, unit, lo, hi) for e, unit, lo, hi in plan.totals}
    tally.pages = pages
    if counted is None:
        tally.countable = False
    else:
        tally.records = counted
    return tally

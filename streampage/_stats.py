"""Counters a stream keeps while it runs. Constant size: nothing grows with the page count."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class StreamStats:
    """What a stream has done so far; read it during or after the stream (``stream.stats``).

    The ``*_seconds`` fields split where the workers' time went, summed over workers:
    waiting on the rate limiter or a shared pause (``throttled``), sleeping between retries
    (``backoff``), on the network (``network``: request sent to body read), and blocked
    because the consumer was not taking pages fast enough (``consumer_wait``).
    """

    pages: int = 0  #: pages delivered to the consumer
    parent_pages: int = 0  #: then(): parent pages taken, whose records named the children
    records: int = 0  #: records extracted from them (stream.records() / into())
    committed_pages: int = 0  #: pages whose records a sink has committed (into())
    #: into(mode="resume"): pages an earlier run had committed, and whether that run had
    #: finished (then this one only looks for pages that are new since)
    resumed_pages: int = 0
    #: into(): what its checkpoint holds, this run's commits and earlier runs' together:
    #: pages, records written (0 for a checkpoint from before it counted them), and records
    #: as completeness counts them (None: a page's records could not be counted)
    checkpoint_pages: int = 0
    checkpoint_records: int = 0
    checkpoint_counted: int | None = 0
    resumed_finished: bool = False
    #: into(incremental=...): the value of the field this run fetched from (None:
    #: everything), the highest value among the committed records (this run's and earlier
    #: ones'), records left out (before the since value, or unchanged at it), whether they
    #: were filtered here rather than by the server (param=None, or a server that ignores
    #: the parameter: every page fetched), and records at the since value written again
    #: unchecked (more of them than the checkpoint keeps digests of: maybe written before)
    incremental_since: Any = None
    incremental_high: Any = None
    incremental_skipped: int = 0
    incremental_client_side: bool = False
    incremental_unchecked: int = 0
    #: requests sent (attempts, retries included), whatever came of them: answered, failed,
    #: or cancelled and discarded past the end (redirect hops excluded)
    requests: int = 0
    past_end: int = 0  #: of those, requests for pages that turned out to lie past the end
    bytes: int = 0  #: body bytes received
    retries: dict[str, int] = field(default_factory=dict)  #: retries by reason
    failed: int = 0  #: pages that failed after their retries (skipped or raised)
    throttled_seconds: float = 0.0
    backoff_seconds: float = 0.0
    network_seconds: float = 0.0
    consumer_wait_seconds: float = 0.0
    started_at: float | None = None
    first_page_at: float | None = None
    finished_at: float | None = None

    def start(self) -> None:
        self.started_at = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds from the start of the stream to its end (or to now, while it runs)."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else time.perf_counter()
        return end - self.started_at

    @property
    def time_to_first_page(self) -> float | None:
        """Seconds from the start until the consumer received the first page."""
        if self.started_at is None or self.first_page_at is None:
            return None
        return self.first_page_at - self.started_at

    @property
    def pages_per_second(self) -> float:
        elapsed = self.elapsed
        return self.pages / elapsed if elapsed > 0 else 0.0

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())

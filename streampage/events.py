"""What a stream learns and decides while it runs, as typed events: ``stream(on_event=f)``.

A callback rather than an async iterator of events: it is called on the event loop, in
order, at the moment the stream learns or decides something (before the page that taught it
is delivered), costs one ``is None`` test where no one listens, and cannot fall behind. An
iterator would need a consumer task of its own beside the pages' and a buffer between the
two that either grows without bound or drops events. A callback that needs to do slow work
hands the event to a queue of its own. It must not raise: an exception from it ends the
stream like any other failure of the consumer.

The same decisions are still logged (``logging.getLogger("streampage")``) for people who
read logs; programs read events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "BatchCommitted",
    "ConcurrencyChanged",
    "Event",
    "PageFailed",
    "PaginatorChosen",
    "PastEnd",
    "PoolPaused",
    "PoolResumed",
    "Retrying",
    "Total",
    "TotalDiscovered",
]


@dataclass(frozen=True, slots=True)
class Event:
    """The base of every event."""


@dataclass(frozen=True, slots=True)
class PaginatorChosen(Event):
    """``pages=auto`` chose how the source paginates, from its first response.

    ``paginator`` is the chosen paginator (``PageNumber(...)``, ``Offset(...)``,
    ``NextURL(...)``, ...), None when the first page showed no pagination (it is the only
    page); ``url`` the URL it runs over (redacted)."""

    paginator: Any
    url: str


@dataclass(frozen=True, slots=True)
class Total:
    """What the stream knows of its size: pages and records (None: not known)."""

    pages: int | None
    records: int | None


@dataclass(frozen=True, slots=True)
class TotalDiscovered(Event):
    """The first page said how much there is (``stream.total`` says it too): ``pages`` the
    pages this run will deliver (a resume's committed pages left out), ``records`` the
    records the server reported, and where they came from (``evidence``)."""

    pages: int | None
    records: int | None
    evidence: str


@dataclass(frozen=True, slots=True)
class PastEnd(Event):
    """Page ``page`` turned out to lie past the end (empty, 404, a repeat): not delivered."""

    page: int


@dataclass(frozen=True, slots=True)
class PoolPaused(Event):
    """Every worker waits ``seconds``: a long Retry-After, or a rate-limit budget gone."""

    seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class PoolResumed(Event):
    """The pause is over; the workers come back a few at a time."""


@dataclass(frozen=True, slots=True)
class ConcurrencyChanged(Event):
    """The adaptive limit moved: ``limit`` requests in flight at most, from ``previous``."""

    limit: int
    previous: int


@dataclass(frozen=True, slots=True)
class Retrying(Event):
    """Page ``page`` is fetched again in ``wait`` seconds, its attempt ``attempt`` having
    failed for ``reason`` ("status 503", "timeout", "decode", ...)."""

    page: int
    attempt: int
    reason: str
    wait: float


@dataclass(frozen=True, slots=True)
class PageFailed(Event):
    """Page ``page`` failed after its retries (raised, or kept in ``stream.failures``), or
    a source ended short of its total (``error`` is an IncompleteError)."""

    page: int
    error: Exception


@dataclass(frozen=True, slots=True)
class BatchCommitted(Event):
    """``into()`` committed a batch: ``records`` records of ``pages`` pages, durable with
    the checkpoint ``checkpoint``, which now holds ``committed_pages`` pages."""

    pages: int
    records: int
    checkpoint: str
    committed_pages: int

"""Policies shared by every worker of a stream: retries, rate limits, adaptive concurrency.

Configuration is a frozen value (``RetryPolicy``, ``RateLimit``, ``Timeout``); each stream
builds one ``PoolControl`` from them, which every worker consults before each attempt. The
point of sharing is that the pool reacts as one: a 429 with ``Retry-After`` or an exhausted
``RateLimit-Remaining`` pauses every worker, rather than each worker collecting its own 429s
a few hundred milliseconds apart.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy

    from ._stats import StreamStats

__all__ = ["RateLimit", "RetryPolicy", "Timeout"]

#: Statuses worth another attempt: the server says "not now", not "never".
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Statuses that mean the pool as a whole is going too fast.
CONGESTION_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a page is tried again.

    A page gets up to ``attempts`` attempts in all (1 disables retries). Between attempts it
    waits a random time in ``[0, min(max_wait, backoff * 2**retry)]`` ("full jitter", AWS
    Architecture Blog, *Exponential Backoff and Jitter*, 2015), or what the server's
    ``Retry-After`` asks when it asks for more. A page that has waited ``max_total`` seconds
    in all fails at its next failure. Retried: connection errors and resets, timeouts,
    truncated bodies and the ``statuses``; never another 4xx. A 2xx body that does not
    decode is fetched ``decode_attempts`` times in all, because a body cut short without
    Content-Length shows up only as invalid JSON. ``max_retry_after`` bounds what a server
    may ask for (``Retry-After``, rate-limit reset): asking for more fails the page with an
    error saying so.
    """

    attempts: int = 5
    backoff: float = 0.1
    max_wait: float = 10.0
    max_total: float = 120.0
    max_retry_after: float = 120.0
    statuses: frozenset[int] = RETRY_STATUSES
    decode_attempts: int = 2

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy(attempts={self.attempts}) must be >= 1 (1 disables retries)"
            )
        if self.decode_attempts < 1:
            raise ConfigurationError("RetryPolicy(decode_attempts=...) must be >= 1")
        for name in ("backoff", "max_wait", "max_total", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"RetryPolicy({name}=...) must be >= 0 seconds")

    def backoff_for(self, retry: int) -> float:
        """Full-jitter wait before retry number ``retry`` (0 for the first retry)."""
        return random.uniform(0, min(self.max_wait, self.backoff * 2**retry))


NO_RETRY = RetryPolicy(attempts=1, decode_attempts=1)


@dataclass(frozen=True, kw_only=True)
class Timeout:
    """Time limits of one attempt, in seconds (``None``: no limit).

    ``connect`` bounds opening a connection; ``first_byte`` bounds waiting for the response
    and every silence while its body streams in; ``attempt`` bounds the whole attempt, body
    included, so a server that drips a byte a second still times out. ``first_byte`` is off
    by default: ``attempt`` already ends a hung request, and aiohttp re-arms a timer on every
    chunk read when it is set (about 4 µs a page); set it to give up sooner on a silent server.
    """

    connect: float | None = 10.0
    first_byte: float | None = None
    attempt: float | None = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_byte", "attempt"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"Timeout({name}={value}) must be > 0 or None")


@dataclass(frozen=True)
class RateLimit:
    """At most ``per_second`` requests a second on average, in bursts of up to ``burst``.

    Shared by all workers of a stream. ``RateLimit(20)`` is 20/s with no burst beyond one.
    """

    per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.per_second <= 0:
            raise ConfigurationError(f"RateLimit({self.per_second}) must be > 0 requests/s")
        if self.burst < 1:
            raise ConfigurationError(f"RateLimit(burst={self.burst}) must be >= 1")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date, RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    wall = time.time() if now is None else now
    return max(0.0, when.timestamp() - wall)


_RATE_LIMIT_HEADERS = (
    ("RateLimit-Remaining", "RateLimit-Reset"),
    ("X-RateLimit-Remaining", "X-RateLimit-Reset"),
)


def rate_limit_pause(headers: CIMultiDictProxy[str], now: float | None = None) -> float | None:
    """Seconds until the rate-limit budget resets, when a response says it is exhausted.

    Reads ``RateLimit-Remaining``/``RateLimit-Reset`` (IETF draft: reset in delta seconds)
    and ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` (GitHub and others: often a Unix
    time). A reset larger than a billion is taken as a Unix time.
    """
    for remaining_name, reset_name in _RATE_LIMIT_HEADERS:
        remaining = headers.get(remaining_name)
        if remaining is None:
            continue
        try:
            if int(remaining.split(",")[0].strip()) > 0:
                return None
            reset = float(headers.get(reset_name, "1").split(",")[0].strip())
        except ValueError:
            return None
        if reset > 1e9:
            reset -= time.time() if now is None else now
        return max(0.0, reset)
    return None


@dataclass
class _Adaptive:
    """AIMD in-flight limit: halve on congestion, grow by ~1 per round trip when healthy.

    Like TCP congestion avoidance (RFC 5681): only responses to requests sent after the last
    cut may cut again, so one burst of 429s costs one halving, not fifty.
    """

    ceiling: int
    limit: float = 0.0
    inflight: int = 0
    last_cut: float = float("-inf")
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.limit = float(self.ceiling)

    async def acquire(self) -> float:
        while self.inflight >= int(self.limit):
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut in self.waiters:
                    self.waiters.remove(fut)
                elif fut.done() and not fut.cancelled():
                    self._wake()  # woken, then cancelled: pass the free slot on
                raise
        self.inflight += 1
        return time.monotonic()

    def release(self, started: float, congested: bool) -> None:
        self.inflight -= 1
        if congested:
            if started > self.last_cut:
                self.limit = max(1.0, self.limit / 2)
                self.last_cut = time.monotonic()
        else:
            self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
        self._wake()

    def _wake(self) -> None:
        free = int(self.limit) - self.inflight
        while free > 0 and self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1


class PoolControl:
    """The run-time side of the policies, one per stream, consulted by every worker."""

    def __init__(
        self,
        *,
        retry: RetryPolicy,
        rate: RateLimit | None,
        adaptive: bool,
        concurrency: int,
        stats: StreamStats,
    ) -> None:
        self.retry = retry
        self._stats = stats
        self._paused_until = 0.0
        self._interval = 1 / rate.per_second if rate else 0.0
        self._tolerance = self._interval * (rate.burst - 1) if rate else 0.0
        self._tat = 0.0  # GCRA "theoretical arrival time"
        self.adaptive = _Adaptive(concurrency) if adaptive else None

    def pause(self, seconds: float) -> None:
        """Hold every worker for ``seconds`` from now (Retry-After, rate-limit reset)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    @property
    def must_wait(self) -> bool:
        """Is there a rate limit or a pause in force? (Lets the common case skip an await.)"""
        return bool(self._interval) or time.monotonic() < self._paused_until

    async def before_attempt(self) -> None:
        """Wait out a shared pause, then take a rate-limit slot; the wait counts as throttled.

        The rate limit is GCRA (the "generic cell rate algorithm", ATM Forum TM 4.0, as in
        aiometer and limits): each request reserves the next emission time, FIFO, no lock.
        """
        now = time.monotonic()
        if now >= self._paused_until and not self._interval:
            return
        started = now
        while now < self._paused_until:
            await asyncio.sleep(self._paused_until - now)
            now = time.monotonic()
        if self._interval:
            allowed = max(self._tat - self._tolerance, now)
            self._tat = max(self._tat, allowed) + self._interval
            if allowed > now:
                await asyncio.sleep(allowed - now)
        self._stats.throttled_seconds += time.monotonic() - started

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import ConfigurationError
from .events import ConcurrencyChanged, Event, PoolPaused, PoolResumed

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

    A page gets up to ``attempts`` attempts in all (1 disables retries). Before retry ``i``
    (from 0) it waits a random time in ``[d / 2, d]`` with ``d = min(max_wait, backoff *
    2**i)`` ("equal jitter", AWS Architecture Blog, *Exponential Backoff and Jitter*, 2015):
    spread out like full jitter, but with a floor, so that the waits of the defaults add up
    to at least 5.1 s over 9 retries and a short outage (a restart, a failover: 2 s of 503s)
    is ridden out, and to at most ~10 s: a dead server is given up in bounded time. The
    first waits are short (10-20 ms, doubling), because a page that failed once or twice at
    random is usually the last one a run waits for. A server's ``Retry-After`` wins when it
    asks for more. A page that has waited ``max_total`` seconds in all fails at its next
    failure.

    Retried: connection errors and resets, timeouts, truncated bodies and the ``statuses``;
    never another 4xx. A 2xx body that does not decode, or that ``validate=`` rejects, is
    fetched ``decode_attempts`` times in all, because a body cut short without
    Content-Length shows up only as invalid JSON. ``max_retry_after`` bounds what a server
    may ask for (``Retry-After``, rate-limit reset): asking for more fails the page with an
    error saying so.

    Throttling: a 429/503 whose ``Retry-After`` is shorter than ``pool_pause`` is the page's
    own wait (the others go on, at a concurrency the adaptive limit lowers); one asking for
    ``pool_pause`` seconds or more, or a response saying the rate-limit budget is gone
    (``RateLimit-Remaining: 0``), pauses the whole pool, which then comes back gradually.
    """

    attempts: int = 10
    backoff: float = 0.02
    max_wait: float = 10.0
    max_total: float = 120.0
    max_retry_after: float = 120.0
    pool_pause: float = 5.0
    statuses: frozenset[int] = RETRY_STATUSES
    decode_attempts: int = 2

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy(attempts={self.attempts}) must be >= 1 (1 disables retries)"
            )
        if self.decode_attempts < 1:
            raise ConfigurationError("RetryPolicy(decode_attempts=...) must be >= 1")
        for name in ("backoff", "max_wait", "max_total", "max_retry_after", "pool_pause"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"RetryPolicy({name}=...) must be >= 0 seconds")

    def backoff_for(self, retry: int) -> float:
        """Equal-jitter wait before retry number ``retry`` (0 for the first retry)."""
        ceiling = min(self.max_wait, self.backoff * 2**retry)
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(attempts=1, decode_attempts=1)


@dataclass(frozen=True, kw_only=True)
class Timeout:
    """Time limits of one attempt, in seconds (``None``: no limit).

    ``connect`` bounds opening a connection. ``first_byte`` bounds waiting for the response
    and every silence while its body streams in: a server that stalls is given up in
    seconds. ``min_rate`` (bytes a second) catches the body that never stalls but drips: once
    a body has streamed for ``first_byte`` seconds from its first byte, it must have
    averaged at least that much (1 KiB/s lets an 8 MiB page take two hours; a drip of a byte
    a second is stopped after ``first_byte``). It is checked on bodies read in chunks:
    chunked, compressed, or with a Content-Length over 256 KiB. ``attempt`` bounds the whole
    attempt, body included, as a last resort.
    """

    connect: float | None = 10.0
    first_byte: float | None = 10.0
    attempt: float | None = 60.0
    min_rate: float | None = 1024.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_byte", "attempt", "min_rate"):
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
    if value.isascii() and value.isdigit():  # "²".isdigit() is true, and float() refuses it
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    wall = time.time() if now is None else now
    return max(0.0, when.timestamp() - wall)


def rate_limit_pause(headers: CIMultiDictProxy[str], now: float | None = None) -> float | None:
    """Seconds until the rate-limit budget resets, when a response says it is exhausted.

    Reads ``RateLimit-Remaining``/``RateLimit-Reset`` (IETF draft: reset in delta seconds)
    and ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` (GitHub and others: often a Unix
    time). A reset larger than a billion is taken as a Unix time.
    """
    remaining = headers.get("RateLimit-Remaining")
    if remaining is None:
        remaining = headers.get("X-RateLimit-Remaining")
        if remaining is None:
            return None  # no budget announced: every response of most APIs (first, cheap)
        reset_name = "X-RateLimit-Reset"
    else:
        reset_name = "RateLimit-Reset"
    try:
        if int(remaining.split(",")[0].strip()) > 0:
            return None
        reset = float(headers.get(reset_name, "1").split(",")[0].strip())
    except ValueError:
        return None
    if reset > 1e9:
        reset -= time.time() if now is None else now
    return max(0.0, reset)


#: Answers remembered by the adaptive limit, with the in-flight counts they were sent at.
_REMEMBERED = 64
#: In flight at the start, before any response: the limit then doubles each round trip
#: until the first refusal, and grows by half a round trip after one (see _Adaptive).
_SLOW_START = 8
#: Above the level where congestion last struck, the limit grows by one every this many
#: round trips: probing slowly is what keeps 429s rare once the server's level is found.
_PROBE_ROUND_TRIPS = 16
#: ... but only once this many seconds have passed since the level was last found, twice
#: as long each time a probe finds the same level again, up to _MAX_QUIET. A probe costs a
#: 429, and its page a Retry-After: rare probes keep both off a run's critical path.
_QUIET = 2.0
_MAX_QUIET = 60.0


@dataclass
class _Adaptive:
    """An in-flight limit that finds the concurrency a server accepts, and stays near it.

    Each request remembers how many were in flight when it was sent. 429/503s that fall
    on the levels above some level, and not below it, are explained by concurrency: the
    server accepts that level, so the limit drops to it at once (not by half: halving
    overshoots, and every regrowth trips the server again). Refusals spread over every
    level (a share of requests throttled at random, faults, a budget) cut nothing; their
    pages wait their own Retry-After. The limit starts at a few requests and doubles each
    round trip (TCP's slow start, RFC 5681) up to ``concurrency``, until the server refuses
    one; from then on, and after a pool-wide pause, it grows by half a round trip up to the
    known level (gentler: doubling overshoots a server's level by as much as it knows). A
    healthy server never refuses, and every round trip of the start is pages not fetched:
    ~7% of a 10^4-page run at 20 ms and concurrency 200 growing by half, ~5% doubling. At or
    above the known level it grows by one every ``_PROBE_ROUND_TRIPS`` round trips, in case
    the server accepts more now, after a quiet time that doubles each time the same level
    is found again.
    """

    ceiling: int
    emit: Callable[[Event], None] | None = None
    limit: float = 0.0
    known: float = 0.0
    inflight: int = 0
    #: slots handed to waiters that have not run yet (counted in ``inflight``)
    handed: int = 0
    sent: int = 0
    fence: int = 0
    cut_at: float = float("-inf")
    quiet: float = 0.0
    suspect: float | None = None
    #: no refusal yet, nor a pool-wide pause: the limit doubles each round trip (see above)
    fresh: bool = True
    #: the last answers: (the level a request was sent at, whether it succeeded)
    answers: deque[tuple[int, bool]] = field(default_factory=lambda: deque(maxlen=_REMEMBERED))
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        # slow start: a few at first, doubling each round trip up to the ceiling, so that a
        # server's limit is met by a handful of requests, not by the whole pool at once
        self.known = float(self.ceiling)
        self.limit = float(min(self.ceiling, _SLOW_START))

    def take(self) -> tuple[int, int] | None:
        """A slot at once, as ``acquire`` would give it, when one is free and nobody is
        waiting; else None (then ``acquire``). The common case costs no coroutine."""
        inflight = self.inflight
        # inflight < int(limit), for a whole inflight and a positive limit
        if inflight + 1 <= self.limit and not self.waiters:
            self.inflight = inflight + 1
            self.sent = sent = self.sent + 1
            return inflight + 1 - self.handed, sent
        return None

    async def acquire(self) -> tuple[int, int]:
        """Wait for a slot; returns (the in-flight count this request is sent at, its
        serial number). A slot freed while others wait is handed to the first of them
        (``_wake``), never taken by a worker that just came: one wake-up a wait, however
        many workers there are."""
        if self.inflight < int(self.limit) and not self.waiters:
            self.inflight += 1
        else:
            first = False
            while True:
                fut = asyncio.get_running_loop().create_future()
                if first:
                    self.waiters.appendleft(fut)
                else:
                    self.waiters.append(fut)
                try:
                    await fut  # _wake counted this request in flight when it handed the slot
                except BaseException:
                    if not fut.done():
                        self.waiters.remove(fut)
                    elif not fut.cancelled():
                        self.handed -= 1
                        self.inflight -= 1  # handed a slot, then cancelled: give it back
                        self._wake()
                    raise
                self.handed -= 1
                if self.inflight <= int(self.limit):
                    break
                # the limit came down (refusals) between the hand-off and this turn: the
                # slot goes back, and this request waits again, first in line
                self.inflight -= 1
                first = True
        self.sent += 1
        # the level it is sent at: requests on their way, not slots handed to waiters
        # that have not run yet (a refusal's level says where the server's limit is)
        return self.inflight - self.handed, self.sent

    def release(self, ticket: tuple[int, int], status: int) -> None:
        """A request is over: ``status`` is its HTTP status, 0 when no response came (a
        reset, a timeout, a cancellation: neither a success nor a refusal)."""
        level, serial = ticket
        self.inflight -= 1
        if status in CONGESTION_STATUSES:
            before = self.limit
            self.fresh = False
            self.answers.append((level, False))
            self._refused(level)
            self._changed(before)
        elif status and serial > self.fence:  # answers sent before a pause do not count
            self.answers.append((level, True))
            if self.limit < self.ceiling:  # at the ceiling (a healthy server) nothing grows
                self._grow()
        if self.waiters:
            self._wake()

    def _grow(self) -> None:
        """A success below the ceiling: x2 a round trip until the first refusal, then x1.5
        up to the known level, then a slow probe past it once the quiet time is over."""
        limit = before = self.limit
        if limit < self.known:
            # x2 a round trip at first; x1.5 once refused: an overshoot past the server's
            # level is then small
            limit += 1.0 if self.fresh else 0.5
            self.limit = min(float(self.ceiling), limit)
        elif time.monotonic() - self.cut_at >= self.quiet:
            limit += 1.0 / (_PROBE_ROUND_TRIPS * limit)
            self.limit = min(float(self.ceiling), limit)
        self._changed(before)

    def _changed(self, before: float) -> None:
        if self.emit is not None and int(self.limit) != int(before):
            self.emit(ConcurrencyChanged(int(self.limit), int(before)))

    def _refused(self, level: int) -> None:
        """A 429/503 for a request sent at ``level``.

        Explained by concurrency when recent answers at this level and above are mostly
        refusals, and at least three times as often as below it: a server's limit refuses
        what goes past it and nothing under it, a random share of refusals (faults, a
        budget) falls on every level alike. Levels are ours, and answers in transit make
        them a little higher than the server's count; a rate, unlike a strict "above every
        success", is not thrown off by that. One explained refusal is only a suspicion: the
        limit comes down at once, but the level is taken as known, and probed past only
        rarely, when a second one confirms it (the rest of the same burst, or the next
        overshoot). Before any success a cut is tentative too, so a server that refused
        everything for a moment (a restart) leaves no lasting cut.
        """
        answers = self.answers
        if not any(ok for _level, ok in answers):
            accepted = max(1.0, level - 1.0)
            if accepted < self.limit:
                self.limit = accepted
            return
        # the lowest level that the recent refusals explain (a burst past the server's
        # limit is refused at every level above it, in whatever order the answers come)
        for lowest in sorted({seen for seen, ok in answers if not ok and seen <= level}):
            above = [ok for seen, ok in answers if seen >= lowest]
            below = [ok for seen, ok in answers if seen < lowest]
            refused_above = above.count(False) / len(above)
            refused_below = below.count(False) / len(below) if below else 0.0
            if len(above) >= 3 and refused_above >= 0.5 and refused_above >= 3 * refused_below:
                break
        else:
            return
        accepted = max(1.0, lowest - 1.0)
        suspect = self.suspect
        if accepted < self.limit:
            self.limit = accepted
        self.suspect = min(accepted, suspect) if suspect is not None else accepted
        if suspect is None or min(accepted, self.limit) > suspect + 1:
            return
        found = min(self.limit, suspect)
        # confirmed; the same level found again: wait twice as long before probing past it
        self.quiet = min(self.quiet * 2, _MAX_QUIET) if found == self.known else _QUIET
        self.cut_at = time.monotonic()
        self.limit = self.known = found

    def restart(self) -> None:
        """After a pool-wide pause: come back with a couple of requests, then grow by half
        each round trip."""
        before = int(self.limit)
        self.fresh = False
        self.known = max(self.known, self.limit)
        self.limit = min(self.limit, 2.0)
        self.fence = self.sent
        if self.emit is not None and int(self.limit) != before:
            self.emit(ConcurrencyChanged(int(self.limit), before))

    def _wake(self) -> None:
        limit = int(self.limit)
        waiters = self.waiters
        while waiters and self.inflight < limit:
            fut = waiters.popleft()
            if not fut.done():
                self.inflight += 1
                self.handed += 1
                fut.set_result(None)


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
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        self.retry = retry
        self._emit = emit
        self._resume_at: asyncio.TimerHandle | None = None
        self._stats = stats
        self._paused_until = 0.0
        self._interval = 1 / rate.per_second if rate else 0.0
        self._tolerance = self._interval * (rate.burst - 1) if rate else 0.0
        self._tat = 0.0  # GCRA "theoretical arrival time"
        self._burst = rate.burst if rate else 1
        #: no rate limit and no pause so far: ``must_wait`` is False without reading the
        #: clock (asked before every attempt); False for good once either is set
        self.steady = not rate
        self.adaptive = _Adaptive(concurrency, emit=emit) if adaptive else None
        #: told of every wait a server asked for (Retry-After on a 429/503, a rate-limit
        #: budget gone): a sharded job passes it on to its other shards
        self.on_throttle: Callable[[float], None] | None = None

    def set_rate(self, per_second: float | None) -> None:
        """Change the rate limit while the stream runs (a sharded job's share of its rate
        moves as shards start and end); None lifts it."""
        self._interval = 1 / per_second if per_second else 0.0
        self._tolerance = self._interval * (self._burst - 1)
        if per_second:
            self.steady = False

    def throttled(self, seconds: float) -> None:
        """A server asked for a wait of ``seconds``: tell whoever listens."""
        if self.on_throttle is not None:
            self.on_throttle(seconds)

    def pause(self, seconds: float, reason: str = "") -> None:
        """Hold every worker for ``seconds`` from now (a long Retry-After, a budget gone);
        the adaptive limit then lets them back a few at a time."""
        self.steady = False
        now = time.monotonic()
        until = now + seconds
        if until > self._paused_until:
            if self.adaptive is not None and now >= self._paused_until:
                self.adaptive.restart()  # a new pause, not a later answer extending it
            self._paused_until = until
            if self._emit is not None:
                self._emit(PoolPaused(seconds, reason))
                if self._resume_at is not None:
                    self._resume_at.cancel()
                loop = asyncio.get_running_loop()
                self._resume_at = loop.call_later(seconds, self._emit, PoolResumed())

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

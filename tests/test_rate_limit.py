"""Retry-After, rate-limit headers and the token bucket: the pool slows down as one."""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter

import pytest
from faults import Fault, collect, collect_error, fast_retry, fault_servers

import streampage
from streampage import PageNumber, RateLimit


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


def numbers(pages):
    return Counter(p.number for p in pages)


def gap_after(server, page: int, attempt: int = 1) -> float:
    """Seconds between the end of ``page``'s attempt and the arrival of its next attempt."""
    first, retry = server.hits_for(page)[attempt - 1], server.hits_for(page)[attempt]
    return retry.arrived - first.ended


def arrivals_after(server, moment: float) -> list[float]:
    return sorted(h.arrived for h in server.hits if h.arrived > moment)


# ---------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_waited_before_the_retry(fault_server, status, form):
    if form == "seconds":
        fault = Fault.retry_after(status, seconds=1)
    else:  # one-second resolution: the wait asked for lies in (1, 2] seconds
        fault = Fault.retry_after(status, date_in=2)
    server = await fault_server(schedule={1: [fault]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=fast_retry())

    pages = await collect(s)

    assert numbers(pages) == Counter({1: 1})
    assert server.attempts[1] == 2
    gap = gap_after(server, 1)
    assert gap >= 0.95, f"the retry came {gap:.3f} s after the {status}, before Retry-After"
    assert gap < 3.0
    assert s.stats.retries == {f"status {status}": 1}
    assert s.stats.backoff_seconds + s.stats.throttled_seconds >= 0.95


async def test_retry_after_beyond_max_retry_after_fails_with_a_clear_error(fault_server):
    server = await fault_server(schedule={1: [Fault.retry_after(429, seconds=3600)]})
    s = streampage.stream(
        server.url, pages=PageNumber(stop=1), retry=fast_retry(max_retry_after=30)
    )

    started = time.monotonic()
    _, exc = await collect_error(s)

    assert time.monotonic() - started < 2, "it must not wait for what it will not honour"
    assert isinstance(exc, streampage.HTTPStatusError)
    assert (exc.page, exc.status, exc.retry_after) == (1, 429, 3600)
    assert "max_retry_after" in str(exc)
    assert "3600" in str(exc)
    assert "page 1" in str(exc)
    assert server.attempts[1] == 1


async def test_retry_after_beyond_the_bound_is_a_recorded_failure_with_skip(fault_server):
    server = await fault_server(schedule={2: [Fault.retry_after(503, date_in=7200)]})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=3),
        concurrency=1,
        retry=fast_retry(max_retry_after=5),
        on_error="skip",
    )

    pages = await collect(s)

    assert sorted(p.number for p in pages) == [1, 3]
    [failure] = s.failures
    assert (failure.page, failure.status, failure.attempts) == (2, 503, 1)
    assert failure.error.retry_after > 5


async def test_a_long_retry_after_pauses_the_whole_pool_not_only_its_worker(fault_server):
    # page 1 is answered 429 after 0.05 s, asking for 1 s: at least pool_pause, so it is the
    # server's budget, not one page's turn. Pages 2-4 take 0.2 s, after which their workers
    # want pages 5-7: those must wait for the Retry-After too.
    server = await fault_server(
        schedule={1: [Fault.status(429, {"Retry-After": "1"}, delay=0.05)]},
        delay=lambda n: 0.2 if n in (2, 3, 4) else 0.0,
    )
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=12),
        concurrency=4,
        retry=fast_retry(pool_pause=1.0),
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 13))
    throttled_at = server.hits_for(1)[0].ended
    later = arrivals_after(server, throttled_at + 0.01)
    assert len(later) == 12 - 3  # page 1 again, and pages 5..12
    assert min(later) - throttled_at >= 0.95, (
        f"a request arrived {min(later) - throttled_at:.3f} s after the 429 that asked for 1 s"
    )
    assert server.statuses()[429] == 1
    # three workers waited ~0.8 s each on the shared pause
    assert s.stats.throttled_seconds > 1.0


async def test_a_short_retry_after_is_the_pages_own_wait(fault_server):
    # the same 429, under the default pool_pause (5 s): page 1 waits its second, the other
    # pages go on meanwhile
    server = await fault_server(
        schedule={1: [Fault.status(429, {"Retry-After": "1"}, delay=0.05)]},
        delay=lambda n: 0.2 if n in (2, 3, 4) else 0.0,
    )
    s = streampage.stream(server.url, pages=PageNumber(stop=12), concurrency=4, retry=fast_retry())

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 13))
    throttled_at = server.hits_for(1)[0].ended
    others = [h for h in server.hits if h.page != 1 and h.arrived > throttled_at + 0.01]
    assert len(others) == 12 - 4 and max(h.arrived for h in others) - throttled_at < 0.9
    assert gap_after(server, 1) >= 0.95  # page 1's own retry waited its Retry-After
    assert s.stats.throttled_seconds < 0.1


async def test_a_429_without_retry_after_takes_the_rate_limit_reset(fault_server):
    fault = Fault.status(429, {"RateLimit-Remaining": "0", "RateLimit-Reset": "1"})
    server = await fault_server(schedule={1: [fault]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=fast_retry())

    await collect(s)

    assert gap_after(server, 1) >= 0.95


# ---------------------------------------------------------------------- rate-limit headers


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda: {"RateLimit-Remaining": "0", "RateLimit-Reset": "1"}, id="ietf"),
        pytest.param(
            lambda: {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 2)},
            id="x-unix-time",
        ),
        pytest.param(
            lambda: {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}, id="x-delta"
        ),
    ],
)
async def test_exhausted_budget_pauses_the_pool_until_the_reset(fault_server, headers):
    # page 1 (after 0.05 s) says the budget is spent; pages 2-4, in flight by then, take 0.15 s
    server = await fault_server(
        schedule={1: [Fault.ok(headers(), delay=0.05)]},
        delay=lambda n: 0.15 if n in (2, 3, 4) else 0.0,
    )
    s = streampage.stream(server.url, pages=PageNumber(stop=10), concurrency=4, retry=fast_retry())

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 11))
    exhausted_at = server.hits_for(1)[0].ended
    later = arrivals_after(server, exhausted_at + 0.01)
    assert len(later) == 6  # pages 5..10
    assert min(later) - exhausted_at >= 0.95
    assert server.statuses()[429] == 0
    assert s.stats.throttled_seconds > 1.0


async def test_remaining_budget_does_not_pause(fault_server):
    ok = Fault.ok({"RateLimit-Remaining": "7", "RateLimit-Reset": "30"})
    server = await fault_server(schedule={n: [ok] for n in range(1, 11)})
    s = streampage.stream(server.url, pages=PageNumber(stop=10), concurrency=4, retry=fast_retry())

    started = time.monotonic()
    await collect(s)

    assert time.monotonic() - started < 1.0
    assert s.stats.throttled_seconds == 0


@pytest.mark.parametrize("style", ["ietf", "x"])
async def test_a_server_budget_is_respected_instead_of_collecting_429s(fault_server, style):
    # 4 requests a second; 10 pages; 4 workers. A client that only reacts to 429s (which carry
    # no Retry-After here) would collect dozens of them; one that reads the budget at most the
    # requests already in flight when it ran out.
    server = await fault_server(budget=(4, 1.0), budget_style=style, delay=0.01)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=10),
        concurrency=4,
        retry=fast_retry(attempts=10, backoff=0.05, max_wait=0.1),
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 11))
    rejected = server.statuses()[429]
    assert rejected <= 3 * 3, f"{rejected} requests refused with 429"


# ---------------------------------------------------------------------- token bucket


async def test_token_bucket_allows_a_burst_then_the_rate(fault_server):
    per_second, burst, total = 50.0, 5, 30
    server = await fault_server()
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=total),
        concurrency=10,
        rate=RateLimit(per_second, burst),
    )

    started = time.monotonic()
    pages = await collect(s)
    elapsed = time.monotonic() - started

    assert numbers(pages) == Counter(range(1, total + 1))
    times = sorted(h.arrived for h in server.hits)
    assert times[burst - 1] - times[0] < 0.05, "the burst must go out at once"
    for i in range(burst, total):
        # measured from the client's start, which comes before the bucket's first token:
        # from the first arrival instead, a late first request would make the rest look early
        earliest = (i - burst + 1) / per_second
        assert times[i] - started >= earliest - 0.005, f"request {i} came early"
    # any one-second window holds at most burst + rate requests
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 0.2) <= burst + math.ceil(0.2 * per_second)
    assert elapsed >= (total - burst) / per_second - 0.01
    assert elapsed < 2.0
    assert s.stats.throttled_seconds > 0


async def test_a_plain_number_is_requests_per_second_without_burst(fault_server):
    server = await fault_server()
    s = streampage.stream(server.url, pages=PageNumber(stop=12), concurrency=6, rate=40)

    started = time.monotonic()
    await collect(s)

    times = sorted(h.arrived for h in server.hits)
    # request i is sent no earlier than i / 40 s after the start (measured from the
    # client's start: a gap between two arrivals shrinks when a busy machine delays the
    # first of them, while the pace is kept)
    for i, t in enumerate(times):
        assert t - started >= i / 40 - 0.005, f"request {i} came early"
    # and never two at once: no burst beyond one
    assert sum(1 for a, b in itertools.pairwise(times) if b - a < 0.005) <= 1
    assert times[-1] - times[0] >= 11 / 40 - 0.01


async def test_rate_limit_counts_retries_too(fault_server):
    # the limit is on requests, not pages: a retry takes a slot like any request
    server = await fault_server(schedule={n: [Fault.status(500)] for n in range(1, 6)})
    s = streampage.stream(
        server.url, pages=PageNumber(stop=5), concurrency=5, rate=20, retry=fast_retry()
    )

    await collect(s)

    times = sorted(h.arrived for h in server.hits)
    assert len(times) == 10
    assert times[-1] - times[0] >= 9 / 20 - 0.01


def test_rate_limit_rejects_nonsense():
    with pytest.raises(streampage.ConfigurationError):
        RateLimit(0)
    with pytest.raises(streampage.ConfigurationError):
        RateLimit(10, burst=0)
    with pytest.raises(streampage.ConfigurationError):
        streampage.stream("http://127.0.0.1/x", rate=-1)

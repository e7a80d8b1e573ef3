"""Throttling with default settings (issue 9): a 429 is a signal to slow down, not only to wait.

Adaptive concurrency is on by default, so a stream against a server that refuses requests over
K in flight settles near K instead of tripping it again and again. A 429/503 whose Retry-After
is shorter than ``RetryPolicy.pool_pause`` is the page's own wait; the whole pool pauses only
when the server says its budget is gone or asks for ``pool_pause`` seconds or more, and after
such a pause the workers come back a few at a time. Everything is measured at the server
(``server.hits``): the 429s it sent, the requests in flight when each arrived, and the gap
before a retry.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections import Counter

import pytest
from faults import Fault, collect, fast_retry, fault_servers

import streampage
from streampage import PageNumber, RetryPolicy


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


def numbers(pages):
    return Counter(p.number for p in pages)


async def timed_collect(s, server, within: float):
    """The pages and the seconds the stream took; past ``within`` the test fails, saying how
    far it got (rather than a bare TimeoutError)."""
    pages = []
    started = time.monotonic()
    try:
        async with asyncio.timeout(within), s:
            async for page in s:
                pages.append(page)
    except TimeoutError:
        pytest.fail(
            f"not done after {within:.1f} s: {len(pages)} pages delivered, "
            f"{len(server.hits)} requests, {server.statuses()[429]} of them refused with 429"
        )
    return pages, time.monotonic() - started


def average_in_flight(server, start: float, end: float) -> float:
    """Requests in flight at the server between ``start`` and ``end``, averaged over time.

    (Not the in-flight count on arrival: when K requests go out together, they arrive seeing
    1, 2, ..., K in flight, whose median is K/2.)
    """
    held = sum(max(0.0, min(h.ended, end) - max(h.arrived, start)) for h in server.hits)
    return held / (end - start)


# ---------------------------------------------------------------------- convergence


@pytest.mark.parametrize("k", [4, 8, 20])
async def test_a_throttled_stream_converges_near_the_concurrency_the_server_accepts(
    fault_server, k
):
    # the scenario: 429 + Retry-After: 1 to any request arriving while K are in
    # flight. Before, every 429 paused the whole pool and all 50 workers came back together
    # and tripped it again (K=8: 479 429s, 13 pages lost, 62 s)
    total, latency, retry_after = 500, 0.02, 1.0
    server = await fault_server(
        throttle_above=k, throttle_headers={"Retry-After": "1"}, delay=latency
    )
    # what K requests in flight would take, plus one Retry-After wait
    ideal = latency * total / k + retry_after
    s = streampage.stream(server.url, pages=PageNumber(stop=total), concurrency=50)

    pages, elapsed = await timed_collect(s, server, within=2.5 * ideal)

    assert numbers(pages) == Counter(range(1, total + 1))
    assert s.failures == [] and s.stats.failed == 0
    refused = server.statuses()[429]
    assert refused < 0.05 * total, f"{refused} responses were 429 for {total} pages (K={k})"
    assert elapsed <= 1.5 * ideal, (
        f"{elapsed:.2f} s; K={k} in flight would take {ideal:.2f} s ({refused} 429s)"
    )
    # it stays there: from the middle of the run on, about K requests are in flight
    n = len(server.hits)
    settled = average_in_flight(
        server, server.hits[n // 2].arrived, server.hits[n * 9 // 10].arrived
    )
    assert 0.6 * k <= settled <= k, f"{settled:.1f} in flight on average late in the run, K={k}"
    # every 429 the server sent is a retry the stream counted
    assert s.stats.retries.get("status 429", 0) == refused


async def test_adaptive_is_on_by_default_and_adaptive_false_turns_it_off(fault_server):
    assert inspect.signature(streampage.stream).parameters["adaptive"].default is True

    async def run(**options):
        # 429 with no Retry-After over 4 in flight; tiny backoffs, so only the in-flight
        # limit (not waiting) can keep the 429s down
        server = await fault_server(throttle_above=4, delay=0.01)
        s = streampage.stream(
            server.url,
            pages=PageNumber(stop=200),
            concurrency=16,
            retry=fast_retry(attempts=100, max_total=60),
            **options,
        )
        pages = await collect(s, within=30)
        assert numbers(pages) == Counter(range(1, 201))
        return server.statuses()[429]

    by_default = await run()
    turned_off = await run(adaptive=False)

    assert by_default * 4 < turned_off, (by_default, turned_off)


# ---------------------------------------------------------------------- whose wait is it


async def test_a_short_retry_after_is_the_pages_own_wait(fault_server):
    # page 1 is told to come back in 1 s, under the default pool_pause (5 s): page 1 waits,
    # the other workers go on serving pages meanwhile
    assert RetryPolicy().pool_pause == 5.0
    server = await fault_server(
        schedule={1: [Fault.status(429, {"Retry-After": "1"}, delay=0.05)]}, delay=0.01
    )
    s = streampage.stream(server.url, pages=PageNumber(stop=60), concurrency=4)

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 61))
    refused, retried = server.hits_for(1)
    gap = retried.arrived - refused.ended
    assert 0.95 <= gap < 2.0, f"page 1 came back {gap:.3f} s after a 429 asking for 1 s"
    meanwhile = [h for h in server.hits if refused.ended + 0.02 < h.arrived < retried.arrived]
    assert len(meanwhile) >= 20, (
        f"only {len(meanwhile)} requests arrived while page 1 waited: the pool paused with it"
    )
    assert all(h.status == 200 for h in meanwhile)
    assert server.statuses()[429] == 1
    assert s.stats.retries == {"status 429": 1}


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_a_share_of_throttled_requests_costs_one_wait_not_one_each(fault_server, form):
    # one page in twenty is refused once with a Retry-After; before, each one paused the
    # whole pool in turn (ten back-to-back pauses)
    if form == "seconds":
        throttled, shortest = Fault.retry_after(429, seconds=1), 0.95
    else:  # one-second resolution, and built before the run: the wait lies in (0.8, 2] s
        throttled, shortest = Fault.retry_after(429, date_in=2), 0.75
    schedule = {n: [throttled] for n in range(10, 201, 20)}
    server = await fault_server(schedule=schedule, delay=0.01)
    s = streampage.stream(server.url, pages=PageNumber(stop=200))

    pages, elapsed = await timed_collect(s, server, within=15)

    assert numbers(pages) == Counter(range(1, 201))
    assert server.statuses()[429] == len(schedule)
    for n in schedule:
        refused, retried = server.hits_for(n)
        assert retried.arrived - refused.ended >= shortest, (n, retried.arrived - refused.ended)
    # ten waits of 1-2 s taken one after the other would be 10 s and more
    assert elapsed < 4.5, f"{elapsed:.2f} s for 200 pages with {len(schedule)} 429s"


async def test_a_retry_after_of_pool_pause_or_more_pauses_every_worker(fault_server):
    # Retry-After: 1 with pool_pause=1.0: the server asks for a long wait, so every worker
    # waits. Page 1 is refused after 0.05 s; pages 2-4 take 0.2 s, after which their workers
    # want pages 5.. and must wait for the pause too
    server = await fault_server(
        schedule={1: [Fault.status(429, {"Retry-After": "1"}, delay=0.05)]},
        delay=lambda n: 0.2 if n in (2, 3, 4) else 0.0,
    )
    s = streampage.stream(
        server.url, pages=PageNumber(stop=12), concurrency=4, retry=RetryPolicy(pool_pause=1.0)
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 13))
    throttled_at = server.hits_for(1)[0].ended
    later = sorted(h.arrived for h in server.hits if h.arrived > throttled_at + 0.01)
    assert len(later) == 12 - 3  # page 1 again, and pages 5..12
    assert min(later) - throttled_at >= 0.95, (
        f"a request arrived {min(later) - throttled_at:.3f} s into a pool-wide pause of 1 s"
    )
    assert server.statuses()[429] == 1


@pytest.mark.parametrize("style", ["ietf", "x"])
async def test_a_429_saying_the_budget_is_gone_pauses_every_worker(fault_server, style):
    # Retry-After: 1 is short (under the default pool_pause), but the server also says no
    # request is left in its budget: waiting alone would only collect more 429s
    if style == "ietf":
        budget = {"RateLimit-Remaining": "0", "RateLimit-Reset": "1"}
    else:  # GitHub's style: the reset as a Unix time, one-second resolution
        budget = {
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(time.time()) + 1),
        }
    refusal = Fault.status(429, {"Retry-After": "1", **budget}, delay=0.05)
    server = await fault_server(
        schedule={1: [refusal]}, delay=lambda n: 0.2 if n in (2, 3, 4) else 0.0
    )
    s = streampage.stream(server.url, pages=PageNumber(stop=12), concurrency=4)

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 13))
    throttled_at = server.hits_for(1)[0].ended
    later = sorted(h.arrived for h in server.hits if h.arrived > throttled_at + 0.01)
    assert len(later) == 12 - 3
    # (>= 0.9: the Unix-time reset, one-second resolution, may come out a little under 1 s)
    assert min(later) - throttled_at >= 0.9, (
        f"a request arrived {min(later) - throttled_at:.3f} s after the budget was said gone"
    )
    assert server.statuses()[429] == 1


async def test_after_a_pool_pause_the_workers_come_back_a_few_at_a_time(fault_server):
    # a healthy run at 16 in flight; page 40 is refused with a pool-wide pause. When the
    # pause ends, a few requests go first and the number doubles each round trip: all 16
    # at once would trip a server that has only just recovered
    concurrency, latency = 16, 0.05
    server = await fault_server(schedule={40: [Fault.retry_after(429, seconds=1)]}, delay=latency)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=160),
        concurrency=concurrency,
        retry=RetryPolicy(pool_pause=1.0),
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 161))
    throttled_at = server.hits_for(40)[0].ended
    # the pool was running at full width before the 429
    before = [h for h in server.hits if h.arrived < throttled_at]
    assert max(h.in_flight for h in before) == concurrency
    after = [h for h in server.hits if h.arrived > throttled_at + 0.02]
    resumed = after[0].arrived
    assert resumed - throttled_at >= 0.95, "the pool did not pause"
    first_round = [h for h in after if h.arrived < resumed + latency / 2]
    assert len(first_round) <= 4, (
        f"{len(first_round)} requests went out together when the pause ended"
    )
    # ... and it grows back to the full width within a few round trips (2, 4, 8, 16)
    soon = [h for h in after if h.arrived < resumed + 8 * latency]
    assert max(h.in_flight for h in soon) >= concurrency * 3 // 4, [h.in_flight for h in soon]
    assert server.statuses()[429] == 1


async def test_random_refusals_on_every_level_leave_the_pool_wide(fault_server):
    # 5% of pages are refused once with 503, at random: no level explains them, so the
    # limit is not cut, and the pool stays near its width
    import random
    import statistics

    rnd = random.Random(7)
    total, concurrency = 600, 20
    schedule = {n: [Fault.status(503)] for n in range(1, total + 1) if rnd.random() < 0.05}
    server = await fault_server(schedule=schedule, delay=0.03)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=total), concurrency=concurrency, retry=fast_retry()
    )

    pages = await collect(s, within=30)

    assert Counter(p.number for p in pages) == Counter(range(1, total + 1))
    late = server.hits[len(server.hits) // 3 : -concurrency]
    # Measured over 16 runs on a 2-core VM: medians 11 to 17 of 20 (a cut or two where
    # refusals happen to bunch up); a limit cut at every refusal sits at a few.
    assert statistics.median(h.in_flight for h in late) >= concurrency * 0.5

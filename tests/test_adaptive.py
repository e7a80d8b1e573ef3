"""Adaptive concurrency: on by default; a 429/503 that concurrency explains lowers the in-flight
limit to the level the server accepted, which is then probed slowly; within [1, concurrency]."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest
from faults import Fault, collect, fast_retry, fault_servers

import streampage
from streampage import PageNumber


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


def numbers(pages):
    return Counter(p.number for p in pages)


async def run_throttled(fault_server, *, adaptive: bool, k: int, concurrency: int, total: int):
    server = await fault_server(throttle_above=k, delay=0.01)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=total),
        concurrency=concurrency,
        adaptive=adaptive,
        retry=fast_retry(attempts=100, backoff=0.005, max_wait=0.02, max_total=60),
    )
    pages = await collect(s, within=30)
    return server, s, pages


async def test_settles_near_the_servers_limit_and_finishes(fault_server):
    k, concurrency, total = 4, 16, 200
    server, s, pages = await run_throttled(
        fault_server, adaptive=True, k=k, concurrency=concurrency, total=total
    )

    assert numbers(pages) == Counter(range(1, total + 1))
    late = server.hits[len(server.hits) // 2 :]
    in_flight = statistics.median(h.in_flight for h in late)
    throttled = sum(h.status == 429 for h in late) / len(late)
    assert k / 2 <= in_flight <= k + 1, f"settled at {in_flight} in flight, the server takes {k}"
    assert throttled < 0.25, f"{throttled:.0%} of the late requests were still refused"
    assert s.stats.retries.get("status 429", 0) == server.statuses()[429]

    # the same server without adaptive concurrency: far more 429s
    plain, _, plain_pages = await run_throttled(
        fault_server, adaptive=False, k=k, concurrency=concurrency, total=total
    )
    assert len(plain_pages) == total
    assert server.statuses()[429] * 4 < plain.statuses()[429]


@pytest.mark.parametrize("status", [429, 503])
async def test_a_server_that_refuses_everything_for_a_moment_leaves_no_lasting_cut(
    fault_server, status
):
    # the first wave (pages 1..8, all in flight at once) is refused, a restart, say: nothing
    # succeeded at a lower level, so concurrency does not explain it, and the limit is back
    # at the full pool within a few round trips
    concurrency, total = 8, 120
    schedule = {n: [Fault.status(status, delay=0.02)] for n in range(1, concurrency + 1)}
    server = await fault_server(schedule=schedule, delay=0.01)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=total), concurrency=concurrency, retry=fast_retry()
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, total + 1))
    assert max(h.in_flight for h in server.hits[-total // 2 :]) == concurrency
    assert server.max_in_flight <= concurrency


async def test_a_refusal_above_a_level_that_succeeded_sets_the_limit_there(fault_server):
    # the server takes 5 at once: after the first refusal above 5 the pool stays at 5, and
    # probes past it rarely
    k, concurrency, total = 5, 20, 300
    server = await fault_server(throttle_above=k, delay=0.01)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=total),
        concurrency=concurrency,
        retry=fast_retry(attempts=50),
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, total + 1))
    late = server.hits[len(server.hits) // 3 :]
    assert statistics.median(h.in_flight for h in late) >= k - 2
    assert server.statuses()[429] < 0.05 * total


async def test_adaptive_false_keeps_the_pools_concurrency(fault_server):
    concurrency, total = 8, 80
    schedule = {n: [Fault.status(503, delay=0.02)] for n in range(1, concurrency + 1)}
    server = await fault_server(schedule=schedule, delay=0.01)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=total),
        concurrency=concurrency,
        adaptive=False,
        retry=fast_retry(),
    )

    pages = await collect(s)

    assert len(pages) == total
    after = server.hits[concurrency : concurrency + 12]
    assert max(h.in_flight for h in after) == concurrency


async def test_never_below_one_in_flight_under_sustained_congestion(fault_server):
    # every page is refused three times: the limit goes down to 1, and the stream still ends
    concurrency, total = 6, 30
    schedule = {n: [Fault.status(503)] * 3 for n in range(1, total + 1)}
    server = await fault_server(schedule=schedule)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=total),
        concurrency=concurrency,
        adaptive=True,
        retry=fast_retry(attempts=4),
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, total + 1))
    assert s.stats.retries == {"status 503": 3 * total}
    assert 1 <= server.max_in_flight <= concurrency


async def test_adaptive_with_a_shared_retry_after_pause(fault_server):
    # 429 + Retry-After: each page waits its own second; the stream finishes
    schedule = {n: [Fault.retry_after(429, seconds=1)] for n in range(1, 5)}
    server = await fault_server(schedule=schedule, delay=0.01)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=20), concurrency=4, adaptive=True, retry=fast_retry()
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 21))
    assert server.statuses()[429] == 4


async def test_a_healthy_server_is_reached_at_full_concurrency_in_a_few_round_trips(
    fault_server,
):
    # the start doubles each round trip (8, 16, 32, 64): the 64th request of the fourth
    # round trip is the 120th; growing by half (8, 12, 18, 27, 40, 60, 64) it was the
    # 187th. Every round trip of the start is pages a healthy server was not asked for.
    concurrency, total = 64, 600
    server = await fault_server(delay=0.05)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=total), concurrency=concurrency, retry=fast_retry()
    )

    pages = await collect(s, within=30)

    assert len(pages) == total
    first = max(h.in_flight for h in server.hits[:8])
    assert first <= 8, f"{first} in flight before any answer: the start is 8"
    full = next(i for i, h in enumerate(server.hits) if h.in_flight >= concurrency)
    assert full < 160, f"{full} requests before {concurrency} were in flight"


def test_the_start_doubles_until_a_refusal_then_grows_by_half() -> None:
    from streampage._policy import _Adaptive

    def round_trip(limit: _Adaptive, status: int = 200) -> None:
        tickets = []
        while (ticket := limit.take()) is not None:
            tickets.append(ticket)
        for ticket in tickets:
            limit.release(ticket, status)

    adaptive = _Adaptive(ceiling=100)
    assert int(adaptive.limit) == 8
    round_trip(adaptive)
    assert int(adaptive.limit) == 16
    round_trip(adaptive)
    assert int(adaptive.limit) == 32
    # a refusal (not one concurrency explains: nothing is cut), then x1.5 a round trip
    ticket = adaptive.take()
    assert ticket is not None
    adaptive.release(ticket, 429)
    assert int(adaptive.limit) == 32
    round_trip(adaptive)
    assert int(adaptive.limit) == 48
    # after a pool-wide pause too: back at 2, then x1.5
    fresh = _Adaptive(ceiling=100)
    fresh.restart()
    assert int(fresh.limit) == 2
    for expected in (3, 4, 6, 9):
        round_trip(fresh)
        assert int(fresh.limit) == expected

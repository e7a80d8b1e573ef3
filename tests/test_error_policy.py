"""on_error="raise" | "skip": a page that failed after its retries is raised or recorded, and
nothing is ever dropped silently. Also the stats that summarise a run."""

from __future__ import annotations

import asyncio
from collections import Counter

import msgspec
import pytest
from faults import Fault, collect, collect_error, fast_retry, fault_servers

import streampage
from streampage import PageNumber


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


def numbers(pages):
    return Counter(p.number for p in pages)


async def test_raise_is_the_default_and_ends_the_stream(fault_server):
    server = await fault_server(schedule={3: [Fault.status(500)] * 5}, delay=0.01)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=10), concurrency=2, retry=fast_retry(attempts=2)
    )

    pages, exc = await collect_error(s)

    assert isinstance(exc, streampage.HTTPStatusError)
    assert (exc.page, exc.status, exc.attempts) == (3, 500, 2)
    assert 3 not in {p.number for p in pages}
    assert s.failures == []  # raised, not recorded
    assert s.stats.failed == 1
    with pytest.raises(StopAsyncIteration):
        await s.__anext__()


SKIP_SCHEDULE = {
    3: [Fault.status(500)] * 5,
    5: [Fault.reset_mid_body()] * 5,
    7: [Fault.status(503)] * 5,
    9: [Fault.invalid_json()] * 5,
    11: [Fault.status(404)],
}


def assert_skip_outcome(s, pages, total: int) -> None:
    delivered = numbers(pages)
    failed = Counter(f.page for f in s.failures)
    assert set(delivered.values()) == {1}, "a page was delivered twice"
    assert set(failed.values()) == {1}, "a page was recorded twice"
    assert set(delivered).isdisjoint(failed)
    assert set(delivered) | set(failed) == set(range(1, total + 1)), "a page was dropped"
    assert sorted(failed) == [3, 5, 7, 9, 11]
    by_page = {f.page: f for f in s.failures}
    assert (by_page[3].status, by_page[3].attempts) == (500, 3)
    assert isinstance(by_page[3].error, streampage.HTTPStatusError)
    assert (by_page[5].status, by_page[5].attempts) == (None, 3)
    assert isinstance(by_page[5].error, streampage.RequestError)
    assert (by_page[7].status, by_page[7].attempts) == (503, 3)
    assert by_page[9].attempts == 2  # decode_attempts
    assert isinstance(by_page[9].error, streampage.DecodeError)
    assert (by_page[11].status, by_page[11].attempts) == (404, 1)
    for f in s.failures:
        assert f.error.page == f.page
        assert f.error.attempts == f.attempts
    assert s.stats.failed == 5
    assert s.stats.pages == total - 5


async def test_skip_records_every_failure_and_the_stream_still_ends(fault_server):
    total = 14
    server = await fault_server(schedule=SKIP_SCHEDULE, delay=0.002)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=total),
        concurrency=4,
        retry=fast_retry(attempts=3),
        on_error="skip",
    )

    pages = await collect(s)

    assert_skip_outcome(s, pages, total)
    assert s.stats.retries == {"status 500": 2, "status 503": 2, "truncated": 2, "decode": 1}


async def test_skip_in_ordered_mode(fault_server):
    total = 14
    server = await fault_server(schedule=SKIP_SCHEDULE, delay=lambda n: 0.02 if n == 1 else 0.0)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=total),
        concurrency=4,
        ordered=True,
        retry=fast_retry(attempts=3),
        on_error="skip",
    )

    pages = await collect(s)

    assert [p.number for p in pages] == [n for n in range(1, total + 1) if n not in SKIP_SCHEDULE]
    assert_skip_outcome(s, pages, total)


async def test_skip_with_an_open_ended_paginator(fault_server):
    # pages 6.. are empty: the end is found by fetching ahead; page 3 fails along the way
    empty = Fault.raw_body(b'{"page": 0, "items": []}')
    schedule = {3: [Fault.status(502)] * 5, **{n: [empty] * 5 for n in range(6, 40)}}
    server = await fault_server(schedule=schedule)
    s = streampage.stream(server.url, concurrency=4, retry=fast_retry(attempts=2), on_error="skip")

    pages = await collect(s)

    assert sorted(p.number for p in pages) == [1, 2, 4, 5]
    assert [(f.page, f.status) for f in s.failures] == [(3, 502)]


def test_a_failure_is_a_frozen_record():
    err = streampage.HTTPStatusError("x", page=2, url="u", status=500, body_excerpt="")
    failure = streampage.Failure(page=2, error=err, attempts=3, status=500)
    with pytest.raises((AttributeError, TypeError)):
        failure.page = 3  # type: ignore[misc]
    assert msgspec.structs.asdict(failure) == {
        "page": 2,
        "error": err,
        "attempts": 3,
        "status": 500,
        "source": None,  # the streampage.Source of the page, when the stream set it
    }


def test_on_error_must_be_raise_or_skip():
    with pytest.raises(streampage.ConfigurationError):
        streampage.stream("http://127.0.0.1/x", on_error="ignore")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- stats


async def test_stats_split_where_the_time_went(fault_server):
    schedule = {2: [Fault.status(500)], 4: [Fault.retry_after(503, seconds=0)]}
    server = await fault_server(schedule=schedule, delay=0.01)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=12),
        concurrency=4,
        buffer=1,
        rate=streampage.RateLimit(200, burst=2),
        retry=streampage.RetryPolicy(backoff=0.02, max_wait=0.02),
    )

    async with asyncio.timeout(15), s:
        async for _ in s:
            await asyncio.sleep(0.03)  # a slow consumer

    stats = s.stats
    assert stats.pages == 12
    assert stats.retries == {"status 500": 1, "status 503": 1}
    assert stats.total_retries == 2
    assert stats.failed == 0
    assert stats.requests == 14
    assert stats.bytes > 0
    assert stats.network_seconds >= 12 * 0.01 * 0.9
    assert stats.backoff_seconds > 0
    assert stats.throttled_seconds > 0
    assert stats.consumer_wait_seconds > 0.1
    assert stats.elapsed > 0


async def test_failed_pages_are_counted_in_the_stats(fault_server):
    server = await fault_server(schedule={1: [Fault.status(500)] * 3, 2: [Fault.status(400)]})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=3),
        retry=fast_retry(attempts=3),
        on_error="skip",
    )

    await collect(s)

    assert s.stats.failed == len(s.failures) == 2
    assert s.stats.retries == {"status 500": 2}

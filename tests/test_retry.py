"""The retry policy: what is retried, how often, how long it waits, and what is counted."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from faults import Fault, collect, collect_error, fast_retry, fault_servers

import streampage
from streampage import PageNumber, RetryPolicy


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


RETRIED_STATUSES = [408, 425, 429, 500, 502, 503, 504]
NEVER_RETRIED = [400, 401, 403, 404, 405, 409, 410, 422, 451]


def numbers(pages):
    return Counter(p.number for p in pages)


@pytest.mark.parametrize("status", RETRIED_STATUSES)
async def test_transient_status_is_retried_and_the_page_delivered_once(fault_server, status):
    server = await fault_server(schedule={2: [Fault.status(status), Fault.status(status)]})
    s = streampage.stream(server.url, pages=PageNumber(stop=4), concurrency=2, retry=fast_retry())

    pages = await collect(s)

    assert numbers(pages) == Counter({1: 1, 2: 1, 3: 1, 4: 1})
    assert server.attempts[2] == 3
    assert s.stats.retries == {f"status {status}": 2}
    assert s.stats.total_retries == 2
    assert s.stats.failed == 0
    assert s.stats.backoff_seconds > 0


@pytest.mark.parametrize("status", NEVER_RETRIED)
async def test_other_4xx_is_never_retried(fault_server, status):
    server = await fault_server(schedule={2: [Fault.status(status)]})
    s = streampage.stream(server.url, pages=PageNumber(stop=3), concurrency=1, retry=fast_retry())

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.HTTPStatusError)
    assert (exc.page, exc.status, exc.attempts) == (2, status, 1)
    assert server.attempts[2] == 1
    assert s.stats.retries == {}


async def test_connection_reset_before_response_is_retried_and_counted(fault_server):
    server = await fault_server(schedule={1: [Fault.reset()]})
    s = streampage.stream(server.url, pages=PageNumber(stop=2), concurrency=1, retry=fast_retry())

    pages = await collect(s)

    assert numbers(pages) == Counter({1: 1, 2: 1})
    # one reset is one retry, counted: the policy's attempt budget is the only retry budget
    assert s.stats.retries == {"connection": 1}
    assert server.attempts[1] == 2


async def test_connection_resets_exhaust_the_attempt_budget(fault_server):
    server = await fault_server(schedule={1: [Fault.reset()] * 10})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=fast_retry(attempts=3))

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.RequestError)
    assert exc.page == 1
    assert exc.attempts == 3
    assert "page 1" in str(exc)
    # RetryPolicy(attempts=3) means three requests, not more behind the user's back
    assert server.attempts[1] == 3


async def test_connection_reset_mid_body_is_retried(fault_server):
    server = await fault_server(schedule={1: [Fault.reset_mid_body()]})
    s = streampage.stream(server.url, pages=PageNumber(stop=2), concurrency=1, retry=fast_retry())

    pages = await collect(s)

    assert numbers(pages) == Counter({1: 1, 2: 1})
    # (page 1 waits out its backoff off the worker, which takes page 2 meanwhile)
    assert next(p.data for p in pages if p.number == 1) == {"page": 1, "items": [1]}
    assert server.attempts[1] == 2
    assert s.stats.total_retries == 1
    assert set(s.stats.retries) <= {"truncated", "connection"}


async def test_truncated_body_is_retried(fault_server):
    server = await fault_server(schedule={3: [Fault.truncated(), Fault.truncated()]})
    s = streampage.stream(server.url, pages=PageNumber(stop=4), concurrency=2, retry=fast_retry())

    pages = await collect(s)

    assert numbers(pages) == Counter({1: 1, 2: 1, 3: 1, 4: 1})
    assert server.attempts[3] == 3
    assert s.stats.retries == {"truncated": 2}


async def test_body_cut_without_length_costs_one_decode_retry(fault_server):
    # no Content-Length, no chunking: the short body is only visible as invalid JSON
    server = await fault_server(schedule={1: [Fault.cut_no_length()]})
    s = streampage.stream(server.url, pages=PageNumber(stop=2), concurrency=1, retry=fast_retry())

    pages = await collect(s)

    assert numbers(pages) == Counter({1: 1, 2: 1})
    assert s.stats.retries == {"decode": 1}
    assert server.attempts[1] == 2


async def test_invalid_json_is_tried_decode_attempts_times_then_reported(fault_server):
    server = await fault_server(schedule={2: [Fault.invalid_json()] * 5})
    s = streampage.stream(server.url, pages=PageNumber(stop=2), concurrency=1, retry=fast_retry())

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.DecodeError)
    assert exc.page == 2
    assert exc.attempts == 2  # RetryPolicy().decode_attempts
    assert server.attempts[2] == 2
    assert s.stats.retries == {"decode": 1}


async def test_decode_attempts_one_reports_invalid_json_at_once(fault_server):
    server = await fault_server(schedule={1: [Fault.invalid_json()] * 5})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=fast_retry(decode_attempts=1))

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.DecodeError)
    assert server.attempts[1] == 1


async def test_invalid_utf8_is_our_decode_error(fault_server):
    server = await fault_server(schedule={1: [Fault.invalid_utf8()] * 5})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=fast_retry())

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.DecodeError), repr(exc)
    assert not isinstance(exc, UnicodeDecodeError)
    assert exc.page == 1


async def test_retry_false_makes_one_attempt(fault_server):
    server = await fault_server(schedule={1: [Fault.status(503)]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=False)

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.HTTPStatusError)
    assert (exc.status, exc.attempts) == (503, 1)
    assert server.attempts[1] == 1
    assert s.stats.retries == {}


async def test_retry_false_does_not_retry_decode_failures_either(fault_server):
    server = await fault_server(schedule={1: [Fault.invalid_json()]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=False)

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.DecodeError)
    assert server.attempts[1] == 1


async def test_attempts_bound_the_requests_per_page(fault_server):
    server = await fault_server(schedule={1: [Fault.status(502)] * 10})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=fast_retry(attempts=4))

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.HTTPStatusError)
    assert (exc.page, exc.status, exc.attempts) == (1, 502, 4)
    assert server.attempts[1] == 4
    assert s.stats.retries == {"status 502": 3}
    assert s.stats.failed == 1


async def test_custom_statuses_are_the_only_ones_retried(fault_server):
    server = await fault_server(schedule={1: [Fault.status(500)], 2: [Fault.status(418)]})
    policy = fast_retry(statuses=frozenset({418}))
    s = streampage.stream(
        server.url, pages=PageNumber(stop=2), concurrency=1, retry=policy, on_error="skip"
    )

    pages = await collect(s)

    assert [p.number for p in pages] == [2]
    assert [(f.page, f.status, f.attempts) for f in s.failures] == [(1, 500, 1)]
    assert s.stats.retries == {"status 418": 1}


async def test_max_total_bounds_the_time_a_page_spends_backing_off(fault_server):
    server = await fault_server(schedule={1: [Fault.status(503)] * 1000})
    policy = RetryPolicy(attempts=1000, backoff=0.05, max_wait=0.05, max_total=0.3)
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=policy)

    started = time.monotonic()
    _, exc = await collect_error(s)
    elapsed = time.monotonic() - started

    assert isinstance(exc, streampage.HTTPStatusError)
    assert s.stats.backoff_seconds <= 0.3 + 1e-9
    assert elapsed < 1.5
    assert 1 < exc.attempts < 1000
    assert server.attempts[1] == exc.attempts


def test_backoff_is_equal_jitter_capped_by_max_wait():
    policy = RetryPolicy(backoff=0.1, max_wait=1.0)
    for retry, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (10, 1.0)]:
        waits = [policy.backoff_for(retry) for _ in range(400)]
        # equal jitter: spread over the upper half of the range, never below it
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (retry, min(waits), max(waits))
        assert min(waits) < 0.6 * ceiling
        assert max(waits) > 0.9 * ceiling


def test_the_default_policy_rides_out_two_seconds_and_gives_up_in_bounded_time():
    # the floor of the waits: what a short outage (503s for 2 s) is sure to be waited out by
    policy = RetryPolicy()
    floors = [min(policy.max_wait, policy.backoff * 2**i) / 2 for i in range(policy.attempts - 1)]
    ceilings = [min(policy.max_wait, policy.backoff * 2**i) for i in range(policy.attempts - 1)]
    assert sum(floors) >= 2.0
    assert sum(ceilings) <= 30.0
    assert ceilings[0] <= 0.02  # a page that failed once at random is back at once


def test_retry_policy_rejects_nonsense():
    with pytest.raises(streampage.ConfigurationError):
        RetryPolicy(attempts=0)
    with pytest.raises(streampage.ConfigurationError):
        RetryPolicy(backoff=-1)
    with pytest.raises(streampage.ConfigurationError):
        RetryPolicy(decode_attempts=0)


async def test_one_policy_object_serves_every_worker_and_every_stream(fault_server):
    # a frozen value: sharing it between workers and streams cannot leak state between them
    policy = fast_retry(attempts=2)
    server = await fault_server(schedule={n: [Fault.status(500)] for n in range(1, 9)})
    first = streampage.stream(server.url, pages=PageNumber(stop=8), concurrency=4, retry=policy)
    assert len(await collect(first)) == 8
    second = streampage.stream(server.url, pages=PageNumber(stop=8), concurrency=4, retry=policy)
    assert len(await collect(second)) == 8
    assert first.stats.retries == {"status 500": 8}
    assert second.stats.retries == {}


async def test_many_faults_across_pages_each_page_exactly_once(fault_server):
    schedule = {
        1: [Fault.status(500), Fault.truncated()],
        2: [Fault.reset_mid_body()],
        3: [Fault.status(503), Fault.status(502), Fault.status(504)],
        5: [Fault.status(408)],
        8: [Fault.retry_after(429, seconds=0)],
    }
    server = await fault_server(schedule=schedule, delay=0.002)
    s = streampage.stream(server.url, pages=PageNumber(stop=10), concurrency=4, retry=fast_retry())

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 11))
    for page in pages:
        assert page.data == {"page": page.number, "items": [page.number]}
    assert s.stats.total_retries == 8
    assert s.stats.retries["status 503"] == 1
    assert s.stats.retries["status 429"] == 1
    assert s.stats.pages == 10
    assert s.stats.requests >= 10 + 6  # every complete response counted, error ones included


async def test_a_page_backing_off_does_not_hold_its_worker(fault_server):
    # page 1 fails once and waits 0.4-0.8 s before its retry; meanwhile both workers keep
    # fetching other pages (a worker asleep through the backoff would halve the pool)
    server = await fault_server(schedule={1: [Fault.status(503)]}, delay=0.02)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=40),
        concurrency=2,
        retry=RetryPolicy(backoff=0.8, max_wait=0.8),
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 41))
    failed, retried = server.hits_for(1)
    during = [h for h in server.hits if failed.ended < h.arrived < retried.arrived]
    assert len(during) > 20
    assert max(h.in_flight for h in during) == 2
    assert server.max_in_flight <= 2  # the resting page's retry still takes a slot

"""Random fault schedules: every page comes back exactly once, as a page or as a failure.

With enough attempts every page is delivered exactly once; with too few, each page is either
delivered or listed in ``stream.failures`` (on_error="skip"), exactly as the retry policy says,
with the requests, retry reasons and attempt counts it implies.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from faults import (
    TRANSIENT,
    Fault,
    FaultServer,
    collect,
    expected_outcome,
    fast_retry,
    random_schedule,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streampage
from streampage import PageNumber, Timeout

KINDS = [*TRANSIENT, "hang"]
FAULTS = {**TRANSIENT, "hang": Fault.hang}
HANG_TIMEOUT = 0.15


async def run_schedule(
    schedule: dict[int, list[Fault]],
    policy: streampage.RetryPolicy,
    *,
    total: int,
    concurrency: int,
    ordered: bool,
) -> tuple[FaultServer, streampage.Stream[Any], list[streampage.Page[Any]]]:
    server = FaultServer(schedule=schedule)
    await server.start()
    try:
        s = streampage.stream(
            server.url,
            pages=PageNumber(stop=total),
            concurrency=concurrency,
            ordered=ordered,
            retry=policy,
            timeout=Timeout(first_byte=HANG_TIMEOUT),
            on_error="skip",
        )
        pages = await collect(s, within=30)
    finally:
        await server.stop()
    return server, s, pages


def check(schedule, policy, server, s, pages, *, total: int, ordered: bool) -> None:
    delivered = Counter(p.number for p in pages)
    failed = Counter(f.page for f in s.failures)
    assert all(c == 1 for c in delivered.values()), f"delivered twice: {delivered}"
    assert all(c == 1 for c in failed.values()), f"failed twice: {failed}"
    assert set(delivered).isdisjoint(failed)
    assert set(delivered) | set(failed) == set(range(1, total + 1)), "a page was dropped"
    if ordered:
        assert [p.number for p in pages] == sorted(delivered)
    for page in pages:
        assert page.data == {"page": page.number, "items": [page.number]}

    by_page = {f.page: f for f in s.failures}
    retries: Counter[str] = Counter()
    for n in range(1, total + 1):
        expected = expected_outcome(schedule.get(n, []), policy)
        retries += expected.retries
        got = "delivered" if n in delivered else "failed"
        want = "delivered" if expected.delivered else "failed"
        assert got == want, f"page {n} {got}, expected {want}; faults {schedule.get(n)}"
        assert server.attempts[n] == expected.attempts, f"page {n}: requests at the server"
        if not expected.delivered:
            failure = by_page[n]
            assert failure.attempts == expected.attempts
            assert failure.status == expected.status
            assert failure.error.page == n
    assert s.stats.retries == dict(retries)
    assert s.stats.failed == len(s.failures)
    assert s.stats.pages == len(pages)


schedules = st.integers(min_value=1, max_value=8).flatmap(
    lambda total: st.tuples(
        st.just(total),
        st.dictionaries(
            st.integers(min_value=1, max_value=total),
            st.lists(st.sampled_from(KINDS), max_size=3),
        ),
    )
)

PROPERTY = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def materialise(kinds: dict[int, list[str]]) -> dict[int, list[Fault]]:
    return {n: [FAULTS[k]() for k in ks] for n, ks in kinds.items()}


@PROPERTY
@given(
    case=schedules,
    concurrency=st.integers(min_value=1, max_value=4),
    ordered=st.booleans(),
)
def test_with_enough_attempts_every_page_arrives_exactly_once(case, concurrency, ordered):
    total, kinds = case
    schedule = materialise(kinds)
    policy = fast_retry(attempts=4, decode_attempts=4, backoff=0.001, max_wait=0.005)

    server, s, pages = asyncio.run(
        run_schedule(schedule, policy, total=total, concurrency=concurrency, ordered=ordered)
    )

    assert s.failures == []
    assert sorted(p.number for p in pages) == list(range(1, total + 1))
    check(schedule, policy, server, s, pages, total=total, ordered=ordered)


@PROPERTY
@given(
    case=schedules,
    attempts=st.integers(min_value=1, max_value=3),
    decode_attempts=st.integers(min_value=1, max_value=3),
    concurrency=st.integers(min_value=1, max_value=4),
    ordered=st.booleans(),
)
def test_with_too_few_attempts_every_page_is_delivered_or_a_listed_failure(
    case, attempts, decode_attempts, concurrency, ordered
):
    total, kinds = case
    schedule = materialise(kinds)
    policy = fast_retry(
        attempts=attempts, decode_attempts=decode_attempts, backoff=0.001, max_wait=0.005
    )

    server, s, pages = asyncio.run(
        run_schedule(schedule, policy, total=total, concurrency=concurrency, ordered=ordered)
    )

    check(schedule, policy, server, s, pages, total=total, ordered=ordered)


@pytest.mark.parametrize("seed", range(5))
async def test_seeded_schedules_over_many_pages(seed):
    total = 40
    schedule = random_schedule(seed, total, max_faults=3)
    policy = fast_retry(attempts=3, decode_attempts=2, backoff=0.001, max_wait=0.005)

    server, s, pages = await run_schedule(
        schedule, policy, total=total, concurrency=6, ordered=bool(seed % 2)
    )

    check(schedule, policy, server, s, pages, total=total, ordered=bool(seed % 2))

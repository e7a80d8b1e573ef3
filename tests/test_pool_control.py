"""The pool's control from outside the stream (a rate set mid-run, as a sharded job's share
is; a pause) and the producer's first page alone: the paths that the engine's per-page
fast paths (PoolControl.steady, next_nowait) skip while nothing was ever set."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter

import pytest
from faults import Fault, fault_servers

import streampage
from streampage import Header, PageNumber
from streampage._policy import PoolControl


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


async def test_a_rate_set_after_start_spaces_the_requests_of_a_steady_pool(fault_server):
    # no rate limit at first (PoolControl.steady): a rate set mid-run (a sharded job's
    # share) must still be waited for, before every later attempt
    server = await fault_server()
    s = streampage.stream(server.url, pages=PageNumber(stop=14), concurrency=2, buffer=1)
    controls: list[PoolControl] = []
    s._on_control = controls.append
    pages = []
    async with asyncio.timeout(20), s:
        async for page in s:
            pages.append(page)
            if len(pages) == 4:
                assert controls[0].steady
                controls[0].set_rate(5)
                assert not controls[0].steady
                moment = time.monotonic()
    assert Counter(p.number for p in pages) == Counter(range(1, 15))
    later = sorted(h.arrived for h in server.hits if h.arrived > moment)
    assert len(later) >= 6
    gaps = [b - a for a, b in itertools.pairwise(later[1:])]
    assert min(gaps) >= 0.17, gaps


async def test_a_pause_from_outside_holds_a_steady_pool(fault_server):
    server = await fault_server()
    s = streampage.stream(server.url, pages=PageNumber(stop=10), concurrency=2, buffer=1)
    controls: list[PoolControl] = []
    s._on_control = controls.append
    pages = []
    async with asyncio.timeout(20), s:
        async for page in s:
            pages.append(page)
            if len(pages) == 3:
                controls[0].pause(0.6)
                moment = time.monotonic()
    assert Counter(p.number for p in pages) == Counter(range(1, 11))
    later = sorted(h.arrived for h in server.hits if h.arrived > moment + 0.01)
    assert later and min(later) - moment >= 0.55, min(later) - moment


async def test_the_first_page_goes_alone_then_the_total_bounds_the_rest(fault_server):
    # total from a header: the producer's next_nowait raises WouldWait while page 1 is out
    server = await fault_server(
        schedule={1: [Fault.ok({"X-Total-Pages": "7"}, delay=0.3)]},
        delay=0.0,
    )
    s = streampage.stream(
        server.url, pages=PageNumber(total_pages=Header("X-Total-Pages")), concurrency=4
    )
    pages = []
    async with asyncio.timeout(20), s:
        async for page in s:
            pages.append(page)
    assert Counter(p.number for p in pages) == Counter(range(1, 8))
    first_end = server.hits_for(1)[0].ended
    assert all(h.arrived >= first_end for h in server.hits if h.page != 1)
    assert max(h.page for h in server.hits) == 7  # nothing fetched past the total
    assert s.stats.past_end == 0

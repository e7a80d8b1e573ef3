"""Lifecycle: however the consumer leaves (end, break, exception, cancellation), nothing of
the stream keeps running: no task, no open connection, no open session."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from conftest import HANG, collect

import streampage
from streampage import PageNumber


class Boom(Exception):
    pass


async def assert_all_closed(server, leaks, *, wait: bool) -> None:
    """No task of the stream left, no client session open, no connection open at the server.

    ``wait=False``: the task and session checks hold at once (``async with`` has waited for
    the cleanup). Connections are counted at the server, which hears of a close a loop turn
    or two after the client made it, so they get a short wait in both modes.
    """
    if wait:
        await leaks.wait_no_tasks()
    else:
        leaks.assert_no_tasks()
    leaks.assert_sessions_closed()
    await server.wait_for(lambda: server.open_connections == 0, within=1.0)


async def assert_no_more_requests(server) -> None:
    before = len(server.requests)
    await asyncio.sleep(0.05)
    assert len(server.requests) == before, "requests were still made after the stream ended"


# ---------------------------------------------------------------------- break


async def test_break_inside_async_with_cleans_up_before_the_block_exits(page_server, leaks):
    server = await page_server(pages=None, delay=lambda n: 0.005)

    async with asyncio.timeout(HANG):
        async with streampage.stream(server.url, concurrency=8) as s:
            async for page in s:
                assert page.number >= 1
                break
        leaks.assert_no_tasks()
        leaks.assert_sessions_closed()

    assert server.connections_made >= 1
    await assert_all_closed(server, leaks, wait=False)
    await assert_no_more_requests(server)


async def test_break_out_of_a_bare_async_for_cleans_up_soon_after(page_server, leaks):
    server = await page_server(pages=None, delay=lambda n: 0.005)

    async with asyncio.timeout(HANG):
        async for page in streampage.stream(server.url, concurrency=8):
            assert page.number >= 1
            break

    await assert_all_closed(server, leaks, wait=True)
    await assert_no_more_requests(server)


@pytest.mark.parametrize("ordered", [False, True])
async def test_a_billion_pages_cost_nothing_until_iterated_and_break_works(
    page_server, leaks, ordered
):
    server = await page_server(pages=None)
    started = time.perf_counter()
    paginator = PageNumber(stop=10**9)
    s = streampage.stream(server.url, pages=paginator, concurrency=4, ordered=ordered)
    received = []

    async with asyncio.timeout(HANG), s:
        async for page in s:
            received.append(page.number)
            if len(received) == 3:
                break

    assert time.perf_counter() - started < 2.0
    assert len(received) == 3
    # only a window's worth was ever asked for, not the billion
    assert len(server.requests) <= 4 * 4 + 4 + 4
    await assert_all_closed(server, leaks, wait=False)


async def test_a_billion_pages_bare_async_for_break(page_server, leaks):
    server = await page_server(pages=None)

    async with asyncio.timeout(HANG):
        async for _page in streampage.stream(
            server.url, pages=PageNumber(stop=10**9), concurrency=4
        ):
            break

    await assert_all_closed(server, leaks, wait=True)
    assert len(server.requests) < 100


async def test_break_while_requests_are_held_at_the_server(page_server, leaks):
    # page 1 arrives; pages 2.. are stuck at the server: breaking must not wait for them
    server = await page_server(pages=None)
    for n in range(2, 40):
        server.hold(n)

    async with asyncio.timeout(2.0):
        async with streampage.stream(server.url, pages=PageNumber(stop=100), concurrency=6) as s:
            async for page in s:
                assert page.number == 1
                await server.wait_for(lambda: server.in_flight == 6)
                break

    await assert_all_closed(server, leaks, wait=False)


# ---------------------------------------------------------------------- the consumer raises


async def test_exception_in_the_loop_body_propagates_unchanged_and_cleans_up(page_server, leaks):
    server = await page_server(pages=None, delay=lambda n: 0.005)
    boom = Boom("consumer failed")

    with pytest.raises(Boom) as excinfo:
        async with asyncio.timeout(HANG):
            async with streampage.stream(server.url, concurrency=8) as s:
                async for _page in s:
                    raise boom

    assert excinfo.value is boom
    assert excinfo.type is Boom  # not wrapped in an exception group or a StreamPageError
    await assert_all_closed(server, leaks, wait=False)
    await assert_no_more_requests(server)


async def test_exception_in_a_bare_async_for_propagates_and_cleans_up(page_server, leaks):
    server = await page_server(pages=None, delay=lambda n: 0.005)
    boom = Boom("consumer failed")

    with pytest.raises(Boom) as excinfo:
        async with asyncio.timeout(HANG):
            async for _page in streampage.stream(server.url, concurrency=8):
                raise boom

    assert excinfo.value is boom
    await assert_all_closed(server, leaks, wait=True)


# ---------------------------------------------------------------------- cancellation


async def _consumer_cancelled_while_waiting(server, consume):
    """Run ``consume`` as a task; once it has a page and waits for the next (held at the
    server), cancel it. Returns the task, done."""
    got_page = asyncio.Event()
    task = asyncio.create_task(consume(got_page))
    async with asyncio.timeout(HANG):
        await got_page.wait()
        # the consumer set the event and went straight back to waiting for a page
        await server.wait_for(lambda: server.in_flight >= 1)
        task.cancel()
        await asyncio.wait([task])
    return task


async def test_cancelling_the_consumer_inside_async_with_cancels_everything(page_server, leaks):
    server = await page_server(pages=None)
    for n in range(2, 60):
        server.hold(n)

    async def consume(got_page):
        async with streampage.stream(server.url, concurrency=5) as s:
            async for _page in s:
                got_page.set()

    task = await _consumer_cancelled_while_waiting(server, consume)

    assert task.cancelled()
    await assert_all_closed(server, leaks, wait=False)


async def test_cancelling_the_consumer_of_a_bare_async_for_cancels_everything(page_server, leaks):
    server = await page_server(pages=None)
    for n in range(2, 60):
        server.hold(n)

    async def consume(got_page):
        async for _page in streampage.stream(server.url, concurrency=5):
            got_page.set()

    task = await _consumer_cancelled_while_waiting(server, consume)

    assert task.cancelled()
    await assert_all_closed(server, leaks, wait=True)


async def test_cancelled_bare_consumer_cleans_up_even_while_its_error_is_kept(page_server, leaks):
    # gather(..., return_exceptions=True) keeps the CancelledError, and with it the
    # traceback's frames: the stream must not rely on being garbage to stop
    server = await page_server(pages=None)
    for n in range(2, 60):
        server.hold(n)

    async def consume(got_page):
        async for _page in streampage.stream(server.url, concurrency=5):
            got_page.set()

    task = await _consumer_cancelled_while_waiting(server, consume)
    (kept,) = await asyncio.gather(task, return_exceptions=True)

    assert isinstance(kept, asyncio.CancelledError)
    await assert_all_closed(server, leaks, wait=True)
    del kept


async def test_timeout_around_the_stream_cancels_everything(page_server, leaks):
    server = await page_server(pages=None)
    for n in range(3, 60):
        server.hold(n)
    received = []

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            async with streampage.stream(server.url, concurrency=4) as s:
                async for page in s:
                    received.append(page.number)

    assert sorted(received) == [1, 2]
    await assert_all_closed(server, leaks, wait=False)


# ---------------------------------------------------------------------- other endings


async def test_a_complete_stream_leaves_nothing_running(page_server, leaks):
    server = await page_server(pages=15)

    pages = await collect(streampage.stream(server.url, concurrency=6))

    assert len(pages) == 15
    await assert_all_closed(server, leaks, wait=False)


async def test_a_complete_bare_async_for_leaves_nothing_running(page_server, leaks):
    server = await page_server(pages=15)
    numbers = []

    async with asyncio.timeout(HANG):
        async for page in streampage.stream(server.url, concurrency=6):
            numbers.append(page.number)

    assert sorted(numbers) == list(range(1, 16))
    await assert_all_closed(server, leaks, wait=True)


async def test_aclose_on_a_kept_reference_stops_everything_at_once(page_server, leaks):
    server = await page_server(pages=None, delay=lambda n: 0.005)
    s = streampage.stream(server.url, concurrency=6)

    async with asyncio.timeout(HANG):
        first = await anext(s)
        await s.aclose()

    assert first.number >= 1
    leaks.assert_no_tasks()
    leaks.assert_sessions_closed()
    await assert_all_closed(server, leaks, wait=False)
    # a closed stream yields nothing more
    async with asyncio.timeout(HANG):
        assert [p async for p in s] == []


async def test_a_session_given_by_the_caller_is_used_and_left_open(page_server, leaks):
    server = await page_server(pages=10)

    async with aiohttp.ClientSession() as session:
        pages = await collect(streampage.stream(server.url, session=session, concurrency=3))
        assert not session.closed
        assert len(pages) == 10
        # and it still works for the caller
        async with session.get(server.url, params={"page": "2"}) as resp:
            assert resp.status == 200
    leaks.assert_no_tasks()

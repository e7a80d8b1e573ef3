"""Timeouts: connect, first byte, whole attempt. A slow server costs a timeout, never a hang."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from faults import (
    Fault,
    collect,
    collect_error,
    dead_port_with_hanging_connect,
    fast_retry,
    fault_servers,
)

import streampage
from streampage import PageNumber, Timeout


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


def numbers(pages):
    return Counter(p.number for p in pages)


async def test_a_server_that_never_answers_costs_one_timeout_per_attempt(fault_server):
    server = await fault_server(schedule={3: [Fault.hang()] * 5})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=3),
        concurrency=3,
        timeout=Timeout(first_byte=0.3),
        retry=fast_retry(attempts=2),
    )

    started = time.monotonic()
    _, exc = await collect_error(s)
    elapsed = time.monotonic() - started

    assert isinstance(exc, streampage.RequestError)
    assert exc.page == 3
    assert "page 3" in str(exc)
    assert "timed out" in str(exc)
    assert exc.attempts == 2
    assert server.attempts[3] == 2
    assert s.stats.retries == {"timeout": 1}
    assert 0.55 <= elapsed < 1.5


async def test_a_server_that_goes_silent_mid_body_times_out(fault_server):
    server = await fault_server(schedule={1: [Fault.hang_mid_body()] * 5})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=1),
        timeout=Timeout(first_byte=0.3),
        retry=fast_retry(attempts=2),
    )

    started = time.monotonic()
    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.RequestError)
    assert exc.page == 1 and "page 1" in str(exc)
    assert server.attempts[1] == 2
    assert time.monotonic() - started < 1.5


async def test_a_dripping_body_is_stopped_by_the_whole_attempt_deadline(fault_server):
    # one byte every 50 ms: the silence timeout (first_byte) never fires, and with no
    # minimum rate only a deadline on the whole attempt, body included, ends it
    server = await fault_server(schedule={1: [Fault.drip(0.05)] * 5})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=1),
        timeout=Timeout(first_byte=0.3, attempt=0.6, min_rate=None),
        retry=fast_retry(attempts=2),
    )

    started = time.monotonic()
    _, exc = await collect_error(s)
    elapsed = time.monotonic() - started

    assert isinstance(exc, streampage.RequestError)
    assert exc.page == 1 and "page 1" in str(exc)
    assert exc.attempts == 2
    assert s.stats.retries == {"timeout": 1}
    assert 1.1 <= elapsed < 2.5
    # each attempt really was dripping (so first_byte could not have ended it)
    assert all(h.bytes_written >= 5 for h in server.hits_for(1))


async def test_a_plain_number_bounds_the_whole_attempt(fault_server):
    server = await fault_server(schedule={1: [Fault.drip(0.05)] * 5})
    s = streampage.stream(
        server.url, pages=PageNumber(stop=1), timeout=0.4, retry=fast_retry(attempts=1)
    )

    started = time.monotonic()
    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.RequestError)
    assert time.monotonic() - started < 1.2


async def test_a_hang_once_is_retried_and_the_page_delivered_once(fault_server):
    server = await fault_server(schedule={2: [Fault.hang()]})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=4),
        concurrency=4,
        timeout=Timeout(attempt=0.3),
        retry=fast_retry(),
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 5))
    assert s.stats.retries == {"timeout": 1}
    assert server.attempts[2] == 2


async def test_a_hanging_page_does_not_stall_the_others(fault_server):
    server = await fault_server(schedule={5: [Fault.hang()] * 5}, delay=0.005)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=40),
        concurrency=4,
        timeout=Timeout(attempt=0.3),
        retry=fast_retry(attempts=2),
        on_error="skip",
    )

    started = time.monotonic()
    pages = await collect(s)

    assert numbers(pages) == Counter(n for n in range(1, 41) if n != 5)
    [failure] = s.failures
    assert failure.page == 5 and failure.status is None and failure.attempts == 2
    assert isinstance(failure.error, streampage.RequestError)
    assert time.monotonic() - started < 2.0


async def test_connect_timeout(fault_server):
    listener, fillers, port = dead_port_with_hanging_connect()
    try:
        s = streampage.stream(
            f"http://127.0.0.1:{port}/items",
            pages=PageNumber(stop=1),
            timeout=Timeout(connect=0.2),
            retry=fast_retry(attempts=2),
        )
        started = time.monotonic()
        _, exc = await collect_error(s)
        elapsed = time.monotonic() - started
    finally:
        for sock in [*fillers, listener]:
            sock.close()

    assert isinstance(exc, streampage.RequestError)
    assert exc.page == 1 and "page 1" in str(exc)
    assert exc.attempts == 2
    assert s.stats.retries == {"timeout": 1}
    assert 0.35 <= elapsed < 1.5


def test_timeouts_must_be_positive():
    with pytest.raises(streampage.ConfigurationError):
        Timeout(connect=0)
    with pytest.raises(streampage.ConfigurationError):
        Timeout(attempt=-1)
    with pytest.raises(streampage.ConfigurationError):
        streampage.stream("http://127.0.0.1/x", timeout=0)


async def test_the_attempt_deadline_covers_redirect_hops_too(fault_server):
    # four same-origin hops of 0.2 s each: one attempt of 0.8 s, over a 0.5 s deadline
    hop = Fault("redirect", code=302, location=lambda request: str(request.rel_url), delay=0.2)
    server = await fault_server(schedule={1: [hop] * 4})
    s = streampage.stream(
        server.url, pages=PageNumber(stop=1), timeout=Timeout(attempt=0.5), retry=False
    )

    started = time.monotonic()
    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.RequestError), repr(exc)
    assert "timed out" in str(exc)
    assert time.monotonic() - started < 0.8


async def test_a_small_body_that_keeps_arriving_is_not_silence(aiohttp_body_server):
    """first_byte is silence: a 200 KB body (read whole, its length known) that arrives in
    10 KB pieces every 0.1 s takes 2 s, four times first_byte, and is no timeout."""
    url = await aiohttp_body_server(size=200_000, piece=10_000, every=0.1)
    s = streampage.stream(
        url, pages=PageNumber(stop=1), timeout=Timeout(first_byte=0.5), retry=False
    )
    pages = await collect(s)
    assert [len(p.data["pad"]) for p in pages] == [200_000 - 12]
    assert s.stats.retries == {}


async def test_a_body_that_stops_arriving_is_silence(aiohttp_body_server):
    url = await aiohttp_body_server(size=200_000, piece=10_000, every=0.1, stop_after=3)
    s = streampage.stream(
        url, pages=PageNumber(stop=1), timeout=Timeout(first_byte=0.5), retry=False
    )
    started = time.monotonic()
    _, exc = await collect_error(s)
    assert isinstance(exc, streampage.RequestError)
    assert "no byte came for 0.5 s" in str(exc)
    assert time.monotonic() - started < 2.0


@pytest.fixture
async def aiohttp_body_server():
    from aiohttp import web

    runners = []

    async def make(size: int, piece: int, every: float, stop_after: int | None = None) -> str:
        body = b'{"pad":"' + b"x" * (size - 12) + b'"}'
        assert len(body) == size - 2

        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(body)
            await resp.prepare(request)
            for n, at in enumerate(range(0, len(body), piece)):
                if stop_after is not None and n >= stop_after:
                    await asyncio.sleep(30)
                await resp.write(body[at : at + piece])
                await asyncio.sleep(every)
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/"

    yield make
    for runner in runners:
        await runner.cleanup()

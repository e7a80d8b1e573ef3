"""max_page_bytes: a larger body is refused while it streams in, with an error naming the page."""

from __future__ import annotations

import asyncio
import inspect
import tracemalloc

import pytest
from faults import Fault, collect, collect_error, fast_retry, fault_servers

import streampage
from streampage import PageNumber


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


MiB = 1024 * 1024


def json_of_size(n: int) -> bytes:
    """A valid JSON document (a string) of exactly ``n`` bytes."""
    return b'"' + b"a" * (n - 2) + b'"'


async def ended(server) -> None:
    """Wait until every handler of the server has finished (its client went away)."""
    async with asyncio.timeout(5):
        while any(h.ended is None for h in server.hits):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_huge_chunked_body_is_refused_after_little_more_than_the_cap(fault_server):
    server = await fault_server(schedule={2: [Fault.oversized(100 * MiB)]})
    s = streampage.stream(
        server.url, pages=PageNumber(stop=3), concurrency=1, max_page_bytes=1 * MiB
    )

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        _, exc = await collect_error(s)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    await ended(server)

    assert isinstance(exc, streampage.ResponseTooLargeError)
    assert exc.page == 2
    assert "page 2" in str(exc)
    assert "max_page_bytes" in str(exc)
    written = server.hits_for(2)[0].bytes_written
    # what the server got out before the client hung up: the cap plus socket buffers, not 100 MB
    assert written < 16 * MiB, f"the server wrote {written / MiB:.1f} MiB"
    # memory (client and server of this process together) stays near the cap
    assert peak < 8 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
    # a page too large is a property of the page, not a transient fault: not retried
    assert server.attempts[2] == 1
    assert s.stats.retries == {}


async def test_a_content_length_over_the_cap_is_refused_before_the_body(fault_server):
    server = await fault_server(schedule={1: [Fault.oversized(100 * MiB, content_length=True)]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), max_page_bytes=1 * MiB)

    _, exc = await collect_error(s)
    await ended(server)

    assert isinstance(exc, streampage.ResponseTooLargeError)
    assert exc.page == 1 and "page 1" in str(exc)
    assert str(100 * MiB) in str(exc)
    assert server.hits_for(1)[0].bytes_written < 16 * MiB
    assert server.attempts[1] == 1


@pytest.mark.parametrize("send", [Fault.raw_body, Fault.chunked], ids=["content-length", "chunked"])
async def test_a_body_of_exactly_the_cap_is_accepted(fault_server, send):
    cap = 200_000
    server = await fault_server(schedule={1: [send(json_of_size(cap))]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), max_page_bytes=cap)

    [page] = await collect(s)

    assert len(page.data) == cap - 2


@pytest.mark.parametrize("send", [Fault.raw_body, Fault.chunked], ids=["content-length", "chunked"])
async def test_one_byte_over_the_cap_is_refused(fault_server, send):
    cap = 200_000
    server = await fault_server(schedule={1: [send(json_of_size(cap + 1))] * 5})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), max_page_bytes=cap)

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.ResponseTooLargeError)
    assert exc.page == 1
    assert server.attempts[1] == 1


async def test_an_oversized_page_is_a_failure_with_skip(fault_server):
    server = await fault_server(schedule={2: [Fault.oversized(10 * MiB)]})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=4),
        concurrency=2,
        max_page_bytes=MiB,
        on_error="skip",
        retry=fast_retry(),
    )

    pages = await collect(s)

    assert sorted(p.number for p in pages) == [1, 3, 4]
    [failure] = s.failures
    assert failure.page == 2 and failure.attempts == 1
    assert isinstance(failure.error, streampage.ResponseTooLargeError)
    assert s.stats.failed == 1


async def test_the_default_cap_is_8_mib(fault_server):
    default = inspect.signature(streampage.stream).parameters["max_page_bytes"].default
    assert default == 8 * MiB
    server = await fault_server(schedule={1: [Fault.oversized(8 * MiB + 1, content_length=True)]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1))

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.ResponseTooLargeError)
    assert str(8 * MiB) in str(exc)


def test_the_cap_must_be_positive():
    with pytest.raises(streampage.ConfigurationError):
        streampage.stream("http://127.0.0.1/x", max_page_bytes=0)


async def test_a_compressed_body_is_capped_by_its_decoded_size(fault_server):
    # 40 MiB of JSON that gzip shrinks to ~40 KiB: the Content-Length is far under the cap,
    # the body the client would hold is far over it
    bomb = Fault.gzip(json_of_size(40 * MiB))
    assert len(bomb.body) < MiB
    server = await fault_server(schedule={1: [bomb]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), max_page_bytes=MiB)

    error: BaseException | None = None
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            pages = await collect(s)
        except streampage.PageError as exc:
            error, pages = exc, []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 8 * MiB, f"peak traced memory {peak / MiB:.1f} MiB, cap 1 MiB"
    assert not pages, f"a page of {len(pages[0].data) / MiB:.0f} MiB went through a 1 MiB cap"
    assert isinstance(error, streampage.ResponseTooLargeError), repr(error)
    assert error.page == 1

"""Errors: each names its page, hides secrets, and nothing is ever dropped silently."""

from __future__ import annotations

import asyncio
import traceback

import pytest
from conftest import HANG, collect

import streampage
from streampage import (
    ConfigurationError,
    HTTPStatusError,
    PageError,
    PageNumber,
    RequestError,
    StreamPageError,
)


def everything_shown(error: BaseException) -> str:
    """What a user could ever see of an error: its traceback, message, chain and attributes."""
    parts = ["".join(traceback.format_exception(error)), repr(error)]
    parts += [repr(v) for v in vars(error).values()]
    return "\n".join(parts)


# ---------------------------------------------------------------------- HTTP status errors


@pytest.mark.parametrize(
    ("status", "retry"), [(400, True), (403, True), (410, True), (500, False), (503, False)]
)
async def test_non_2xx_page_raises_http_status_error(page_server, status, retry):
    server = await page_server(pages=10, fail={3: status})

    with pytest.raises(HTTPStatusError) as excinfo:
        await collect(
            streampage.stream(server.url, pages=PageNumber(stop=5), concurrency=2, retry=retry)
        )

    error = excinfo.value
    assert isinstance(error, PageError)
    assert isinstance(error, StreamPageError)
    assert error.page == 3
    assert error.status == status
    assert error.body_excerpt == f"page 3 failed with {status}"
    assert error.url.startswith(server.url)
    assert "page=3" in error.url
    assert "page 3" in str(error) and str(status) in str(error)


async def test_status_error_redacts_secret_params(page_server):
    server = await page_server(pages=10, fail={2: 500})

    with pytest.raises(HTTPStatusError) as excinfo:
        await collect(
            streampage.stream(
                server.url,
                pages=PageNumber(stop=3),
                params={"api_key": "s3cret", "q": "visible"},
                retry=False,
            )
        )

    error = excinfo.value
    assert server.queries[0]["api_key"] == ["s3cret"], "the secret must still be sent"
    assert "s3cret" not in str(error)
    assert "s3cret" not in error.url
    assert "s3cret" not in everything_shown(error)
    assert "api_key=REDACTED" in error.url
    assert "q=visible" in error.url


@pytest.mark.parametrize(
    "secret_url",
    [
        "{base}?token=t0ps3cret",
        "{base}?access_token=t0ps3cret&sort=asc",
        "http://user:t0ps3cret@{hostport}/items",
    ],
    ids=["token", "access_token", "password"],
)
async def test_secrets_in_the_url_itself_are_redacted(page_server, secret_url):
    server = await page_server(pages=10, fail={1: 403})
    hostport = server.url.split("/")[2]
    url = secret_url.format(base=server.url, hostport=hostport)

    with pytest.raises(HTTPStatusError) as excinfo:
        await collect(streampage.stream(url, pages=PageNumber(stop=2), concurrency=1))

    assert excinfo.value.status == 403
    assert "t0ps3cret" not in everything_shown(excinfo.value)


async def test_error_on_the_first_page_while_discovering_the_total(page_server):
    # the other pages wait for the first one's total: its failure must not leave them waiting
    server = await page_server(pages=10, fail={1: 500}, extra=lambda n: {"total_pages": 10})

    with pytest.raises(HTTPStatusError) as excinfo:
        await collect(
            streampage.stream(server.url, pages=PageNumber(total_pages="total_pages"), retry=False),
            within=5,
        )

    assert excinfo.value.page == 1


# ---------------------------------------------------------------------- no response at all


async def test_connection_refused_is_a_request_error_naming_the_page(dead_url):
    with pytest.raises(RequestError) as excinfo:
        await collect(
            streampage.stream(
                dead_url, pages=PageNumber(stop=3), params={"api_key": "s3cret"}, retry=False
            )
        )

    error = excinfo.value
    assert isinstance(error, PageError)
    assert error.page in (1, 2, 3)
    assert f"page {error.page}" in str(error)
    assert error.url.startswith(dead_url)
    assert "s3cret" not in everything_shown(error)


async def test_connection_refused_after_retries_is_still_a_request_error(dead_url):
    retry = streampage.RetryPolicy(attempts=3, backoff=0.005)

    with pytest.raises(RequestError) as excinfo:
        await collect(streampage.stream(dead_url, pages=PageNumber(stop=1), retry=retry))

    assert excinfo.value.page == 1
    assert excinfo.value.attempts == 3


async def test_connection_refused_on_the_first_page_of_an_open_ended_stream(dead_url):
    with pytest.raises(RequestError) as excinfo:
        await collect(streampage.stream(dead_url, concurrency=1, retry=False))

    assert excinfo.value.page == 1


async def test_a_page_that_takes_too_long_is_a_request_error(page_server):
    server = await page_server(pages=10)
    server.hold(2)

    with pytest.raises(RequestError) as excinfo:
        await collect(
            streampage.stream(
                server.url,
                pages=PageNumber(stop=3),
                timeout=0.2,
                retry=False,
                params={"token": "s3cret"},
            ),
            within=5,
        )

    assert excinfo.value.page == 2
    assert "timed out" in str(excinfo.value)
    assert "s3cret" not in everything_shown(excinfo.value)


# ---------------------------------------------------------------------- bad arguments


BAD_ARGUMENTS = {
    "concurrency-0": lambda url: streampage.stream(url, concurrency=0),
    "concurrency-negative": lambda url: streampage.stream(url, concurrency=-3),
    "concurrency-float": lambda url: streampage.stream(url, concurrency=2.5),
    "concurrency-bool": lambda url: streampage.stream(url, concurrency=True),
    "buffer-0": lambda url: streampage.stream(url, buffer=0),
    "window-0": lambda url: streampage.stream(url, ordered=True, window=0),
    "max-pages-0": lambda url: streampage.stream(url, max_pages=0),
    "timeout-0": lambda url: streampage.stream(url, timeout=0),
    "stop-before-start": lambda url: streampage.stream(url, pages=PageNumber(start=5, stop=1)),
    "total-items-without-size": lambda url: streampage.stream(
        url, pages=PageNumber(total_items="meta.total")
    ),
    "size-0": lambda url: streampage.stream(url, pages=PageNumber(size=0)),
    "not-a-paginator": lambda url: streampage.stream(url, pages=10),
    "ftp-url": lambda url: streampage.stream("ftp://x/y"),
    "not-a-url": lambda url: streampage.stream("not a url"),
    "no-host": lambda url: streampage.stream("http:///items"),
    "empty-url": lambda url: streampage.stream(""),
}


@pytest.mark.parametrize("make", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
async def test_bad_arguments_fail_at_once_before_any_request(page_server, make):
    server = await page_server(pages=5)

    with pytest.raises(ConfigurationError) as excinfo:
        make(server.url)

    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, StreamPageError)
    assert str(excinfo.value)
    await asyncio.sleep(0.01)
    assert server.requests == []


# ---------------------------------------------------------------------- nothing dropped


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize(
    ("failing", "concurrency", "slow"),
    [(1, 4, False), (17, 4, False), (17, 4, True), (60, 8, False), (33, 1, False)],
)
async def test_a_stream_ends_with_the_error_or_with_every_page(
    page_server, leaks, failing, concurrency, slow, ordered
):
    delay = (lambda n: 0.05 if n == failing else 0) if slow else None
    server = await page_server(pages=60, fail={failing: 502}, delay=delay)
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=60),
        concurrency=concurrency,
        ordered=ordered,
        retry=False,
    )
    received = []

    with pytest.raises(HTTPStatusError) as excinfo:
        async with asyncio.timeout(HANG), s:
            async for page in s:
                received.append(page.number)

    assert excinfo.value.page == failing
    assert failing not in received
    assert len(received) == len(set(received))
    if ordered:
        assert received == list(range(1, failing))
    # the error ended the stream: nothing of it runs on
    leaks.assert_no_tasks()
    leaks.assert_sessions_closed()


async def test_a_stream_that_raised_yields_nothing_more(page_server):
    server = await page_server(pages=10, fail={2: 403})
    s = streampage.stream(server.url, pages=PageNumber(stop=10), concurrency=1)

    async with asyncio.timeout(HANG), s:
        first = await anext(s)
        with pytest.raises(HTTPStatusError):
            await anext(s)
        with pytest.raises(StopAsyncIteration):
            await anext(s)

    assert first.number == 1


async def test_error_in_a_bare_async_for_ends_the_stream(page_server, leaks):
    server = await page_server(pages=None, fail={3: 403})
    received = []

    with pytest.raises(HTTPStatusError):
        async with asyncio.timeout(HANG):
            async for page in streampage.stream(server.url, concurrency=1):
                received.append(page.number)

    assert received == [1, 2]
    await leaks.wait_no_tasks()
    leaks.assert_sessions_closed()

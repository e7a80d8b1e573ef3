"""decode=: pages decoded and validated by msgspec; every failure is a DecodeError naming
the page and, for a wrong shape, msgspec's path to the offending field."""

from __future__ import annotations

import gc

import msgspec
import pytest
from conftest import collect

import streampage
from streampage import ConfigurationError, DecodeError, PageError, PageNumber, StreamPageError


class Item(msgspec.Struct):
    id: int
    name: str


class ItemsPage(msgspec.Struct):
    page: int
    items: list[Item]


async def test_pages_are_decoded_into_the_given_type(page_server):
    server = await page_server(pages=8)

    pages = await collect(
        streampage.stream(server.url, pages=PageNumber(stop=8), decode=ItemsPage, concurrency=3)
    )

    assert len(pages) == 8
    for page in pages:
        assert isinstance(page.data, ItemsPage)
        assert page.data.page == page.number
        assert [msgspec.to_builtins(i) for i in page.data.items] == server.items(page.number)


async def test_typed_decode_still_finds_the_end_at_an_empty_page(page_server):
    server = await page_server(pages=6)

    pages = await collect(streampage.stream(server.url, decode=ItemsPage, concurrency=4))

    assert sorted(p.number for p in pages) == [1, 2, 3, 4, 5, 6]


async def test_typed_decode_reads_a_total_from_a_struct(page_server):
    class Counted(msgspec.Struct):
        total_pages: int
        items: list[Item]

    server = await page_server(pages=40, extra=lambda n: {"total_pages": 4})

    pages = await collect(
        streampage.stream(server.url, pages=PageNumber(total_pages="total_pages"), decode=Counted)
    )

    assert sorted(p.number for p in pages) == [1, 2, 3, 4]


WRONG_ID = b'{"page": 3, "items": [{"id": 7, "name": "a"}, {"id": "x", "name": "b"}]}'
MISSING_ID = b'{"page": 3, "items": [{"name": "a"}]}'
NOT_AN_OBJECT = b'[{"id": 7, "name": "a"}]'


@pytest.mark.parametrize(
    ("body", "path"),
    [(WRONG_ID, "$.items[1].id"), (MISSING_ID, "$.items[0]"), (NOT_AN_OBJECT, "$")],
    ids=["wrong-type", "missing-field", "wrong-top-level"],
)
@pytest.mark.parametrize("ordered", [False, True])
async def test_wrong_shape_is_a_decode_error_with_page_and_path(page_server, body, path, ordered):
    server = await page_server(pages=10, raw={3: body})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=5),
        decode=ItemsPage,
        ordered=ordered,
        retry=False,
    )

    with pytest.raises(DecodeError) as excinfo:
        await collect(s)

    error = excinfo.value
    assert isinstance(error, PageError)
    assert isinstance(error, StreamPageError)
    assert error.page == 3
    assert error.path == path
    assert "page 3" in str(error)
    assert "page=3" in error.url


async def test_ordered_decode_error_comes_after_the_pages_before_it(page_server):
    server = await page_server(pages=10, raw={4: WRONG_ID})
    received = []

    with pytest.raises(DecodeError) as excinfo:
        s = streampage.stream(
            server.url, pages=PageNumber(stop=10), decode=ItemsPage, ordered=True, retry=False
        )
        async with s:
            async for page in s:
                received.append(page.number)

    assert excinfo.value.page == 4
    assert received == [1, 2, 3]


@pytest.mark.parametrize("decode", [None, ItemsPage], ids=["plain", "typed"])
@pytest.mark.parametrize(
    "body",
    [
        b'{"page": 2, "items": [{"id": 1, "name": "a"}',  # cut short
        b"<html>Service Unavailable</html>",
        b"",
    ],
    ids=["truncated", "html", "empty-body"],
)
async def test_invalid_json_is_a_decode_error_without_a_path(page_server, body, decode):
    server = await page_server(pages=5, raw={2: body})

    with pytest.raises(DecodeError) as excinfo:
        await collect(
            streampage.stream(server.url, pages=PageNumber(stop=3), decode=decode, retry=False)
        )

    assert excinfo.value.page == 2
    assert excinfo.value.path is None
    assert "page 2" in str(excinfo.value)


@pytest.mark.parametrize("decode", [None, ItemsPage], ids=["plain", "typed"])
async def test_invalid_utf8_in_a_json_string_is_a_decode_error(page_server, decode):
    body = b'{"page": 2, "items": [{"id": 1, "name": "caf\xe9 \xff"}]}'
    server = await page_server(pages=5, raw={2: body})

    with pytest.raises(DecodeError) as excinfo:
        await collect(
            streampage.stream(server.url, pages=PageNumber(stop=3), decode=decode, retry=False)
        )

    assert excinfo.value.page == 2
    assert excinfo.value.path is None


async def test_decode_error_does_not_show_secrets(page_server):
    server = await page_server(pages=5, raw={1: b"not json"})

    with pytest.raises(DecodeError) as excinfo:
        await collect(
            streampage.stream(
                server.url,
                pages=PageNumber(stop=2),
                params={"api_key": "s3cret"},
                decode=ItemsPage,
                retry=False,
            )
        )

    assert "s3cret" not in str(excinfo.value)
    assert "s3cret" not in excinfo.value.url
    assert "REDACTED" in excinfo.value.url


async def test_decode_error_with_the_default_retry_policy(page_server):
    # A body that does not decode is fetched RetryPolicy.decode_attempts (2) times in all,
    # then fails as a DecodeError, like with retry=False.
    server = await page_server(pages=10, raw={3: WRONG_ID})

    with pytest.raises(DecodeError) as excinfo:
        await collect(streampage.stream(server.url, pages=PageNumber(stop=5), decode=ItemsPage))

    assert excinfo.value.page == 3
    assert excinfo.value.path == "$.items[1].id"
    assert excinfo.value.attempts == 2
    assert server.requests.count(3) == 2


@pytest.mark.parametrize(
    "decode", [5, "ItemsPage", [Item], {"items": Item}], ids=["int", "str", "list", "dict"]
)
async def test_a_decode_that_is_not_a_type_is_a_configuration_error(page_server, decode):
    server = await page_server(pages=3)

    # The error is not kept (pytest.raises would keep it, with its traceback's frames):
    # whatever the failed call built half-way must be collected here, inside this test.
    try:
        streampage.stream(server.url, decode=decode)
    except Exception as exc:
        raised: type[Exception] | None = type(exc)
    else:
        raised = None
    gc.collect()

    assert raised is not None and issubclass(raised, ConfigurationError), raised
    assert server.requests == []

"""PageNumber: totals read from the first response, finding the end, query parameters."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from conftest import HANG, collect

import streampage
from streampage import DecodeError, Header, HTTPStatusError, PageNumber


def numbers(pages):
    return sorted(p.number for p in pages)


def first_page_alone(server) -> bool:
    """Did page 1 complete at the server before any other page was even requested?"""
    end_of_first = server.events.index(("end", 1))
    others = [i for i, (kind, n) in enumerate(server.events) if kind == "start" and n != 1]
    return all(i > end_of_first for i in others)


# ---------------------------------------------------------------------- a known total


@pytest.mark.parametrize("ordered", [False, True])
async def test_total_pages_from_the_body(page_server, ordered):
    # the server holds data past the total: the total, not the data, decides the end
    server = await page_server(
        pages=40, extra=lambda n: {"total_pages": 17}, delay=lambda n: 0.02 if n == 1 else 0
    )
    pages_ = PageNumber(total_pages="total_pages")

    pages = await collect(
        streampage.stream(server.url, pages=pages_, concurrency=8, ordered=ordered)
    )

    assert numbers(pages) == list(range(1, 18))
    assert Counter(server.requests) == Counter(range(1, 18)), "fetched outside 1..total"
    assert first_page_alone(server)


async def test_total_items_from_a_dotted_path_with_size(page_server):
    # 100 items at 10 per page: 10 pages
    server = await page_server(
        pages=10, per_page=10, extra=lambda n: {"meta": {"total": 100}}, delay=lambda n: 0.01
    )
    pages_ = PageNumber(total_items="meta.total", size=10)

    pages = await collect(streampage.stream(server.url, pages=pages_, concurrency=6))

    assert numbers(pages) == list(range(1, 11))
    assert sorted(server.requests) == list(range(1, 11))
    assert all(q["per_page"] == ["10"] for q in server.queries)
    assert first_page_alone(server)


async def test_total_items_from_a_response_header(page_server):
    server = await page_server(
        pages=9, per_page=5, headers=lambda n: {"X-Total-Count": "45"}, delay=lambda n: 0.01
    )
    pages_ = PageNumber(total_items=Header("X-Total-Count"), size=5)

    pages = await collect(streampage.stream(server.url, pages=pages_, concurrency=6))

    assert numbers(pages) == list(range(1, 10))  # ceil(45 / 5)
    assert sorted(server.requests) == list(range(1, 10))
    assert first_page_alone(server)


async def test_total_pages_from_a_function_of_the_page(page_server):
    server = await page_server(pages=40, extra=lambda n: {"n_pages": "6"})
    pages_ = PageNumber(total_pages=lambda page: page.data["n_pages"])

    pages = await collect(streampage.stream(server.url, pages=pages_, concurrency=4))

    assert numbers(pages) == list(range(1, 7))


async def test_first_page_is_fetched_alone_even_when_it_is_slow(page_server):
    server = await page_server(
        pages=20, extra=lambda n: {"total_pages": 20}, delay=lambda n: 0.15 if n == 1 else 0
    )

    pages = await collect(
        streampage.stream(server.url, pages=PageNumber(total_pages="total_pages"), concurrency=10)
    )

    assert numbers(pages) == list(range(1, 21))
    assert server.requests[0] == 1
    assert first_page_alone(server)


async def test_total_present_only_on_the_first_page(page_server):
    server = await page_server(pages=40, extra=lambda n: {"total_pages": 7} if n == 1 else {})

    pages = await collect(
        streampage.stream(server.url, pages=PageNumber(total_pages="total_pages"), concurrency=5)
    )

    assert numbers(pages) == list(range(1, 8))
    assert sorted(server.requests) == list(range(1, 8))


async def test_a_null_total_falls_back_to_stopping_at_an_empty_page(page_server):
    # the field is there and says "unknown": the end is found by looking
    server = await page_server(pages=9, extra=lambda n: {"total_pages": None})

    pages = await collect(
        streampage.stream(server.url, pages=PageNumber(total_pages="total_pages"), concurrency=4)
    )

    assert numbers(pages) == list(range(1, 10))


async def test_a_total_field_absent_from_the_first_page_is_a_configuration_error(page_server):
    # a field that is not there at all is a wrong name, not an unknown total: falling back
    # would end the data wherever the search happened to end it, and call it complete
    server = await page_server(pages=9)

    with pytest.raises(streampage.ConfigurationError) as excinfo:
        await collect(
            streampage.stream(
                server.url, pages=PageNumber(total_pages="total_pages"), concurrency=4
            )
        )

    assert "'total_pages'" in str(excinfo.value)
    assert "page, items" in str(excinfo.value)  # the keys that are there


async def test_a_total_header_absent_from_the_first_response_is_a_configuration_error(
    page_server,
):
    server = await page_server(pages=6, past_end="404")  # no X-Total-Count header at all
    pages_ = PageNumber(total_items=Header("X-Total-Count"), size=3)

    with pytest.raises(streampage.ConfigurationError, match="no X-Total-Count header"):
        await collect(streampage.stream(server.url, pages=pages_, concurrency=4))


@pytest.mark.parametrize("retry", [False, True])
async def test_a_total_that_is_not_a_number_is_a_decode_error(page_server, retry):
    # also when the first page is fetched again (a DecodeError is retried by default): the
    # garbage total must not be ignored on the second attempt
    server = await page_server(pages=5, extra=lambda n: {"total_pages": "lots"})

    with pytest.raises(DecodeError) as excinfo:
        await collect(
            streampage.stream(server.url, pages=PageNumber(total_pages="total_pages"), retry=retry)
        )

    assert excinfo.value.page == 1
    assert "total_pages" in str(excinfo.value)


async def test_stop_and_start_select_an_inclusive_range(page_server):
    server = await page_server(pages=40)

    pages = await collect(
        streampage.stream(server.url, pages=PageNumber(start=5, stop=12), concurrency=3)
    )

    assert numbers(pages) == list(range(5, 13))
    assert sorted(server.requests) == list(range(5, 13))


async def test_known_range_delivers_empty_pages_inside_it(page_server):
    # with stop= the end is known: an empty page inside the range is data, not the end
    server = await page_server(pages=3)

    pages = await collect(streampage.stream(server.url, pages=PageNumber(stop=6)))

    assert numbers(pages) == list(range(1, 7))
    assert [p.data["items"] for p in pages if p.number > 3] == [[], [], []]


# ---------------------------------------------------------------------- an unknown total


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize(
    ("shape", "past_end"),
    [("object", "empty"), ("list", "empty"), ("object", "404"), ("list", "404")],
)
async def test_unknown_total_stops_at_the_end_of_the_data(page_server, shape, past_end, ordered):
    server = await page_server(pages=23, shape=shape, past_end=past_end)

    pages = await collect(
        streampage.stream(server.url, pages=PageNumber(start=1), concurrency=8, ordered=ordered)
    )

    assert numbers(pages) == list(range(1, 24))
    assert len(pages) == 23
    assert all(p.data == server.body(p.number) for p in pages)
    # the stream fetched ahead past the end, and yielded none of it
    assert max(server.requests) > 23


async def test_end_found_while_later_pages_are_still_in_flight(page_server):
    # pages past the end answer slowly: they are in flight when the end is found, and the
    # stream ends without waiting for them
    server = await page_server(pages=5, delay=lambda n: 2.0 if n > 6 else 0)
    loop = asyncio.get_running_loop()
    started = loop.time()

    pages = await collect(streampage.stream(server.url, concurrency=10))

    assert numbers(pages) == [1, 2, 3, 4, 5]
    assert max(server.requests) > 6
    assert loop.time() - started < 1.0, "the stream waited for requests past the end"


@pytest.mark.parametrize("ordered", [False, True])
async def test_an_error_from_a_page_past_the_end_is_discarded(page_server, ordered):
    # Some APIs answer 400 "page out of range" past the data. Here page 6 is the empty page
    # that ends the data; pages 7 and 8 fail. The consumer is slow to ask, so by the time it
    # reaches those errors the end is known: they lie past it and must not surface.
    server = await page_server(pages=5, fail={7: 400, 8: 400})
    s = streampage.stream(server.url, concurrency=8, ordered=ordered, retry=False)
    received = []

    async with asyncio.timeout(HANG), s:
        async for page in s:
            received.append(page.number)
            if len(received) == 1:
                # every response of the first round is in before the consumer asks again
                await server.wait_for(lambda: s.stats.requests >= 8)

    assert sorted(received) == [1, 2, 3, 4, 5]
    assert {6, 7, 8} <= set(server.completed)


async def test_404_on_the_first_page_is_an_error_not_an_empty_stream(page_server):
    server = await page_server(pages=0, past_end="404")

    with pytest.raises(HTTPStatusError) as excinfo:
        await collect(streampage.stream(server.url, pages=PageNumber(start=1), concurrency=4))

    assert excinfo.value.page == 1
    assert excinfo.value.status == 404


async def test_404_inside_a_known_range_is_an_error(page_server):
    server = await page_server(pages=3, past_end="404")

    with pytest.raises(HTTPStatusError) as excinfo:
        await collect(streampage.stream(server.url, pages=PageNumber(stop=6), ordered=True))

    assert excinfo.value.page == 4
    assert excinfo.value.status == 404


def has_more_until(last: int):
    return lambda n: {"has_more": n < last}


@pytest.mark.parametrize("ordered", [False, True])
async def test_has_more_false_ends_the_data_and_that_page_is_delivered(page_server, ordered):
    # past page 7 the server answers empty pages that also say has_more: false; page 7 is
    # slow so that requests past it are made (and answered) before it arrives
    server = await page_server(
        pages=7, extra=has_more_until(7), delay=lambda n: 0.1 if n == 7 else 0
    )
    pages_ = PageNumber(start=1, has_more="has_more")

    pages = await collect(
        streampage.stream(server.url, pages=pages_, concurrency=6, ordered=ordered)
    )

    assert numbers(pages) == list(range(1, 8))
    last = next(p for p in pages if p.number == 7)
    assert last.data["has_more"] is False
    assert max(server.requests) > 7


@pytest.mark.parametrize("ordered", [False, True])
async def test_has_more_false_ends_the_data_even_if_later_pages_hold_records(page_server, ordered):
    # a server that keeps answering records past the end (it clamps, or ignores the page
    # number): only has_more tells the end. Later pages answer slowly, so they are in flight
    # when page 7 says has_more: false.
    server = await page_server(
        pages=None, extra=has_more_until(7), delay=lambda n: 0.1 if n > 7 else 0
    )
    pages_ = PageNumber(start=1, has_more="has_more")

    pages = await collect(
        streampage.stream(server.url, pages=pages_, concurrency=6, ordered=ordered)
    )

    assert numbers(pages) == list(range(1, 8))
    assert max(server.requests) > 7


@pytest.mark.parametrize("ordered", [False, True])
async def test_has_more_false_wins_over_pages_past_it_that_answer_first(page_server, ordered):
    # Page 7 (has_more: false) is slow; pages past it hold records and answer at once.
    # "Pages fetched past it are cancelled or discarded, never yielded."
    server = await page_server(
        pages=None, extra=has_more_until(7), delay=lambda n: 0.2 if n == 7 else 0
    )
    pages_ = PageNumber(start=1, has_more="has_more")

    pages = await collect(
        streampage.stream(server.url, pages=pages_, concurrency=4, ordered=ordered)
    )

    assert numbers(pages) == list(range(1, 8))


async def test_max_pages_wins_over_has_more_true(page_server):
    server = await page_server(pages=None, extra=lambda n: {"has_more": True})
    pages_ = PageNumber(start=1, has_more="has_more")

    pages = await collect(streampage.stream(server.url, pages=pages_, concurrency=4, max_pages=5))

    assert numbers(pages) == [1, 2, 3, 4, 5]
    assert max(server.requests) <= 5


@pytest.mark.parametrize(
    ("paginator", "expected_last"),
    [
        (PageNumber(stop=20), 6),
        (PageNumber(stop=4), 4),
        (PageNumber(start=3, stop=20), 8),
        (PageNumber(total_pages="total_pages"), 6),
    ],
)
async def test_max_pages_caps_every_mode(page_server, paginator, expected_last):
    server = await page_server(pages=30, extra=lambda n: {"total_pages": 30})

    pages = await collect(
        streampage.stream(server.url, pages=paginator, concurrency=3, max_pages=6)
    )

    first = paginator.start
    assert numbers(pages) == list(range(first, expected_last + 1))
    assert max(server.requests) <= expected_last


async def test_items_path_tells_an_empty_page(page_server):
    # every page has a non-empty "tags" list, so the default emptiness test cannot see the
    # end; items="items" names the list of records
    server = await page_server(pages=4, extra=lambda n: {"tags": ["x"]})

    pages = await collect(
        streampage.stream(server.url, pages=PageNumber(items="items"), concurrency=3)
    )

    assert numbers(pages) == [1, 2, 3, 4]


# ---------------------------------------------------------------------- query parameters


async def test_page_number_goes_into_the_named_query_parameter(page_server):
    server = await page_server(pages=40, param="p")

    pages = await collect(streampage.stream(server.url, pages=PageNumber(param="p", stop=4)))

    assert numbers(pages) == [1, 2, 3, 4]
    assert sorted(int(q["p"][0]) for q in server.queries) == [1, 2, 3, 4]
    assert all("page" not in q for q in server.queries)


@pytest.mark.parametrize(
    ("paginator", "expected"),
    [
        (PageNumber(stop=2, size=25), {"per_page": ["25"]}),
        (PageNumber(stop=2, size=25, size_param="limit"), {"limit": ["25"]}),
        (PageNumber(stop=2), {}),
    ],
)
async def test_page_size_goes_into_the_size_parameter(page_server, paginator, expected):
    server = await page_server(pages=40)

    await collect(streampage.stream(server.url, pages=paginator))

    for query in server.queries:
        assert {k: v for k, v in query.items() if k != "page"} == expected


async def test_params_merge_with_the_urls_query_and_are_not_mutated(page_server):
    server = await page_server(pages=40)
    params = {"q": "shoes", "limit_to": 3}
    before = dict(params)

    await collect(
        streampage.stream(
            server.url + "?sort=asc&lang=en",
            pages=PageNumber(stop=3, size=10),
            params=params,
            concurrency=2,
        )
    )

    assert params == before
    assert sorted(int(q["page"][0]) for q in server.queries) == [1, 2, 3]
    for query in server.queries:
        assert query["sort"] == ["asc"]
        assert query["lang"] == ["en"]
        assert query["q"] == ["shoes"]
        assert query["limit_to"] == ["3"]
        assert query["per_page"] == ["10"]
        assert len(query["page"]) == 1


async def test_params_dict_is_not_mutated_by_the_page_parameter(page_server):
    server = await page_server(pages=40)
    params = {"page": "this-is-mine"}

    s = streampage.stream(server.url, pages=PageNumber(stop=2), params=params)
    await collect(s)

    assert params == {"page": "this-is-mine"}
    assert sorted(q["page"] for q in server.queries) == [["1"], ["2"]]

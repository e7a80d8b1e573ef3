"""Offset, Cursor, NextURL and LinkHeader paginators, each against a real aiohttp.web server
that implements its pagination style (on 127.0.0.1, and 127.0.0.2 as another origin).

Every server records what it saw: the page key of each request (offset, page index), its
path, query and headers, and the handlers in flight, so that tests can check what was
requested (each item exactly once, nothing past the end, sequential walks really sequential,
fan-out really parallel) and what crossed to another origin.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from aiohttp import web
from conftest import HANG, collect, item

import streampage

# ---------------------------------------------------------------------- servers


@dataclass
class Seen:
    """One request as the server saw it."""

    key: Any
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lowercased


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None):
    return web.Response(
        status=status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers=dict(headers or {}),
    )


class Api:
    """A real HTTP server; subclasses say which page a request asks for (``key``) and what it
    answers (``respond``). ``delay(key)`` is seconds to wait before answering."""

    def __init__(self, *, host: str = "127.0.0.1", delay: Callable[[Any], float] | None = None):
        self.host = host
        self.delay = delay
        self.seen: list[Seen] = []
        #: ("start" | "end", key) in order
        self.events: list[tuple[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.origin = ""
        self._runner: web.ServerRunner | None = None

    # --- to override
    def key(self, request: web.BaseRequest) -> Any:
        return None

    def respond(self, request: web.BaseRequest, key: Any) -> web.StreamResponse:
        raise NotImplementedError

    # --- observation
    @property
    def keys(self) -> list[Any]:
        """Page keys in request arrival order."""
        return [s.key for s in self.seen]

    def alone(self, key: Any) -> bool:
        """Did the request for ``key`` complete before any other request started?"""
        end = self.events.index(("end", key))
        return all(
            i > end for i, (kind, k) in enumerate(self.events) if kind == "start" and k != key
        )

    def strictly_sequential(self) -> bool:
        """Did every request start only after the previous one had been answered?"""
        kinds = [kind for kind, _ in self.events]
        return kinds == ["start", "end"] * (len(kinds) // 2)

    # --- serving
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            key = self.key(request)
        except (KeyError, ValueError) as exc:
            return web.Response(status=400, text=f"bad request: {exc!r}")
        self.seen.append(
            Seen(
                key=key,
                path=request.path,
                query={k: request.query.getall(k) for k in request.query},
                headers={k.lower(): v for k, v in request.headers.items()},
            )
        )
        self.events.append(("start", key))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            seconds = self.delay(key) if self.delay is not None else 0.0
            if seconds:
                await asyncio.sleep(seconds)
            return self.respond(request, key)
        finally:
            self.in_flight -= 1
            self.events.append(("end", key))

    async def start(self) -> None:
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"http://{self.host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Api], Awaitable[Any]]]:
    """``api = await serve(SomeApi(...))`` starts the server; all are stopped after the test."""
    started: list[Api] = []

    async def start(api: Api) -> Any:
        await api.start()
        started.append(api)
        return api

    yield start
    for api in started:
        await api.stop()


def nested(path: str, value: Any) -> dict[str, Any]:
    """``nested("a.b", 1) == {"a": {"b": 1}}``"""
    head, _, rest = path.partition(".")
    return {head: nested(rest, value) if rest else value}


class OffsetApi(Api):
    """``/items?offset=O&limit=L`` over records ``0..total-1``.

    ``total_in``: where the total is announced (None, "body", "meta" (``meta.total``),
    "header" (``X-Total-Count``)). ``past_end``: what an offset at or past ``total`` answers:
    "empty", "404", or "records" (a quirky server that keeps answering full pages, of
    phantom records, up to offset ``phantom``; empty pages past that).
    ``body(records, offset)`` builds a custom body.
    """

    def __init__(
        self,
        total: int = 95,
        *,
        shape: str = "object",
        total_in: str | None = None,
        past_end: str = "empty",
        param: str = "offset",
        limit_param: str = "limit",
        phantom: int = 200,
        has_more: bool = False,
        body: Callable[[list[Any], int], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.total = total
        self.phantom = phantom
        self.shape = shape
        self.total_in = total_in
        self.past_end = past_end
        self.param = param
        self.limit_param = limit_param
        self.has_more = has_more
        self.body = body

    @property
    def url(self) -> str:
        return f"{self.origin}/items"

    def key(self, request: web.BaseRequest) -> int:
        return int(request.query[self.param])

    def respond(self, request: web.BaseRequest, offset: int) -> web.StreamResponse:
        limit = int(request.query[self.limit_param])
        if limit < 1 or offset < 0:
            return web.Response(status=400, text="bad offset or limit")
        headers = {"X-Total-Count": str(self.total)} if self.total_in == "header" else {}
        if offset >= self.total and self.past_end == "404":
            return web.Response(status=404, text="offset out of range")
        if offset >= self.total and self.past_end == "records":
            records = [item(i) for i in range(offset, min(offset + limit, self.phantom))]
        else:
            records = [item(i) for i in range(offset, min(offset + limit, self.total))]
        if self.body is not None:
            return json_response(self.body(records, offset), headers=headers)
        if self.shape == "list":
            return json_response(records, headers=headers)
        body: dict[str, Any] = {"items": records}
        if self.total_in == "body":
            body["total"] = self.total
        elif self.total_in == "meta":
            body["meta"] = {"total": self.total, "limit": limit}
        if self.has_more:
            body["has_more"] = offset + limit < self.total
        return json_response(body, headers=headers)


def page_items(page: int, per_page: int) -> list[dict[str, Any]]:
    first = (page - 1) * per_page
    return [item(i) for i in range(first, first + per_page)]


class CursorApi(Api):
    """Pages ``1..pages`` of ``per_page`` records; page k>1 is asked for with an opaque token,
    which page k-1 gives in ``field`` (a dotted path). The last page ends with ``end``
    ("missing", "null" or "empty"). ``loop={k: j}``: page k gives the token of page j instead.
    ``initial``: the token page 1 must be asked for with (None: no cursor parameter at all).
    """

    def __init__(
        self,
        pages: int = 6,
        per_page: int = 4,
        *,
        param: str = "cursor",
        field: str = "next_cursor",
        end: str = "null",
        loop: Mapping[int, int] | None = None,
        initial: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pages = pages
        self.per_page = per_page
        self.param = param
        self.field = field
        self.end = end
        self.loop = dict(loop or {})
        self.initial = initial
        self.by_token = {self.token(k): k for k in range(2, pages + 1)}
        if initial is not None:
            self.by_token[initial] = 1

    @property
    def url(self) -> str:
        return f"{self.origin}/events"

    @staticmethod
    def token(k: int) -> str:
        return f"c{(k * 7919) % 100003:x}Z=="

    def key(self, request: web.BaseRequest) -> int:
        if self.param not in request.query:
            if self.initial is not None:
                raise KeyError(f"{self.param} (the initial cursor) is missing")
            return 1
        (value,) = request.query.getall(self.param)
        return self.by_token[value]

    def respond(self, request: web.BaseRequest, k: int) -> web.StreamResponse:
        body: dict[str, Any] = {"items": page_items(k, self.per_page)}
        if k in self.loop:
            body |= nested(self.field, self.token(self.loop[k]))
        elif k < self.pages:
            body |= nested(self.field, self.token(k + 1))
        elif self.end == "null":
            body |= nested(self.field, None)
        elif self.end == "empty":
            body |= nested(self.field, "")
        return json_response(body)


class NextApi(Api):
    """Pages ``1..pages``; each body's ``next`` holds the URL of the next page, in ``style``:
    "absolute", "root" (``/api/items?page=n``), "query" (``?page=n``) or "path" (pages at
    ``/api/items/n``, next is ``../items/n``). ``links={k: url}`` overrides page k's next."""

    def __init__(
        self,
        pages: int = 5,
        per_page: int = 3,
        *,
        style: str = "absolute",
        field: str = "next",
        end: str = "null",
        links: Mapping[int, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pages = pages
        self.per_page = per_page
        self.style = style
        self.field = field
        self.end = end
        self.links = dict(links or {})

    @property
    def url(self) -> str:
        return f"{self.origin}/api/items/1" if self.style == "path" else f"{self.origin}/api/items"

    def page_url(self, k: int) -> str:
        """The absolute URL of page k, as the client should request it."""
        return f"{self.origin}/api/items/{k}" if self.style == "path" else self.absolute(k)

    def absolute(self, k: int) -> str:
        return f"{self.origin}/api/items?page={k}"

    def key(self, request: web.BaseRequest) -> int:
        if "page" in request.query:
            return int(request.query["page"])
        last = request.path.rsplit("/", 1)[-1]
        return int(last) if last.isdigit() else 1

    def next_link(self, k: int) -> str:
        n = k + 1
        return {
            "absolute": self.absolute(n),
            "root": f"/api/items?page={n}",
            "query": f"?page={n}",
            "path": f"../items/{n}",
        }[self.style]

    def respond(self, request: web.BaseRequest, k: int) -> web.StreamResponse:
        body: dict[str, Any] = {"items": page_items(k, self.per_page)}
        if k in self.links:
            body |= nested(self.field, self.links[k])
        elif k < self.pages:
            body |= nested(self.field, self.next_link(k))
        elif self.end == "null":
            body |= nested(self.field, None)
        elif self.end == "empty":
            body |= nested(self.field, "")
        return json_response(body)


class GitHubApi(Api):
    """A GitHub-style list endpoint: ``/repos/items?per_page=P&page=N`` answers a bare list
    of records, and a ``Link`` header with next/last (and first/prev past page 1) whose URLs
    are the request's URL with ``page`` replaced (other parameters kept).

    ``style``: "github" (absolute URLs, plain formatting), "tricky" (relative URLs, links
    in shuffled order, quoted titles holding ',' and ';', unquoted rel tokens, odd spacing,
    and ``rel="next last"`` on the second-to-last page), "opaque" (each URL also carries a
    non-numeric per-page signature, so next and last differ in two parameters), or "none"
    (no Link header ever). ``link(request, page, last)`` overrides the header entirely (a
    list: one Link header line each).
    """

    def __init__(
        self,
        total: int = 47,
        *,
        default_per_page: int = 30,
        style: str = "github",
        link: Callable[[web.BaseRequest, int, int], str | list[str] | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.total = total
        self.default_per_page = default_per_page
        self.style = style
        self.link = link

    @property
    def url(self) -> str:
        return f"{self.origin}/repos/items"

    def last(self, per_page: int) -> int:
        return max(1, math.ceil(self.total / per_page))

    def key(self, request: web.BaseRequest) -> int:
        return int(request.query.get("page", "1"))

    def page_link(self, request: web.BaseRequest, page: int, *, absolute: bool = True) -> str:
        """The request's own URL with ``page`` replaced (added last if absent), written raw:
        decoded values, so that a ',' or ';' in a parameter appears literally in the link."""
        pairs = [(k, v) for k, v in request.query.items() if k not in ("page", "sig")]
        pairs.append(("page", str(page)))
        if self.style == "opaque":
            pairs.append(("sig", f"s{page * 2654435761 % 2**32:08x}"))
        query = "&".join(f"{k}={v}" for k, v in pairs)
        return f"{self.origin if absolute else ''}{request.path}?{query}"

    def links(self, request: web.BaseRequest, page: int, last: int) -> str | list[str] | None:
        if self.link is not None:
            return self.link(request, page, last)
        if self.style == "none":
            return None
        relative = self.style == "tricky"

        def u(n: int) -> str:
            return self.page_link(request, n, absolute=not relative)

        if self.style == "tricky":
            parts = []
            if page == last - 1:
                parts.append(f'<{u(last)}>;rel="next last"; title="the end; almost, yes"')
            elif page < last:
                parts.append(f'<{u(last)}>; rel="last"; title="Last page; the end, really"')
                parts.append(f'<{u(page + 1)}> ;  rel="next" ; title="next, please; now"')
            if page > 1:
                parts.append(f"<{u(1)}>; rel=first")
                parts.append(f'<{u(page - 1)}>; title="back, one; page"; rel=prev')
            return " , ".join(parts) or None
        parts = []
        if page < last:
            parts.append(f'<{u(page + 1)}>; rel="next"')
            parts.append(f'<{u(last)}>; rel="last"')
        if page > 1:
            parts.append(f'<{u(1)}>; rel="first"')
            parts.append(f'<{u(page - 1)}>; rel="prev"')
        return ", ".join(parts) or None

    def respond(self, request: web.BaseRequest, page: int) -> web.StreamResponse:
        per_page = int(request.query.get("per_page", str(self.default_per_page)))
        last = self.last(per_page)
        first = (page - 1) * per_page
        records = [item(i) for i in range(first, min(first + per_page, self.total))]
        header = self.links(request, page, last)
        response = json_response(records)
        for value in [header] if isinstance(header, str) else header or []:
            response.headers.add("Link", value)
        return response


# ---------------------------------------------------------------------- helpers


def ids(pages: list[streampage.Page[Any]]) -> list[int]:
    """Record ids in the order the pages were yielded (bare lists or ``{"items": [...]}``)."""
    out = []
    for page in pages:
        records = page.data if isinstance(page.data, list) else page.data["items"]
        out.extend(r["id"] for r in records)
    return out


def numbers(pages: list[streampage.Page[Any]]) -> list[int]:
    return [p.number for p in pages]


async def walk(
    s: streampage.Stream[Any], within: float = HANG
) -> tuple[list[streampage.Page[Any]], BaseException | None]:
    """The pages a stream yields before it ends or raises, and what it raised (a PageError)."""
    pages: list[streampage.Page[Any]] = []
    error: BaseException | None = None
    async with asyncio.timeout(within):
        try:
            async with s:
                async for page in s:
                    pages.append(page)
        except streampage.PageError as exc:
            error = exc
    return pages, error


def pagination_error(error: BaseException | None) -> BaseException:
    assert error is not None, "the stream ended without raising PaginationError"
    assert isinstance(error, streampage.PaginationError), f"raised {error!r}"
    assert isinstance(error, streampage.PageError)
    return error


SECRETS = {
    "Authorization": "Bearer SEKRET-AUTH",
    "X-Api-Key": "SEKRET-APIKEY",
    "Cookie": "session=SEKRET-COOKIE",
    "X-Tenant": "SEKRET-MARKED",  # secret only because the stream is told so (secret_headers=)
}
PUBLIC = {"X-Trace": "public-trace"}


def secrets_in(seen: Seen) -> set[str]:
    return {k for k, v in SECRETS.items() if seen.headers.get(k.lower()) == v}


def test_the_new_names_are_exported():
    for name in ("Offset", "Cursor", "NextURL", "LinkHeader", "PaginationError"):
        assert name in streampage.__all__
        assert hasattr(streampage, name)
    assert issubclass(streampage.PaginationError, streampage.PageError)


# ---------------------------------------------------------------------- Offset


@pytest.mark.parametrize("ordered", [False, True])
async def test_offset_known_stop_fetches_exactly_the_range(serve, ordered):
    # the server holds more than stop: stop, not the data, decides the end
    api = await serve(OffsetApi(total=200, delay=lambda o: 0.01))
    pager = streampage.Offset(limit=10, stop=95)

    pages = await collect(streampage.stream(api.url, pages=pager, concurrency=6, ordered=ordered))

    assert sorted(numbers(pages)) == list(range(1, 11))
    assert sorted(api.keys) == list(range(0, 100, 10)), "fetched outside offsets 0..stop"
    assert all(p.response.url.query["offset"] == str((p.number - 1) * 10) for p in pages)
    got = ids(pages)
    assert Counter(got) == Counter(range(100)) or Counter(got) == Counter(range(95))
    assert all(s.query["limit"] == ["10"] for s in api.seen if s.key < 90)
    assert api.max_in_flight > 1, "a known range should be fetched concurrently"
    if ordered:
        assert numbers(pages) == list(range(1, 11))


@pytest.mark.parametrize("total_in", ["body", "meta", "header"])
async def test_offset_total_from_the_first_response(serve, total_in):
    api = await serve(
        OffsetApi(total=95, total_in=total_in, delay=lambda o: 0.05 if o == 0 else 0.01)
    )
    source = {
        "body": "total",
        "meta": "meta.total",
        "header": streampage.Header("X-Total-Count"),
    }[total_in]
    pager = streampage.Offset(limit=10, total_items=source)

    pages = await collect(streampage.stream(api.url, pages=pager, concurrency=8))

    assert sorted(numbers(pages)) == list(range(1, 11))
    assert Counter(ids(pages)) == Counter(range(95))
    # exactly offsets 0..90: no speculative request past the known end
    assert sorted(api.keys) == list(range(0, 100, 10))
    assert api.keys[0] == 0
    assert api.alone(0), "the first page must be fetched alone, then the rest fan out"
    assert api.max_in_flight > 1, "after the first page the rest should fan out"


async def test_offset_total_from_a_function_of_the_page(serve):
    api = await serve(OffsetApi(total=37, total_in="header"))
    pager = streampage.Offset(
        limit=5, total_items=lambda page: int(page.response.headers["X-Total-Count"])
    )

    pages = await collect(streampage.stream(api.url, pages=pager, concurrency=4))

    assert Counter(ids(pages)) == Counter(range(37))
    assert sorted(api.keys) == list(range(0, 40, 5))


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("shape", ["object", "list"])
async def test_offset_unknown_total_ends_at_a_short_page_which_is_delivered(serve, shape, ordered):
    api = await serve(OffsetApi(total=95, shape=shape))

    pages = await collect(
        streampage.stream(
            api.url, pages=streampage.Offset(limit=10), concurrency=8, ordered=ordered
        )
    )

    assert sorted(numbers(pages)) == list(range(1, 11))
    assert Counter(ids(pages)) == Counter(range(95))
    short = next(p for p in pages if p.number == 10)
    assert [r["id"] for r in (short.data if shape == "list" else short.data["items"])] == [
        90,
        91,
        92,
        93,
        94,
    ]
    if ordered:
        assert ids(pages) == list(range(95))


@pytest.mark.parametrize("ordered", [False, True])
async def test_offset_nothing_past_a_short_page_is_yielded_even_if_it_holds_records(serve, ordered):
    # A quirky server keeps answering full pages past the data (up to offset 200). The short
    # page (offset 40) is slow, so pages past it are answered (with records) before it: a
    # short page is the last page, so they must still never be yielded.
    api = await serve(
        OffsetApi(total=45, past_end="records", delay=lambda o: 0.15 if o == 40 else 0)
    )

    pages = await collect(
        streampage.stream(
            api.url, pages=streampage.Offset(limit=10), concurrency=6, ordered=ordered
        )
    )

    assert sorted(numbers(pages)) == [1, 2, 3, 4, 5]
    assert Counter(ids(pages)) == Counter(range(45))
    assert max(api.keys) > 40, "the test expects speculative requests past the short page"


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("past_end", ["empty", "404"])
async def test_offset_unknown_total_ends_at_an_empty_page_or_404_not_delivered(
    serve, past_end, ordered
):
    # 90 records at 10 a page: every page is full, the end is an empty page (or a 404)
    api = await serve(OffsetApi(total=90, past_end=past_end))

    pages = await collect(
        streampage.stream(
            api.url, pages=streampage.Offset(limit=10), concurrency=8, ordered=ordered
        )
    )

    assert sorted(numbers(pages)) == list(range(1, 10))
    assert Counter(ids(pages)) == Counter(range(90))
    assert all(p.data["items"] for p in pages), "an empty page past the end was delivered"
    assert max(api.keys) >= 90, "the end is found by asking past the data"


@pytest.mark.parametrize("total_in", [None, "header"], ids=["missing", "header-not-body"])
async def test_offset_total_absent_from_the_first_page_is_a_configuration_error(serve, total_in):
    # total_items="total" names a body field the server does not send: a wrong name, which
    # used to read as "no total" and end the data wherever the search ended it
    api = await serve(OffsetApi(total=47, total_in=total_in))

    with pytest.raises(streampage.ConfigurationError) as excinfo:
        await collect(
            streampage.stream(
                api.url, pages=streampage.Offset(limit=10, total_items="total"), concurrency=4
            )
        )

    message = str(excinfo.value)
    assert "total_items='total'" in message and "items" in message  # names what is there


async def test_offset_404_on_the_first_page_is_an_error(serve):
    api = await serve(OffsetApi(total=0, past_end="404"))

    with pytest.raises(streampage.HTTPStatusError) as excinfo:
        await collect(streampage.stream(api.url, pages=streampage.Offset(limit=10)))

    assert excinfo.value.status == 404
    assert excinfo.value.page == 1


async def test_offset_has_more_false_ends_the_data(serve):
    # 90 records, every page full; the last one says has_more: false
    api = await serve(OffsetApi(total=90, has_more=True, past_end="records"))
    pager = streampage.Offset(limit=10, has_more="has_more")

    pages = await collect(streampage.stream(api.url, pages=pager, concurrency=4))

    assert sorted(numbers(pages)) == list(range(1, 10))
    assert Counter(ids(pages)) == Counter(range(90))


async def test_offset_items_path_counts_the_records(serve):
    # two list fields at the top level and the records nested: items= names them
    def body(records, offset):
        return {"data": {"rows": records}, "facets": ["a", "b", "c"], "links": []}

    api = await serve(OffsetApi(total=23, body=body))
    pager = streampage.Offset(limit=5, items="data.rows")

    pages = await collect(streampage.stream(api.url, pages=pager, concurrency=4))

    assert sorted(numbers(pages)) == [1, 2, 3, 4, 5]
    got = [r["id"] for p in pages for r in p.data["data"]["rows"]]
    assert Counter(got) == Counter(range(23))


async def test_offset_default_counts_the_single_list_field(serve):
    # an object with one list-valued field among scalars and objects: that list is counted,
    # so the 2-record page (fewer than limit) is the last one
    def body(records, offset):
        return {"count": len(records), "meta": {"offset": offset}, "results": records}

    api = await serve(OffsetApi(total=22, body=body, past_end="records"))

    pages = await collect(
        streampage.stream(api.url, pages=streampage.Offset(limit=5), concurrency=3, ordered=True)
    )

    assert numbers(pages) == [1, 2, 3, 4, 5]
    assert [r["id"] for p in pages for r in p.data["results"]] == list(range(22))


@pytest.mark.parametrize("ordered", [False, True])
async def test_offset_every_item_once_and_in_order_when_ordered(serve, ordered):
    # later pages answer faster than earlier ones
    api = await serve(OffsetApi(total=200, total_in="body", delay=lambda o: (200 - o) / 8000))
    pager = streampage.Offset(limit=10, total_items="total")

    pages = await collect(streampage.stream(api.url, pages=pager, concurrency=10, ordered=ordered))

    assert Counter(ids(pages)) == Counter(range(200))
    assert len(pages) == 20
    assert Counter(api.keys) == Counter(range(0, 200, 10))
    if ordered:
        assert ids(pages) == list(range(200))
        assert numbers(pages) == list(range(1, 21))
    else:
        assert ids(pages) != list(range(200)), "expected out-of-order arrival without ordered"


async def test_offset_params_merge_with_the_urls_query_and_user_params(serve):
    api = await serve(OffsetApi(total=30))
    params = {"q": "shoes", "limit_to": 3}
    before = dict(params)

    pages = await collect(
        streampage.stream(
            api.url + "?sort=asc",
            pages=streampage.Offset(limit=10, stop=30),
            params=params,
            concurrency=3,
        )
    )

    assert params == before
    assert Counter(ids(pages)) == Counter(range(30))
    assert sorted(api.keys) == [0, 10, 20]
    for seen in api.seen:
        assert seen.query["sort"] == ["asc"]
        assert seen.query["q"] == ["shoes"]
        assert seen.query["limit_to"] == ["3"]
        assert seen.query["limit"] == ["10"]
        assert len(seen.query["offset"]) == 1


async def test_offset_replaces_offset_and_limit_already_in_the_url(serve):
    api = await serve(OffsetApi(total=30))

    pages = await collect(
        streampage.stream(
            api.url + "?offset=999&limit=1&x=1", pages=streampage.Offset(limit=10, stop=30)
        )
    )

    assert Counter(ids(pages)) == Counter(range(30))
    assert all(s.query["limit"] == ["10"] and s.query["x"] == ["1"] for s in api.seen)
    assert sorted(api.keys) == [0, 10, 20]


async def test_offset_start_and_custom_parameter_names(serve):
    api = await serve(OffsetApi(total=60, param="skip", limit_param="take"))
    pager = streampage.Offset(limit=15, start=20, param="skip", limit_param="take")

    pages = await collect(streampage.stream(api.url, pages=pager, concurrency=4, ordered=True))

    assert numbers(pages) == [1, 2, 3]
    assert ids(pages) == list(range(20, 60))
    assert all("offset" not in s.query and "limit" not in s.query for s in api.seen)
    assert all(s.query["take"] == ["15"] for s in api.seen)
    assert min(api.keys) == 20


# ---------------------------------------------------------------------- Cursor


@pytest.mark.parametrize("end", ["null", "missing", "empty"])
async def test_cursor_every_item_once_in_order(serve, end):
    api = await serve(CursorApi(pages=6, per_page=4, end=end))

    pages = await collect(streampage.stream(api.url, pages=streampage.Cursor()))

    assert numbers(pages) == [1, 2, 3, 4, 5, 6]
    assert ids(pages) == list(range(24))
    assert api.keys == [1, 2, 3, 4, 5, 6]
    assert "cursor" not in api.seen[0].query, "the first request carries no cursor"
    for k, seen in enumerate(api.seen[1:], start=2):
        assert seen.query["cursor"] == [CursorApi.token(k)]
    assert api.strictly_sequential()


async def test_cursor_keeps_the_users_query(serve):
    api = await serve(CursorApi(pages=3))

    await collect(
        streampage.stream(api.url + "?kind=push", pages=streampage.Cursor(), params={"n": 4})
    )

    assert api.keys == [1, 2, 3]
    assert all(s.query["kind"] == ["push"] and s.query["n"] == ["4"] for s in api.seen)


@pytest.mark.parametrize("target", ["earlier", "itself"])
async def test_cursor_loop_is_a_pagination_error_after_the_pages_before_it(serve, leaks, target):
    # page 4 hands out a cursor already used (page 2's, or its own)
    api = await serve(CursorApi(pages=8, loop={4: 2 if target == "earlier" else 4}))

    pages, error = await walk(
        streampage.stream(
            api.url, pages=streampage.Cursor(), params={"access_token": "SEKRET-QUERY"}
        )
    )

    error = pagination_error(error)
    assert numbers(pages)[:3] == [1, 2, 3]
    assert numbers(pages) in ([1, 2, 3], [1, 2, 3, 4]), "pages delivered more than once"
    assert len(ids(pages)) == len(set(ids(pages)))
    # the repeated cursor is never sent (again): no page is fetched twice
    assert api.keys == [1, 2, 3, 4]
    assert "page 4" in str(error)
    assert error.page in (4, 5)
    assert "SEKRET" not in str(error) and "SEKRET" not in error.url, "the URL is not redacted"
    await leaks.wait_no_tasks()
    leaks.assert_sessions_closed()


async def test_cursor_initial(serve):
    api = await serve(CursorApi(pages=4, initial="BEGIN"))

    pages = await collect(streampage.stream(api.url, pages=streampage.Cursor(initial="BEGIN")))

    assert ids(pages) == list(range(16))
    assert api.seen[0].query["cursor"] == ["BEGIN"]
    assert api.keys == [1, 2, 3, 4]


@pytest.mark.parametrize("how", ["path", "callable"])
async def test_cursor_field_path_and_param(serve, how):
    api = await serve(CursorApi(pages=5, field="meta.next", param="after"))
    field = "meta.next" if how == "path" else (lambda page: page.data["meta"]["next"])

    pages = await collect(
        streampage.stream(api.url, pages=streampage.Cursor(field=field, param="after"))
    )

    assert ids(pages) == list(range(20))
    assert api.keys == [1, 2, 3, 4, 5]
    assert all("cursor" not in s.query for s in api.seen)


@pytest.mark.parametrize("ordered", [False, True])
async def test_cursor_walks_sequentially_whatever_the_concurrency(serve, ordered):
    api = await serve(CursorApi(pages=10, per_page=3, delay=lambda k: 0.01))
    s = streampage.stream(api.url, pages=streampage.Cursor(), concurrency=8, ordered=ordered)
    pages = []

    async with asyncio.timeout(HANG), s:
        async for page in s:
            pages.append(page)
            await asyncio.sleep(0.002)  # a consumer slower than nothing: backpressure

    assert numbers(pages) == list(range(1, 11))
    assert ids(pages) == list(range(30))
    assert api.max_in_flight == 1
    assert api.strictly_sequential()
    assert api.keys == list(range(1, 11))
    assert s.stats.requests == 10


async def test_two_cursor_streams_walk_independently(serve):
    # one paginator value, two runs at once: each run has its own state
    api = await serve(CursorApi(pages=5, delay=lambda k: 0.01))
    pager = streampage.Cursor()

    a, b = await asyncio.gather(
        collect(streampage.stream(api.url, pages=pager, concurrency=4)),
        collect(streampage.stream(api.url, pages=pager, concurrency=4)),
    )

    assert ids(a) == ids(b) == list(range(20))
    assert Counter(api.keys) == Counter({k: 2 for k in range(1, 6)})


# ---------------------------------------------------------------------- NextURL


@pytest.mark.parametrize("style", ["absolute", "root", "query", "path"])
async def test_next_url_absolute_and_relative(serve, style):
    api = await serve(NextApi(pages=5, style=style))

    pages = await collect(
        streampage.stream(api.url, pages=streampage.NextURL(), concurrency=4, ordered=True)
    )

    assert numbers(pages) == [1, 2, 3, 4, 5]
    assert ids(pages) == list(range(15))
    assert api.keys == [1, 2, 3, 4, 5]
    expected_paths = (
        [f"/api/items/{k}" for k in range(1, 6)] if style == "path" else ["/api/items"] * 5
    )
    assert [s.path for s in api.seen] == expected_paths
    assert [str(p.response.url) for p in pages[1:]] == [api.page_url(k) for k in range(2, 6)]
    assert api.strictly_sequential()


@pytest.mark.parametrize("end", ["null", "missing", "empty"])
async def test_next_url_end_and_field(serve, end):
    api = await serve(NextApi(pages=3, end=end, field="links.next"))

    pages = await collect(streampage.stream(api.url, pages=streampage.NextURL(field="links.next")))

    assert ids(pages) == list(range(9))
    assert api.keys == [1, 2, 3]


@pytest.mark.parametrize("other_host", ["127.0.0.2", "127.0.0.1"], ids=["other-host", "other-port"])
async def test_next_url_to_another_origin_is_refused(serve, leaks, other_host):
    other = await serve(NextApi(pages=5, host=other_host))
    api = await serve(NextApi(pages=5, links={2: other.absolute(3)}))

    pages, error = await walk(
        streampage.stream(
            api.url, pages=streampage.NextURL(), headers={**SECRETS, **PUBLIC}, concurrency=4
        )
    )

    error = pagination_error(error)
    assert other.seen == [], "the other origin received a request"
    assert api.keys == [1, 2]
    assert numbers(pages)[:1] == [1]
    assert numbers(pages) in ([1], [1, 2])
    # the message names the page holding the foreign link; .page is that page or the next
    assert "page 2" in str(error)
    assert error.page in (2, 3)
    assert not any(v in str(error) for v in SECRETS.values())
    await leaks.wait_no_tasks()
    leaks.assert_sessions_closed()


async def test_next_url_cross_origin_followed_without_secret_headers(serve):
    other = await serve(NextApi(pages=5, host="127.0.0.2"))
    api = await serve(NextApi(pages=5, links={2: other.absolute(3)}))

    pages = await collect(
        streampage.stream(
            api.url,
            pages=streampage.NextURL(cross_origin=True),
            headers={**SECRETS, **PUBLIC},
            secret_headers=["X-Tenant"],
            concurrency=4,
        )
    )

    assert numbers(pages) == [1, 2, 3, 4, 5]
    assert ids(pages) == list(range(15))
    assert api.keys == [1, 2]
    assert other.keys == [3, 4, 5]
    for seen in api.seen:
        assert secrets_in(seen) == set(SECRETS), "secret headers belong to the origin"
        assert seen.headers.get("x-trace") == "public-trace"
    for seen in other.seen:
        assert secrets_in(seen) == set(), "a secret header reached the other origin"
        assert "authorization" not in seen.headers
        assert "cookie" not in seen.headers
        assert seen.headers.get("x-trace") == "public-trace", "public headers go everywhere"


async def test_next_url_loop_is_a_pagination_error(serve, leaks):
    api = await serve(NextApi(pages=8, style="root"))
    api.links[4] = "/api/items?page=2"

    pages, error = await walk(streampage.stream(api.url, pages=streampage.NextURL()))

    pagination_error(error)
    assert numbers(pages) in ([1, 2, 3], [1, 2, 3, 4])
    assert api.keys == [1, 2, 3, 4], "a page was fetched twice"
    await leaks.wait_no_tasks()
    leaks.assert_sessions_closed()


async def test_cursor_back_to_the_initial_cursor_is_a_loop(serve):
    # page 3 hands back the initial cursor: page 1 must not be fetched (and delivered) again
    api = await serve(CursorApi(pages=8, initial="BEGIN"))
    api.loop[3] = 1
    api.token = lambda k: "BEGIN" if k == 1 else CursorApi.token(k)

    pages, error = await walk(streampage.stream(api.url, pages=streampage.Cursor(initial="BEGIN")))

    pagination_error(error)
    assert api.keys == [1, 2, 3], "a page was fetched twice"
    assert numbers(pages) in ([1, 2], [1, 2, 3])
    assert len(ids(pages)) == len(set(ids(pages))), "records delivered twice"


async def test_next_url_back_to_the_first_page_is_a_loop(serve):
    # the first URL counts as seen: a next link back to it is a loop
    api = await serve(NextApi(pages=8, style="absolute"))
    api.links[3] = api.url

    pages, error = await walk(streampage.stream(api.url, pages=streampage.NextURL()))

    pagination_error(error)
    assert api.keys == [1, 2, 3]
    assert numbers(pages)[:2] == [1, 2]


# ---------------------------------------------------------------------- LinkHeader


@pytest.mark.parametrize("ordered", [False, True])
async def test_link_header_github_fans_out(serve, ordered):
    # 47 records, 5 a page: 10 pages; later pages answer faster
    api = await serve(GitHubApi(total=47, delay=lambda p: 0.02 + (10 - p) / 500))

    pages = await collect(
        streampage.stream(
            api.url,
            pages=streampage.LinkHeader(),
            params={"per_page": 5},
            concurrency=8,
            ordered=ordered,
        )
    )

    assert sorted(numbers(pages)) == list(range(1, 11))
    assert Counter(ids(pages)) == Counter(range(47))
    assert Counter(api.keys) == Counter(range(1, 11)), "each page requested exactly once"
    assert all(s.query["per_page"] == ["5"] for s in api.seen)
    assert api.alone(1), "the first page is read alone (its Link header says where the end is)"
    assert api.max_in_flight > 1, "the pages after the first were not fetched in parallel"
    # a page was requested before its predecessor had been answered
    starts = {k: i for i, (kind, k) in enumerate(api.events) if kind == "start"}
    ends = {k: i for i, (kind, k) in enumerate(api.events) if kind == "end"}
    assert any(starts[k] < ends[k - 1] for k in range(3, 11))
    if ordered:
        assert ids(pages) == list(range(47))
        assert numbers(pages) == list(range(1, 11))


async def test_link_header_default_page_size_of_the_server(serve):
    # the user gives no per_page: the server's default (30) is in the links, and kept
    api = await serve(GitHubApi(total=100, default_per_page=30, delay=lambda p: 0.02))

    pages = await collect(streampage.stream(api.url, pages=streampage.LinkHeader(), concurrency=4))

    assert sorted(numbers(pages)) == [1, 2, 3, 4]
    assert Counter(ids(pages)) == Counter(range(100))
    assert Counter(api.keys) == Counter([1, 2, 3, 4])
    assert api.max_in_flight > 1


async def test_link_header_fan_out_false_walks_one_by_one(serve):
    api = await serve(GitHubApi(total=47, delay=lambda p: 0.01))

    pages = await collect(
        streampage.stream(
            api.url,
            pages=streampage.LinkHeader(fan_out=False),
            params={"per_page": 5},
            concurrency=8,
        )
    )

    assert numbers(pages) == list(range(1, 11))
    assert ids(pages) == list(range(47))
    assert api.keys == list(range(1, 11))
    assert api.max_in_flight == 1
    assert api.strictly_sequential()


async def test_link_header_without_rel_last_walks(serve):
    # no rel="last": nothing to fan out to; the next links are walked
    def link(request, page, last):
        return f'<{api.page_link(request, page + 1)}>; rel="next"' if page < last else None

    api = await serve(GitHubApi(total=20, link=link, delay=lambda p: 0.01))

    pages = await collect(
        streampage.stream(
            api.url, pages=streampage.LinkHeader(), params={"per_page": 4}, concurrency=8
        )
    )

    assert numbers(pages) == [1, 2, 3, 4, 5]
    assert ids(pages) == list(range(20))
    assert api.keys == [1, 2, 3, 4, 5]
    assert api.max_in_flight == 1


async def test_link_header_next_and_last_differing_in_two_parameters_walks(serve):
    # each URL carries a non-numeric signature too: not a page-number scheme, so no fan-out
    api = await serve(GitHubApi(total=30, style="opaque", delay=lambda p: 0.01))

    pages = await collect(
        streampage.stream(
            api.url, pages=streampage.LinkHeader(), params={"per_page": 5}, concurrency=8
        )
    )

    assert ids(pages) == list(range(30))
    assert api.keys == [1, 2, 3, 4, 5, 6]
    assert api.max_in_flight == 1
    assert all(len(s.query.get("sig", [])) == 1 for s in api.seen[1:])


@pytest.mark.parametrize("fan_out", [True, False])
async def test_link_header_tricky_formatting_and_relative_urls(serve, fan_out):
    # relative URLs; quoted titles with ',' and ';'; a parameter holding ',' and ';' inside
    # the <URL>; unquoted rel tokens; rel="next last" on the second-to-last page
    api = await serve(GitHubApi(total=40, style="tricky", delay=lambda p: 0.02))

    pages = await collect(
        streampage.stream(
            api.url,
            pages=streampage.LinkHeader(fan_out=fan_out),
            params={"per_page": 5, "filter": "a,b;c"},
            concurrency=6,
        )
    )

    assert sorted(numbers(pages)) == list(range(1, 9))
    assert Counter(ids(pages)) == Counter(range(40))
    assert Counter(api.keys) == Counter(range(1, 9))
    for seen in api.seen:
        assert seen.path == "/repos/items"
        assert seen.query["filter"] == ["a,b;c"]
        assert seen.query["per_page"] == ["5"]
        assert len(seen.query.get("page", ["1"])) == 1
    if fan_out:
        assert api.max_in_flight > 1
    else:
        assert api.keys == list(range(1, 9))
        assert api.max_in_flight == 1


async def test_link_header_several_rels_in_one_link(serve):
    # rel="prev first" and rel="last next" (space-separated) on one link each
    def link(request, page, last):
        parts = []
        if page < last:
            parts.append(f'<{api.page_link(request, page + 1)}>; rel="last next"')
        if page > 1:
            parts.append(f'<{api.page_link(request, page - 1)}>; rel="prev first"')
        return ", ".join(parts) or None

    api = await serve(GitHubApi(total=8, link=link))

    pages = await collect(
        streampage.stream(api.url, pages=streampage.LinkHeader(), params={"per_page": 4})
    )

    assert numbers(pages) == [1, 2]
    assert ids(pages) == list(range(8))
    assert api.keys == [1, 2]


async def test_link_header_absent_means_a_single_page(serve):
    api = await serve(GitHubApi(total=7, style="none"))

    pages = await collect(streampage.stream(api.url, pages=streampage.LinkHeader(), concurrency=8))

    assert numbers(pages) == [1]
    assert ids(pages) == list(range(7))
    assert api.keys == [1]


async def test_link_header_only_other_rels_ends(serve):
    # a last page with only first/prev links: no rel=next, the data ends there
    api = await serve(GitHubApi(total=9))

    pages = await collect(
        streampage.stream(
            api.url + "?page=3&per_page=3", pages=streampage.LinkHeader(), concurrency=4
        )
    )

    assert ids(pages) == [6, 7, 8]
    assert api.keys == [3]


@pytest.mark.parametrize("fan_out", [True, False])
async def test_link_header_to_another_origin_is_refused(serve, leaks, fan_out):
    other = await serve(GitHubApi(total=50, host="127.0.0.2"))

    def link(request, page, last):
        # next and last both on the other origin, GitHub-shaped
        return (
            f'<{other.page_link(request, page + 1)}>; rel="next", '
            f'<{other.page_link(request, last)}>; rel="last"'
        )

    api = await serve(GitHubApi(total=50, link=link))

    pages, error = await walk(
        streampage.stream(
            api.url,
            pages=streampage.LinkHeader(fan_out=fan_out),
            params={"per_page": 5},
            headers={**SECRETS, **PUBLIC},
            secret_headers=["X-Tenant"],
            concurrency=4,
        )
    )

    error = pagination_error(error)
    assert other.seen == [], "the other origin received a request"
    assert api.keys == [1]
    assert numbers(pages) in ([], [1])
    assert "page 1" in str(error)
    assert error.page in (1, 2)
    await leaks.wait_no_tasks()
    leaks.assert_sessions_closed()


@pytest.mark.parametrize("fan_out", [True, False])
async def test_link_header_cross_origin_followed_without_secret_headers(serve, fan_out):
    # the first page links to pages 2..5 on the other origin (fanned out, or walked there)
    other = await serve(GitHubApi(total=20, host="127.0.0.2", delay=lambda p: 0.01))

    def link(request, page, last):
        return (
            f'<{other.page_link(request, page + 1)}>; rel="next", '
            f'<{other.page_link(request, last)}>; rel="last"'
        )

    api = await serve(GitHubApi(total=20, link=link))

    pages = await collect(
        streampage.stream(
            api.url,
            pages=streampage.LinkHeader(cross_origin=True, fan_out=fan_out),
            params={"per_page": 4},
            headers={**SECRETS, **PUBLIC},
            secret_headers=["X-Tenant"],
            concurrency=4,
            ordered=True,
        )
    )

    assert ids(pages) == list(range(20))
    assert api.keys == [1]
    assert sorted(other.keys) == [2, 3, 4, 5]
    if fan_out:
        assert other.max_in_flight > 1
    else:
        assert other.keys == [2, 3, 4, 5]
    assert all(secrets_in(s) == set(SECRETS) for s in api.seen)
    assert all(secrets_in(s) == set() for s in other.seen)
    assert all(s.headers.get("x-trace") == "public-trace" for s in other.seen)


async def test_link_header_loop_is_a_pagination_error(serve, leaks):
    def link(request, page, last):
        target = 2 if page == 4 else page + 1
        return f'<{api.page_link(request, target)}>; rel="next"'

    api = await serve(GitHubApi(total=100, link=link))

    pages, error = await walk(
        streampage.stream(api.url, pages=streampage.LinkHeader(), params={"per_page": 5})
    )

    pagination_error(error)
    assert api.keys == [1, 2, 3, 4]
    assert numbers(pages) in ([1, 2, 3], [1, 2, 3, 4])
    await leaks.wait_no_tasks()
    leaks.assert_sessions_closed()


async def test_link_header_back_to_the_first_page_is_a_loop(serve):
    # the first URL counts as seen: a next link back to it is a loop, not a second page 1
    def link(request, page, last):
        target = 1 if page == 3 else page + 1
        return f'<{api.page_link(request, target)}>; rel="next"'

    api = await serve(GitHubApi(total=100))
    api.link = link

    pages, error = await walk(
        streampage.stream(api.url + "?per_page=5&page=1", pages=streampage.LinkHeader())
    )

    pagination_error(error)
    assert api.keys == [1, 2, 3], "a page was fetched twice"
    assert numbers(pages) in ([1, 2], [1, 2, 3])


async def test_link_header_fan_out_from_a_page_in_the_middle(serve):
    # the stream starts at page 3 of 10: pages 4..10 fan out, numbered 2..8 in the stream
    api = await serve(GitHubApi(total=47, delay=lambda p: 0.02))

    pages = await collect(
        streampage.stream(
            api.url + "?page=3",
            pages=streampage.LinkHeader(),
            params={"per_page": 5},
            concurrency=8,
            ordered=True,
        )
    )

    assert ids(pages) == list(range(10, 47))
    assert numbers(pages) == list(range(1, 9))
    assert Counter(api.keys) == Counter(range(3, 11))
    assert api.alone(3)
    assert api.max_in_flight > 1


async def test_link_header_links_in_several_header_lines(serve):
    # next and last in separate Link header lines (a proxy may split them): still fans out
    def link(request, page, last):
        if page == last:
            return [f'<{api.page_link(request, 1)}>; rel="first"']
        return [
            f'<{api.page_link(request, page + 1)}>; rel="next"',
            f'<{api.page_link(request, last)}>; rel="last"',
        ]

    api = await serve(GitHubApi(total=30, link=link, delay=lambda p: 0.02))

    pages = await collect(
        streampage.stream(
            api.url, pages=streampage.LinkHeader(), params={"per_page": 5}, concurrency=6
        )
    )

    assert Counter(ids(pages)) == Counter(range(30))
    assert Counter(api.keys) == Counter(range(1, 7))
    assert api.max_in_flight > 1


# ---------------------------------------------------------------------- every paginator


async def scenario(serve, kind: str) -> tuple[Api, str, Any, dict[str, Any]]:
    """A server with 60 records in pages of 5 (12 pages), and the paginator for it."""
    if kind == "offset":
        api = await serve(OffsetApi(total=60, delay=lambda o: (60 - o) / 6000))
        return api, api.url, streampage.Offset(limit=5), {}
    if kind == "offset-total":
        api = await serve(OffsetApi(total=60, total_in="body", delay=lambda o: (60 - o) / 6000))
        return api, api.url, streampage.Offset(limit=5, total_items="total"), {}
    if kind == "cursor":
        api = await serve(CursorApi(pages=12, per_page=5))
        return api, api.url, streampage.Cursor(), {}
    if kind == "next-url":
        api = await serve(NextApi(pages=12, per_page=5, style="query"))
        return api, api.url, streampage.NextURL(), {}
    api = await serve(GitHubApi(total=60, delay=lambda p: (13 - p) / 600))
    pager = streampage.LinkHeader(fan_out=kind == "link-fan-out")
    return api, api.url, pager, {"per_page": 5}


KINDS = ["offset", "offset-total", "cursor", "next-url", "link-fan-out", "link-walk"]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_paginator_ordered(serve, kind):
    _api, url, pager, params = await scenario(serve, kind)

    pages = await collect(
        streampage.stream(url, pages=pager, params=params, concurrency=6, ordered=True)
    )

    assert numbers(pages) == list(range(1, 13))
    assert ids(pages) == list(range(60))


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("kind", KINDS)
async def test_every_paginator_max_pages(serve, kind, ordered):
    api, url, pager, params = await scenario(serve, kind)

    pages = await collect(
        streampage.stream(
            url, pages=pager, params=params, concurrency=6, ordered=ordered, max_pages=4
        )
    )

    assert sorted(numbers(pages)) == [1, 2, 3, 4]
    assert Counter(ids(pages)) == Counter(range(20))
    assert len(api.seen) <= 4, f"requests beyond max_pages: {api.keys}"


@pytest.mark.parametrize("kind", KINDS)
async def test_every_paginator_breaking_out_early_leaves_nothing_running(serve, leaks, kind):
    _api, url, pager, params = await scenario(serve, kind)
    s = streampage.stream(url, pages=pager, params=params, concurrency=6)

    async with asyncio.timeout(HANG), s:
        async for _page in s:
            break

    await leaks.wait_no_tasks()
    leaks.assert_sessions_closed()

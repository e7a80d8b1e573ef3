"""aiohttp.web servers that imitate real frameworks' pagination contracts, and misbehaving ones.

Each imitation follows its framework's own code (query parameters, body shape, links, what
a page past the end answers), so that a test against it says what streampage makes of the
real thing:

- ``DRFPageNumber``, ``DRFLimitOffset``, ``DRFCursor``: Django REST framework's three
  paginators (``rest_framework/pagination.py``), absolute next/previous links built with its
  ``replace_query_param`` (parameters sorted), 404 ``{"detail": ...}`` for a bad page.
- ``JSONServer017``: json-server 0.17 (``?_page=&_limit=``): a bare list, ``X-Total-Count``
  and a ``Link`` header with first/prev/next/last; past the end ``[]`` and an empty Link.
- ``JSONServer1``: json-server 1.x (``?_page=&_per_page=``): ``{"first", "prev", "next",
  "last", "pages", "items", "data"}``; a page past the end answers the last page again;
  unknown query parameters are field filters; ids are strings.
- ``FastAPIPage``, ``FastAPILimitOffset``, ``FastAPICursor``: fastapi-pagination's Page,
  LimitOffsetPage and CursorPage, with FastAPI's 422 validation errors.
- ``LaravelPaginator``: Laravel's LengthAwarePaginator JSON (``current_page``, ``data``,
  ``last_page``, ``next_page_url``, a ``links`` list, ``total``).
- Generic contracts under other names: ``OffsetEcho`` (``skip``/``take``, ``start``/``rows``,
  DummyJSON's ``skip``/``limit``), ``NamedCursor`` (``after``, ``continuation``, ...).
- Misbehaving servers: ``IgnoresPage`` (every page is page 1), ``CapsPageSize`` (silently
  serves at most ``cap`` records a page while reporting ``count``), ``CursorIgnoresPage``.
- ``ContractAPI``: a server built from a random ``Contract`` (style, where the total is,
  size cap, what a page past the end answers, whether the page parameter is ignored), for
  the property test.

Every server serves ``records`` records ``{"id": i, "name": "item-i"}`` for i = 1..records,
waits ``latency`` seconds (plus ``delay(request)``) before answering, and counts what it saw:
``received`` (requests that reached it, counted off the wire, so a request the client
cancels while it waits still counts), ``handled``, ``queries`` (each request's raw query string,
in arrival order), ``in_flight`` / ``max_in_flight`` and ``events`` ("start"/"end", query).
``claim`` makes it report a total other than the records it has; ``grow`` adds one record a
request, up to that many (a live API gaining records while a client pages through it).

    async with DRFPageNumber(records=250) as api:
        async for page in streampage.stream(api.url): ...
        assert api.received == 26
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self
from urllib import parse

from aiohttp import web
from yarl import URL

__all__ = [
    "API",
    "CapsPageSize",
    "Contract",
    "ContractAPI",
    "CursorIgnoresPage",
    "DRFCursor",
    "DRFLimitOffset",
    "DRFPageNumber",
    "FastAPICursor",
    "FastAPILimitOffset",
    "FastAPIPage",
    "IgnoresPage",
    "JSONServer017",
    "JSONServer1",
    "LaravelPaginator",
    "NamedCursor",
    "OffsetEcho",
    "item",
    "record_ids",
]


def item(i: int) -> dict[str, Any]:
    """Record ``i`` as every server here serves it (json-server 1.x: its id as a string)."""
    return {"id": i, "name": f"item-{i}"}


def record_ids(data: Any) -> list[int]:
    """The record ids in a decoded body of any server here: a bare list, or the list under
    ``items``, ``results``, ``data`` or ``products`` (json-server 1.x: ``items`` is a count)."""
    if isinstance(data, dict):
        for key in ("items", "results", "data", "products"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            return []
    return [int(record["id"]) for record in data]


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response."""
    return web.json_response(body, status=status, headers=headers)


# ---------------------------------------------------------------------- the server base


class _WireCounter(web.RequestHandler):
    """aiohttp's protocol, counting request heads as their bytes arrive (before a handler
    runs: a request the client gives up on still reached the server)."""

    def __init__(self, owner: API, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._owner = owner
        self._tail = b""

    def data_received(self, data: bytes) -> None:
        # These servers take GET requests only: no bodies, so every head ends with CRLFCRLF.
        buf = self._tail + data
        heads = buf.count(b"\r\n\r\n")
        self._owner.received += heads
        cut = buf.rfind(b"\r\n\r\n")
        self._tail = (buf[cut + 4 :] if cut >= 0 else buf)[-3:]
        super().data_received(data)


class _Server(web.Server):
    def __init__(self, handler: Any, owner: API, **kwargs: Any) -> None:
        protocol_kwargs = {k: v for k, v in kwargs.items() if k != "handler_cancellation"}
        super().__init__(handler, **kwargs)
        self._owner = owner
        self._protocol_kwargs = protocol_kwargs

    def __call__(self) -> web.RequestHandler:
        loop = asyncio.get_running_loop()
        return _WireCounter(self._owner, self, loop=loop, **self._protocol_kwargs)


class API:
    """An imitated API on 127.0.0.1 (see the module's documentation). ``answer`` is the
    framework's own behaviour; the base class counts, delays and serves."""

    path = "/items"

    def __init__(
        self,
        *,
        records: int = 100,
        latency: float = 0.0,
        delay: Callable[[web.BaseRequest], float] | None = None,
        claim: int | None = None,
        grow: int = 0,
    ) -> None:
        self.records = records
        self.latency = latency
        self.delay = delay
        self.claim = claim
        self.grow = grow
        self.received = 0
        self.handled = 0
        self.queries: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._grown = 0
        self._runner: web.ServerRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ data

    def rows(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Records ``start..stop`` by position (0-based, stop exclusive), like a list slice."""
        first, last, _ = slice(start, stop).indices(self.records)
        return [item(i + 1) for i in range(first, last)]

    @property
    def total(self) -> int:
        """The record count the server reports (``claim`` if set)."""
        return self.records if self.claim is None else self.claim

    @property
    def ids(self) -> list[int]:
        """Every record id the server holds, in order."""
        return list(range(1, self.records + 1))

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        raise NotImplementedError

    # ------------------------------------------------------------------ serving

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.handled += 1
        query = request.rel_url.raw_query_string  # as sent: still percent-encoded
        self.queries.append(query)
        self.events.append(("start", query))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            seconds = self.latency + (self.delay(request) if self.delay is not None else 0.0)
            if seconds:
                await asyncio.sleep(seconds)
            if self._grown < self.grow:
                self._grown += 1
                self.records += 1
            response = await self.answer(request)
            self.events.append(("end", query))
            return response
        finally:
            self.in_flight -= 1

    async def start(self) -> str:
        server = _Server(self._handle, self, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{self.path}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def settle(self, quiet: float = 0.05, within: float = 2.0) -> None:
        """Wait until no request has arrived for ``quiet`` seconds (bytes a client wrote just
        before it closed a connection are still on their way through the event loop)."""
        async with asyncio.timeout(within):
            while True:
                seen = self.received
                await asyncio.sleep(quiet)
                if self.received == seen and self.in_flight == 0:
                    return

    def numbers(self, param: str, default: int = 1) -> Iterator[tuple[str, int]]:
        """(kind, value of ``param``) for every start/end event, for ordering checks."""
        for kind, query in self.events:
            values = parse.parse_qs(query).get(param)
            yield kind, int(values[0]) if values else default


def _absolute(request: web.BaseRequest) -> str:
    """The request's absolute URL, as Django's ``build_absolute_uri`` or Express's
    ``req.protocol + '://' + req.get('host') + req.originalUrl`` give it."""
    return f"{request.scheme}://{request.host}{request.path_qs}"


# ---------------------------------------------------------------------- Django REST framework


def _drf_positive_int(text: str, *, strict: bool = False, cutoff: int | None = None) -> int:
    """rest_framework.pagination._positive_int."""
    ret = int(text)
    if ret < 0 or (ret == 0 and strict):
        raise ValueError(text)
    if cutoff:
        return min(ret, cutoff)
    return ret


def _drf_replace_query_param(url: str, key: str, val: object) -> str:
    """rest_framework.utils.urls.replace_query_param: the query comes back sorted."""
    scheme, netloc, path, query, fragment = parse.urlsplit(url)
    query_dict = parse.parse_qs(query, keep_blank_values=True)
    query_dict[key] = [str(val)]
    query = parse.urlencode(sorted(query_dict.items()), doseq=True)
    return parse.urlunsplit((scheme, netloc, path, query, fragment))


def _drf_remove_query_param(url: str, key: str) -> str:
    """rest_framework.utils.urls.remove_query_param."""
    scheme, netloc, path, query, fragment = parse.urlsplit(url)
    query_dict = parse.parse_qs(query, keep_blank_values=True)
    query_dict.pop(key, None)
    query = parse.urlencode(sorted(query_dict.items()), doseq=True)
    return parse.urlunsplit((scheme, netloc, path, query, fragment))


class DRFPageNumber(API):
    """DRF ``PageNumberPagination``: ``?page=N`` (or ``page=last``), a page size fixed by the
    server unless ``page_size_query_param`` is set (then honoured, silently capped at
    ``max_page_size``), ``{"count", "next", "previous", "results"}`` with absolute links, and
    404 ``{"detail": "Invalid page."}`` for a page that is not a number >= 1 or past the last
    (Django's Paginator: an empty list still has page 1)."""

    def __init__(
        self,
        *,
        page_size: int = 10,
        page_size_query_param: str | None = None,
        max_page_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.page_size = page_size
        self.page_size_query_param = page_size_query_param
        self.max_page_size = max_page_size

    def size(self, request: web.BaseRequest) -> int:
        if self.page_size_query_param:
            with contextlib.suppress(KeyError, ValueError):
                return _drf_positive_int(
                    request.query[self.page_size_query_param],
                    strict=True,
                    cutoff=self.max_page_size,
                )
        return self.page_size

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        size = self.size(request)
        count = self.total
        num_pages = math.ceil(max(1, count) / size)
        raw = request.query.get("page") or "1"
        try:
            number = num_pages if raw == "last" else int(raw)
        except ValueError:
            return reply({"detail": "Invalid page."}, 404)
        if number < 1 or number > num_pages:
            return reply({"detail": "Invalid page."}, 404)
        url = _absolute(request)
        nxt = _drf_replace_query_param(url, "page", number + 1) if number < num_pages else None
        if number == 1:
            previous = None
        elif number == 2:
            previous = _drf_remove_query_param(url, "page")
        else:
            previous = _drf_replace_query_param(url, "page", number - 1)
        results = self.rows((number - 1) * size, number * size)
        return reply({"count": count, "next": nxt, "previous": previous, "results": results})


class DRFLimitOffset(API):
    """DRF ``LimitOffsetPagination``: ``?limit=L&offset=O`` (a bad or missing limit is
    ``default_limit``, a limit above ``max_limit`` is silently cut to it), ``{"count",
    "next", "previous", "results"}``; an offset past the count answers ``results: []``."""

    def __init__(
        self, *, default_limit: int = 10, max_limit: int | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        self.default_limit = default_limit
        self.max_limit = max_limit

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        limit = self.default_limit
        with contextlib.suppress(KeyError, ValueError):
            limit = _drf_positive_int(request.query["limit"], strict=True, cutoff=self.max_limit)
        try:
            offset = _drf_positive_int(request.query["offset"])
        except (KeyError, ValueError):
            offset = 0
        count = self.total
        results = [] if count == 0 or offset > count else self.rows(offset, offset + limit)
        url = _absolute(request)
        nxt = None
        if offset + limit < count:
            nxt = _drf_replace_query_param(
                _drf_replace_query_param(url, "limit", limit), "offset", offset + limit
            )
        previous = None
        if offset > 0:
            previous = _drf_replace_query_param(url, "limit", limit)
            if offset - limit <= 0:
                previous = _drf_remove_query_param(previous, "offset")
            else:
                previous = _drf_replace_query_param(previous, "offset", offset - limit)
        return reply({"count": count, "next": nxt, "previous": previous, "results": results})


class DRFCursor(API):
    """DRF ``CursorPagination`` ordered by id: ``?cursor=`` holds base64 of a query string
    (``o`` offset, ``r`` reverse, ``p`` position), ``{"next", "previous", "results"}`` with
    absolute links, no count; a cursor that does not decode is 404 ``Invalid cursor``."""

    def __init__(self, *, page_size: int = 10, **options: Any) -> None:
        super().__init__(**options)
        self.page_size = page_size

    def _link(self, base: str, *, reverse: bool, position: int) -> str:
        tokens = {"r": "1"} if reverse else {}
        tokens["p"] = str(position)
        querystring = parse.urlencode(tokens, doseq=True)
        encoded = base64.b64encode(querystring.encode("ascii")).decode("ascii")
        return _drf_replace_query_param(base, "cursor", encoded)

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        reverse, position = False, None
        encoded = request.query.get("cursor")
        if encoded:
            try:
                text = base64.b64decode(encoded.encode("ascii")).decode("ascii")
                tokens = parse.parse_qs(text, keep_blank_values=True)
                reverse = bool(int(tokens.get("r", ["0"])[0]))
                position = int(tokens["p"][0]) if "p" in tokens else None
            except (TypeError, ValueError, UnicodeError, binascii.Error):
                return reply({"detail": "Invalid cursor"}, 404)
        ids = self.ids
        size = self.page_size
        if reverse:
            before = [i for i in ids if position is None or i < position]
            window = before[-(size + 1) :] if before else []
            has_previous = len(window) > size
            page = window[-size:] if window else []
            has_next = position is not None
        else:
            after = [i for i in ids if position is None or i > position]
            window = after[: size + 1]
            has_next = len(window) > size
            page = window[:size]
            has_previous = position is not None
        base = _absolute(request)
        nxt = None
        if has_next:
            last = page[-1] if page else position
            assert last is not None
            nxt = self._link(base, reverse=False, position=last)
        previous = None
        if has_previous:
            first = page[0] if page else position
            assert first is not None
            previous = self._link(base, reverse=True, position=first)
        results = [item(i) for i in page]
        return reply({"next": nxt, "previous": previous, "results": results})


# ---------------------------------------------------------------------- json-server


def _js_parse_int(text: str | None) -> int | None:
    """JavaScript's parseInt(text, 10): leading digits, None for NaN."""
    match = re.match(r"\s*([+-]?\d+)", text or "")
    return int(match.group(1)) if match else None


class JSONServer017(API):
    """json-server 0.17 (``src/server/router/plural.js``): with ``_page`` (default
    ``_limit`` 10) a bare JSON list, ``X-Total-Count`` and ``Link`` with first/prev/next/last
    (absolute URLs, made by replacing ``page=<current>`` in the request URL); a page past
    the end is ``[]`` with an empty ``Link:``; ``_start``/``_end``/``_limit`` slice without
    pages; without any of them, the whole list. Query parameters that are no record field
    are dropped (ignored), those that are filter by equality."""

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        q = request.query
        rows = self.rows()
        fields = set(rows[0]) if rows else set()
        for key in q:
            if not key.startswith("_") and key in fields:
                wanted = q.getall(key)
                rows = [r for r in rows if str(r[key]) in wanted]
        headers: dict[str, str] = {}
        page_raw, limit_raw = q.get("_page"), q.get("_limit")
        start_raw, end_raw = q.get("_start"), q.get("_end")
        if end_raw or limit_raw or page_raw:
            headers["X-Total-Count"] = str(len(rows))
            headers["Access-Control-Expose-Headers"] = "X-Total-Count" + (
                ", Link" if page_raw else ""
            )
        if page_raw:
            page = _js_parse_int(page_raw)
            page = page if page is not None and page >= 1 else 1
            limit = _js_parse_int(limit_raw) or 10
            start, end = (page - 1) * limit, page * limit
            chunk = rows[start:end]
            links: dict[str, int] = {}
            if chunk:
                if page > 1:
                    links["prev"] = page - 1
                if end < len(rows):
                    links["next"] = page + 1
                if len(chunk) != len(rows):
                    links = {"first": 1, **links, "last": math.ceil(len(rows) / limit)}
            full = _absolute(request)
            headers["Link"] = ", ".join(
                f'<{full.replace(f"page={page}", f"page={n}", 1)}>; rel="{rel}"'
                for rel, n in links.items()
            )
            rows = chunk
        elif end_raw:
            rows = rows[_js_parse_int(start_raw) or 0 : _js_parse_int(end_raw) or 0]
        elif limit_raw:
            start = _js_parse_int(start_raw) or 0
            rows = rows[start : start + (_js_parse_int(limit_raw) or 0)]
        return reply(rows, headers=headers)


_JS1_OPERATORS = ("lt", "lte", "gt", "gte", "eq", "ne", "in", "contains")


def _js1_coerce(value: str) -> Any:
    """json-server 1.x parse-where.ts coerceValue."""
    if value in ("true", "false"):
        return value == "true"
    if value == "null":
        return None
    if value.strip() == "":
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    if math.isfinite(number):
        return int(number) if number.is_integer() else number
    return value


def _js1_matches(record: dict[str, Any], key: str, raw: str) -> bool:
    """One where-condition of json-server 1.x (``field``, ``field:op`` or ``field_op``)."""
    path, op = key, "eq"
    if ":" in key:
        path, _, op = key.rpartition(":")
        op = op or "eq"
        if op not in _JS1_OPERATORS:
            return True  # an unknown operator is dropped
    else:
        match = re.match(r"^(.*)_([a-z]+)$", key)
        if match and match.group(1) and match.group(2) in _JS1_OPERATORS:
            path, op = match.group(1), match.group(2)
    if path not in record:
        return False
    field, value = record[path], _js1_coerce(raw)
    try:
        if op == "eq":
            return bool(field == value)
        if op == "ne":
            return bool(field != value)
        if op == "in":
            return field in [_js1_coerce(p.strip()) for p in raw.split(",")]
        if op == "contains":
            return isinstance(field, str) and raw.lower() in field.lower()
        comparisons = {"lt": "__lt__", "lte": "__le__", "gt": "__gt__", "gte": "__ge__"}
        return bool(getattr(field, comparisons[op])(value) is True)
    except TypeError:
        return False


class JSONServer1(API):
    """json-server 1.x (``src/app.ts``, ``src/paginate.ts``): with ``_page`` (default
    ``_per_page`` 10) ``{"first", "prev", "next", "last", "pages", "items", "data"}``, where a
    page number past the last is clamped to it (the last page again); without ``_page`` the
    whole array. Every query parameter but ``_sort``, ``_page``, ``_per_page``, ``_embed`` and
    ``_where`` is a where-condition on a record field: ``?page=2`` keeps the records whose
    field ``page`` is 2, i.e. none. Record ids are strings."""

    def rows(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        return [{**r, "id": str(r["id"])} for r in super().rows(start, stop)]

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        q = request.query
        reserved = {"_sort", "_page", "_per_page", "_embed", "_where"}
        conditions = [(k, v) for k, v in q.items() if k not in reserved]
        rows = [r for r in self.rows() if all(_js1_matches(r, k, v) for k, v in conditions)]
        page = _js_parse_int(q.get("_page"))
        if page is None:
            return reply(rows)
        per_page = _js_parse_int(q.get("_per_page"))
        per_page = 10 if per_page is None else per_page if per_page > 0 else 1
        pages = max(1, math.ceil(len(rows) / per_page))
        current = max(1, min(page, pages))
        start = (current - 1) * per_page
        return reply(
            {
                "first": 1,
                "prev": current - 1 if current > 1 else None,
                "next": current + 1 if current < pages else None,
                "last": pages,
                "pages": pages,
                "items": len(rows),
                "data": rows[start : start + per_page],
            }
        )


# ---------------------------------------------------------------------- fastapi-pagination


def _fastapi_int(
    request: web.BaseRequest,
    name: str,
    default: int,
    errors: list[dict[str, Any]],
    *,
    ge: int,
    le: int | None = None,
) -> int:
    """A ``Query(default, ge=..., le=...)`` int parameter, validated as FastAPI (pydantic 2)
    does; a failure is added to ``errors`` (the 422 body's ``detail``)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    loc = ["query", name]
    try:
        value = int(raw)
    except ValueError:
        errors.append(
            {
                "type": "int_parsing",
                "loc": loc,
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw,
            }
        )
        return default
    if value < ge:
        errors.append(
            {
                "type": "greater_than_equal",
                "loc": loc,
                "msg": f"Input should be greater than or equal to {ge}",
                "input": raw,
                "ctx": {"ge": ge},
            }
        )
    elif le is not None and value > le:
        errors.append(
            {
                "type": "less_than_equal",
                "loc": loc,
                "msg": f"Input should be less than or equal to {le}",
                "input": raw,
                "ctx": {"le": le},
            }
        )
    return value


class FastAPIPage(API):
    """fastapi-pagination ``Page``: ``?page=N&size=S`` (page >= 1, 1 <= size <= max_size,
    else 422), ``{"items", "total", "page", "size", "pages"}``; past the end ``items: []``."""

    def __init__(self, *, default_size: int = 50, max_size: int = 100, **options: Any) -> None:
        super().__init__(**options)
        self.default_size = default_size
        self.max_size = max_size

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        errors: list[dict[str, Any]] = []
        page = _fastapi_int(request, "page", 1, errors, ge=1)
        size = _fastapi_int(request, "size", self.default_size, errors, ge=1, le=self.max_size)
        if errors:
            return reply({"detail": errors}, 422)
        total = self.total
        body = {
            "items": self.rows((page - 1) * size, page * size),
            "total": total,
            "page": page,
            "size": size,
            "pages": math.ceil(total / size),
        }
        return reply(body)


class FastAPILimitOffset(API):
    """fastapi-pagination ``LimitOffsetPage``: ``?limit=L&offset=O`` (1 <= limit <=
    max_limit, offset >= 0, else 422), ``{"items", "total", "limit", "offset"}``."""

    def __init__(self, *, default_limit: int = 50, max_limit: int = 100, **options: Any) -> None:
        super().__init__(**options)
        self.default_limit = default_limit
        self.max_limit = max_limit

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        errors: list[dict[str, Any]] = []
        limit = _fastapi_int(request, "limit", self.default_limit, errors, ge=1, le=self.max_limit)
        offset = _fastapi_int(request, "offset", 0, errors, ge=0)
        if errors:
            return reply({"detail": errors}, 422)
        body = {
            "items": self.rows(offset, offset + limit),
            "total": self.total,
            "limit": limit,
            "offset": offset,
        }
        return reply(body)


class FastAPICursor(API):
    """fastapi-pagination ``CursorPage`` (keyset on id, as its SQLAlchemy integration):
    ``?cursor=C&size=S``; ``{"items", "total": null, "current_page", "current_page_backwards",
    "previous_page", "next_page"}``. Cursors are base64 of a keyset bookmark (``>i:1003``:
    after id 1003) and, as in fastapi-pagination, percent-quoted (``Pmk6MTAwMw%3D%3D``) unless
    ``quoted=False`` (then raw base64 with its ``=``). A cursor is unquoted and decoded;
    one that does not decode is 400 ``Invalid cursor value``."""

    def __init__(
        self,
        *,
        default_size: int = 50,
        max_size: int = 100,
        quoted: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.default_size = default_size
        self.max_size = max_size
        self.quoted = quoted

    def encode(self, bookmark: str) -> str:
        encoded = base64.b64encode(bookmark.encode()).decode()
        return parse.quote(encoded) if self.quoted else encoded

    def decode(self, cursor: str) -> str:
        text = parse.unquote(cursor) if self.quoted else cursor
        return base64.b64decode(text.encode()).decode()

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        errors: list[dict[str, Any]] = []
        size = _fastapi_int(request, "size", self.default_size, errors, ge=0, le=self.max_size)
        if errors:
            return reply({"detail": errors}, 422)
        forward, marker = True, None
        cursor = request.query.get("cursor")
        if cursor:
            try:
                bookmark = self.decode(cursor)
                match = re.fullmatch(r"([<>])(?:i:(\d+))?", bookmark)
                if match is None:
                    raise ValueError(bookmark)
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return reply({"detail": "Invalid cursor value"}, 400)
            forward = match.group(1) == ">"
            marker = int(match.group(2)) if match.group(2) else None
        ids = self.ids
        if forward:
            rest = [i for i in ids if marker is None or i > marker]
            page, more_after = rest[:size], len(rest) > size
            more_before = marker is not None and any(i <= marker for i in ids)
        else:
            rest = [i for i in ids if marker is None or i < marker]
            page = rest[-size:] if size else []
            more_before, more_after = len(rest) > size, marker is not None
        current = self.decode(cursor) if cursor else ">"
        body = {
            "items": [item(i) for i in page],
            "total": None,
            "current_page": self.encode(current),
            "current_page_backwards": self.encode(f"<i:{page[-1] + 1}" if page else "<"),
            "previous_page": self.encode(f"<i:{page[0]}") if page and more_before else None,
            "next_page": self.encode(f">i:{page[-1]}") if page and more_after else None,
        }
        return reply(body)


# ---------------------------------------------------------------------- Laravel


class LaravelPaginator(API):
    """Laravel's ``LengthAwarePaginator`` as JSON (``->paginate(15)``): ``?page=N`` (not a
    whole number >= 1: page 1), ``{"current_page", "data", "first_page_url", "from",
    "last_page", "last_page_url", "links", "next_page_url", "path", "per_page",
    "prev_page_url", "to", "total"}``; ``links`` is a list of page links (previous, one per
    page, next) that is never empty, so ``data`` is not the only list. Past the last page:
    ``data: []``, ``from``/``to`` null, no next URL."""

    def __init__(self, *, per_page: int = 15, **options: Any) -> None:
        super().__init__(**options)
        self.per_page = per_page

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = request.query.get("page", "")
        page = int(raw) if raw.isdigit() and int(raw) >= 1 else 1
        per_page, total = self.per_page, self.total
        last = max(math.ceil(total / per_page), 1)
        path = f"{request.scheme}://{request.host}{request.path}"

        def url(n: int) -> str:
            return f"{path}?page={n}"

        data = self.rows((page - 1) * per_page, page * per_page)
        first = (page - 1) * per_page + 1 if data else None
        nxt = url(page + 1) if page < last else None
        prev = url(page - 1) if page > 1 else None
        links = [
            {"url": prev, "label": "&laquo; Previous", "active": False},
            *({"url": url(n), "label": str(n), "active": n == page} for n in range(1, last + 1)),
            {"url": nxt, "label": "Next &raquo;", "active": False},
        ]
        body = {
            "current_page": page,
            "data": data,
            "first_page_url": url(1),
            "from": first,
            "last_page": last,
            "last_page_url": url(last),
            "links": links,
            "next_page_url": nxt,
            "path": path,
            "per_page": per_page,
            "prev_page_url": prev,
            "to": first + len(data) - 1 if first is not None else None,
            "total": total,
        }
        return reply(body)


# ---------------------------------------------------------------------- misbehaving servers


class IgnoresPage(API):
    """Ignores every query parameter: each request answers the first ``per_page`` records
    (a bare list, or ``{"items": [...]}`` with ``shape="object"``), with ``X-Total-Count``."""

    def __init__(self, *, per_page: int = 100, shape: str = "list", **options: Any) -> None:
        super().__init__(**options)
        self.per_page = per_page
        self.shape = shape

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        rows = self.rows(0, self.per_page)
        body: Any = rows if self.shape == "list" else {"items": rows}
        return reply(body, headers={"X-Total-Count": str(self.total)})


class CapsPageSize(API):
    """Pages by ``?page=&per_page=`` or ``?offset=&limit=``, serving at most ``cap`` records
    a page whatever size is asked, silently; reports the whole ``count`` in the body:
    ``{"count": N, "items": [...]}``. Past the end, ``items: []``."""

    def __init__(self, *, cap: int = 1000, default_size: int = 100, **options: Any) -> None:
        super().__init__(**options)
        self.cap = cap
        self.default_size = default_size

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        q = request.query
        if "offset" in q or "limit" in q:
            size = min(int(q.get("limit", self.default_size)), self.cap)
            start = int(q.get("offset", 0))
        else:
            size = min(int(q.get("per_page", self.default_size)), self.cap)
            start = (int(q.get("page", 1)) - 1) * size
        return reply({"count": self.total, "items": self.rows(start, start + size)})


class CursorIgnoresPage(API):
    """A cursor API (``?cursor=`` in, ``next_cursor`` out) that ignores ``?page``."""

    def __init__(self, *, per_page: int = 10, **options: Any) -> None:
        super().__init__(**options)
        self.per_page = per_page

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        start = int(request.query.get("cursor", 0))
        end = start + self.per_page
        nxt = str(end) if end < self.records else None
        return reply({"items": self.rows(start, end), "next_cursor": nxt})


class OffsetEcho(API):
    """An offset API under any names: ``?<offset>=O&<limit>=L`` answers ``{<records>: [...],
    <total>: N, <offset>: O, <limit>: L}``; e.g. DummyJSON's ``skip``/``limit`` with
    ``products``, Prisma-style ``skip``/``take``, Solr-style ``start``/``rows``."""

    def __init__(
        self,
        *,
        offset: str = "offset",
        limit: str = "limit",
        total_field: str = "total",
        items: str = "items",
        default_limit: int = 20,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.names = (offset, limit, total_field, items)
        self.default_limit = default_limit

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        offset_name, limit_name, total_name, items_name = self.names
        offset = int(request.query.get(offset_name, 0))
        limit = int(request.query.get(limit_name, self.default_limit))
        body = {
            items_name: self.rows(offset, offset + limit),
            total_name: self.total,
            offset_name: offset,
            limit_name: limit,
        }
        return reply(body)


#: The query parameters a NamedCursor takes its cursor from (whichever is present).
CURSOR_PARAMS = ("cursor", "after", "continuation", "continue", "pageToken", "page_token")


class NamedCursor(API):
    """A cursor API whose next cursor is in the body field ``field`` (null at the end),
    ``{"items": [...], <field>: ...}``. The cursor is opaque (base64) and is taken back
    from any of CURSOR_PARAMS or a parameter named like the field; an unknown cursor is 400."""

    def __init__(self, *, field: str = "next_cursor", per_page: int = 10, **options: Any) -> None:
        super().__init__(**options)
        self.field = field
        self.per_page = per_page

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        start = 0
        for name in (*CURSOR_PARAMS, self.field):
            cursor = request.query.get(name)
            if cursor:
                try:
                    start = int(base64.urlsafe_b64decode(cursor.encode()).decode().split(":")[1])
                except (ValueError, IndexError, binascii.Error, UnicodeDecodeError):
                    return reply({"error": f"invalid cursor {cursor!r}"}, 400)
                break
        end = start + self.per_page
        nxt = base64.urlsafe_b64encode(f"o:{end}".encode()).decode() if end < self.records else None
        return reply({"items": self.rows(start, end), self.field: nxt})


# ---------------------------------------------------------------------- random contracts

STYLES = ("page", "offset", "link", "next-url", "cursor")
TOTALS = ("none", "body", "header", "pages")
ENDS = ("empty", "404", "last")


@dataclass(frozen=True)
class Contract:
    """How a ContractAPI paginates.

    ``style``: ``page`` (``?page=N&per_page=S`` → ``{"page", "per_page", "items"}``),
    ``offset`` (``?offset=O&limit=S`` → ``{"offset", "limit", "items"}``), ``link`` (``?page=N
    &per_page=S`` → a bare list, with a Link header next/prev/first), ``next-url``
    (``{"items", "next": absolute URL or null}``) or ``cursor`` (``{"items", "next_cursor"}``,
    sent back as ``?cursor=``; the cursor holds ``=``, ``&`` and ``#``).
    ``total``: where the size of the data shows: nowhere, the body (``total``: records), the
    ``X-Total-Count`` header, or a page count (``total_pages`` in the body; for ``link``,
    a ``rel="last"`` link). ``per_page``: the page size when none is asked; ``cap``: the
    largest size honoured (a larger ask silently gets ``cap``). ``end``: what a page number
    or offset past the data answers: an empty page, 404, or the last page again (clamped).
    ``ignores_page``: every request is answered as the first page (of the size asked).
    """

    style: str = "page"
    records: int = 30
    per_page: int = 10
    total: str = "none"
    cap: int | None = None
    end: str = "empty"
    ignores_page: bool = False

    def __post_init__(self) -> None:
        assert self.style in STYLES, self.style
        assert self.total in TOTALS, self.total
        assert self.end in ENDS, self.end
        assert not (self.style == "link" and self.total == "body"), "a list body has no fields"


def _encode_contract_cursor(after: int) -> str:
    return f"after={after}&sig={after * 7 % 13}#end"


def _decode_contract_cursor(cursor: str) -> int | None:
    match = re.fullmatch(r"after=(\d+)&sig=(\d+)#end", cursor)
    if match is None or int(match.group(2)) != int(match.group(1)) * 7 % 13:
        return None
    return int(match.group(1))


class ContractAPI(API):
    """A server that paginates as its ``Contract`` says (see Contract)."""

    def __init__(self, contract: Contract, **options: Any) -> None:
        options.setdefault("records", contract.records)
        super().__init__(**options)
        self.contract = contract

    def pages(self, size: int) -> int:
        return math.ceil(self.total / size)

    def _totals(self, size: int) -> tuple[dict[str, Any], dict[str, str]]:
        """(body fields, headers) that tell the size of the data."""
        total = self.contract.total
        if total == "body":
            return {"total": self.total}, {}
        if total == "header":
            return {}, {"X-Total-Count": str(self.total)}
        if total == "pages" and self.contract.style != "link":
            return {"total_pages": self.pages(size)}, {}
        return {}, {}

    def _served(self, start: int, size: int) -> int | None:
        """Where the window asked to start at ``start`` begins as served: itself inside the
        data, the last page's start past it with ``end="last"``, else None (past the end)."""
        if start < self.records or start == 0:
            return start
        if self.contract.end == "last":
            return (self.records - 1) // size * size
        return None

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        c = self.contract
        q = request.query
        try:
            asked = int(q.get("limit" if c.style == "offset" else "per_page", c.per_page))
            number = 1 if c.ignores_page else int(q.get("page", 1))
            offset = 0 if c.ignores_page else int(q.get("offset", 0))
            after = 0 if c.ignores_page else int(q.get("after", 0))
        except ValueError:
            return web.Response(status=400, text="page, offset, after and sizes are integers")
        if asked < 1 or number < 1 or offset < 0 or after < 0:
            return web.Response(status=400, text="page >= 1, size >= 1, offset >= 0")
        size = min(asked, c.cap) if c.cap is not None else asked
        fields, headers = self._totals(size)
        if c.style in ("page", "link", "offset"):
            wanted = offset if c.style == "offset" else (number - 1) * size
            start = self._served(wanted, size)
            if start is None and c.end == "404":
                return reply({"detail": "Not found."}, 404, headers)
            rows = [] if start is None else self.rows(start, start + size)
            if start is not None and c.style != "offset":
                number = start // size + 1  # clamped to the last page: it says so
            if c.style == "page":
                body = {"page": number, "per_page": size, "items": rows, **fields}
                return reply(body, 200, headers)
            if c.style == "offset":
                shown = offset if start is None else start
                body = {"offset": shown, "limit": size, "items": rows, **fields}
                return reply(body, 200, headers)
            if rows or number == 1:
                headers["Link"] = self._links(request, number, size)
            return reply(rows, 200, headers)
        if c.style == "next-url":
            end = after + size
            nxt = None
            if end < self.records:
                url = URL(_absolute(request)).update_query({"after": end, "per_page": size})
                nxt = str(url)
            body = {"items": self.rows(after, end), "next": nxt, **fields}
            return reply(body, 200, headers)
        # cursor
        start = 0
        cursor = q.get("cursor")
        if cursor and not c.ignores_page:
            decoded = _decode_contract_cursor(cursor)
            if decoded is None:
                return reply({"error": f"invalid cursor {cursor!r}"}, 400)
            start = decoded
        end = start + size
        nxt = _encode_contract_cursor(end) if end < self.records else None
        body = {"items": self.rows(start, end), "next_cursor": nxt, **fields}
        return reply(body, 200, headers)

    def _links(self, request: web.BaseRequest, number: int, size: int) -> str:
        """GitHub-style links: first, prev, next, and last when the page count shows."""
        last = max(1, self.pages(size))
        base = URL(_absolute(request))

        def link(n: int, rel: str) -> str:
            return f'<{base.update_query({"page": n, "per_page": size})}>; rel="{rel}"'

        links = [link(1, "first")]
        if number > 1:
            links.append(link(number - 1, "prev"))
        if number < last:
            links.append(link(number + 1, "next"))
        if self.contract.total == "pages":
            links.append(link(last, "last"))
        return ", ".join(links)

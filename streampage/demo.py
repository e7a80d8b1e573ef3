"""The embedded demo API: an ``aiohttp.web`` app serving paginated JSON, for trying streampage.

One resource, ``GET /items``, paginated in one of five styles (``style=``), so that every
paginator and every option of ``streampage fetch`` can be tried locally:

``page`` (default): ``?page=N&per_page=M`` answers::

    {"page": N, "per_page": M, "total_pages": T, "total_items": I,
     "items": [{"id": 1, "name": "item-1", "price": 1.5, "tags": [...]}, ...]}

  with ``X-Total-Count: I``; pages past the last are empty (``"items": []``), as many real
  APIs do.
``offset``: ``?offset=O&limit=L`` answers ``{"offset": O, "limit": L, "total": I,
  "items": [...]}`` (and ``X-Total-Count``); past the end, ``"items": []``.
``cursor``: ``?cursor=C&per_page=M`` answers ``{"items": [...], "next_cursor": "..."}``;
  the cursor is opaque and null on the last page.
``next-url``: ``?after=ID&per_page=M`` answers ``{"items": [...], "next": "http://..."}``;
  null on the last page.
``link``: ``?page=N&per_page=M`` answers a JSON list of items, with GitHub's ``Link``
  header (``rel="next"``, ``"last"``, ``"first"``, ``"prev"``).

Each response waits ``latency`` seconds first, to look like a real network. Faults, to see
retries and failures: ``fault_rate`` answers that fraction of requests with 503 at random
(seeded by ``seed``), ``fail_pages`` always answers 500 for those pages (numbered from 1 in
every style), ``rate_limit`` answers 429 with ``Retry-After`` beyond that many requests a
second (and sends ``RateLimit-*`` headers), ``token`` requires ``Authorization: Bearer
<token>`` (401 otherwise). ``python -m streampage serve-demo`` runs it alone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import random
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web
from yarl import URL

from ._demo_styles import DEFAULT_ITEMS, DEFAULT_PER_PAGE, STYLES

__all__ = ["DEFAULT_ITEMS", "DEFAULT_PER_PAGE", "STYLES", "ItemsPage", "make_app", "serve"]

_TAGS = ("red", "green", "blue", "small", "large", "sale", "new", "classic")


class Item(msgspec.Struct):
    id: int
    name: str
    price: float
    tags: list[str]


class ItemsPage(msgspec.Struct):
    """The shape of a demo page (``style="page"``), for ``stream(..., decode=ItemsPage)``."""

    page: int
    per_page: int
    total_pages: int
    total_items: int
    items: list[Item]


def _item(i: int) -> Item:
    rnd = random.Random(i)
    return Item(i, f"item-{i}", round(rnd.uniform(1, 500), 2), rnd.sample(_TAGS, 2))


def _encode_cursor(after: int) -> str:
    return base64.urlsafe_b64encode(f"after:{after}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, after = text.partition(":")
        if prefix != "after" or not after.isdigit():
            raise ValueError(cursor)
        return int(after)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text=f"invalid cursor {cursor!r}") from None


def _int(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, not {value!r}") from None


class _Window:
    """Fixed one-second windows of at most ``limit`` requests, for ``rate_limit=``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._second = 0
        self._count = 0

    def take(self) -> tuple[bool, int, int]:
        """(allowed, remaining, seconds until reset)."""
        now = time.monotonic()
        second = int(now)
        if second != self._second:
            self._second, self._count = second, 0
        self._count += 1
        reset = max(1, math.ceil(second + 1 - now))
        return self._count <= self.limit, max(0, self.limit - self._count), reset


def make_app(
    *,
    items: int = DEFAULT_ITEMS,
    latency: float = 0.002,
    max_per_page: int = 100,
    per_page: int = DEFAULT_PER_PAGE,
    style: str = "page",
    fault_rate: float = 0.0,
    seed: int | None = None,
    fail_pages: Iterable[int] = (),
    rate_limit: int | None = None,
    token: str | None = None,
) -> web.Application:
    """The demo API with ``items`` records (see the module's documentation for the rest)."""
    if style not in STYLES:
        raise ValueError(f"style={style!r} must be one of {', '.join(STYLES)}")
    if not 0.0 <= fault_rate <= 1.0:
        raise ValueError(f"fault_rate={fault_rate!r} must be between 0 and 1")
    if not 1 <= per_page <= max_per_page:
        raise ValueError(f"per_page={per_page!r} must be between 1 and {max_per_page}")
    encoder = msgspec.json.Encoder()
    faults = random.Random(seed)
    failing = frozenset(fail_pages)
    window = _Window(rate_limit) if rate_limit else None

    def size(request: web.Request, name: str) -> int:
        n = _int(request, name, per_page)
        if not 1 <= n <= max_per_page:
            raise web.HTTPBadRequest(text=f"1 <= {name} <= {max_per_page}")
        return n

    def records(first: int, count: int) -> list[Item]:
        """``count`` records from id ``first`` (ids run 1..items)."""
        return [_item(i) for i in range(max(first, 1), min(first + count - 1, items) + 1)]

    def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            body=encoder.encode(body),
            status=status,
            content_type="application/json",
            headers=headers,
        )

    def page_style(request: web.Request) -> tuple[int, Any, dict[str, str]]:
        page, n = _int(request, "page", 1), size(request, "per_page")
        if page < 1:
            raise web.HTTPBadRequest(text="page >= 1")
        total_pages = -(-items // n)
        body = ItemsPage(page, n, total_pages, items, records((page - 1) * n + 1, n))
        return page, body, {"X-Total-Count": str(items)}

    def offset_style(request: web.Request) -> tuple[int, Any, dict[str, str]]:
        offset, limit = _int(request, "offset", 0), size(request, "limit")
        if offset < 0:
            raise web.HTTPBadRequest(text="offset >= 0")
        body = {
            "offset": offset,
            "limit": limit,
            "total": items,
            "items": records(offset + 1, limit),
        }
        return offset // limit + 1, body, {"X-Total-Count": str(items)}

    def cursor_style(request: web.Request) -> tuple[int, Any, dict[str, str]]:
        n = size(request, "per_page")
        cursor = request.query.get("cursor")
        after = _decode_cursor(cursor) if cursor else 0
        chunk = records(after + 1, n)
        nxt = _encode_cursor(after + n) if after + n < items else None
        return after // n + 1, {"items": chunk, "next_cursor": nxt}, {}

    def next_url_style(request: web.Request) -> tuple[int, Any, dict[str, str]]:
        n, after = size(request, "per_page"), _int(request, "after", 0)
        if after < 0:
            raise web.HTTPBadRequest(text="after >= 0")
        nxt = None
        if after + n < items:
            nxt = str(request.url.update_query({"after": after + n, "per_page": n}))
        return after // n + 1, {"items": records(after + 1, n), "next": nxt}, {}

    def link_style(request: web.Request) -> tuple[int, Any, dict[str, str]]:
        page, n = _int(request, "page", 1), size(request, "per_page")
        if page < 1:
            raise web.HTTPBadRequest(text="page >= 1")
        last = max(1, -(-items // n))

        def link(number: int, rel: str) -> str:
            url: URL = request.url.update_query({"page": number, "per_page": n})
            return f'<{url}>; rel="{rel}"'

        links = [link(1, "first")]
        if page > 1:
            links.append(link(min(page - 1, last), "prev"))
        if page < last:
            links.append(link(page + 1, "next"))
        links.append(link(last, "last"))
        return page, records((page - 1) * n + 1, n), {"Link": ", ".join(links)}

    styles = {
        "page": page_style,
        "offset": offset_style,
        "cursor": cursor_style,
        "next-url": next_url_style,
        "link": link_style,
    }
    answer = styles[style]

    async def items_handler(request: web.Request) -> web.Response:
        if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
            return json({"error": "send Authorization: Bearer <token>"}, 401)
        limits: dict[str, str] = {}
        if window is not None:
            allowed, remaining, reset = window.take()
            limits = {
                "RateLimit-Limit": str(window.limit),
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": str(reset),
            }
            if not allowed:
                limits["Retry-After"] = str(reset)
                return json({"error": "rate limit exceeded"}, 429, limits)
        if latency:
            await asyncio.sleep(latency)
        if fault_rate and faults.random() < fault_rate:
            return json({"error": "injected fault (--fault-rate)"}, 503, limits)
        number, body, headers = answer(request)
        if number in failing:
            return json({"error": f"page {number} always fails (--fail-page)"}, 500, limits)
        return json(body, headers={**headers, **limits})

    app = web.Application()
    app.router.add_get("/items", items_handler)
    return app


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    items: int = DEFAULT_ITEMS,
    latency: float = 0.002,
    **options: Any,
) -> tuple[web.AppRunner, str]:
    """Start the demo API; returns the runner (``await runner.cleanup()`` to stop) and its URL.

    ``options`` are those of :func:`make_app`: ``per_page``, ``style``, ``fault_rate``,
    ``seed``, ``fail_pages``, ``rate_limit``, ``token``, ``max_per_page``.
    """
    app = make_app(items=items, latency=latency, **options)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}/items"

"""The embedded demo API: an ``aiohttp.web`` app serving paginated JSON, for trying streampage.

``GET /items?page=N&per_page=M`` answers::

    {"page": N, "per_page": M, "total_pages": T, "total_items": I,
     "items": [{"id": 1, "name": "item-1", "price": 1.5, "tags": [...]}, ...]}

with ``X-Total-Count: I``; pages past the last are empty (``"items": []``), as many real APIs
do. Each response waits ``latency`` seconds first, to look like a real network.
``python -m streampage serve-demo`` runs it alone.
"""

from __future__ import annotations

import asyncio
import random

import msgspec
from aiohttp import web

__all__ = ["DEFAULT_ITEMS", "DEFAULT_PER_PAGE", "make_app", "serve"]

DEFAULT_ITEMS = 100_000
DEFAULT_PER_PAGE = 25
_TAGS = ("red", "green", "blue", "small", "large", "sale", "new", "classic")


class Item(msgspec.Struct):
    id: int
    name: str
    price: float
    tags: list[str]


class ItemsPage(msgspec.Struct):
    """The shape of a demo page, for ``stream(..., decode=ItemsPage)``."""

    page: int
    per_page: int
    total_pages: int
    total_items: int
    items: list[Item]


def make_app(
    *, items: int = DEFAULT_ITEMS, latency: float = 0.002, max_per_page: int = 100
) -> web.Application:
    """The demo API with ``items`` records; every response is delayed by ``latency`` seconds."""
    encoder = msgspec.json.Encoder()

    def item(i: int) -> Item:
        rnd = random.Random(i)
        return Item(i, f"item-{i}", round(rnd.uniform(1, 500), 2), rnd.sample(_TAGS, 2))

    async def items_handler(request: web.Request) -> web.Response:
        try:
            page = int(request.query.get("page", "1"))
            per_page = int(request.query.get("per_page", str(DEFAULT_PER_PAGE)))
        except ValueError:
            raise web.HTTPBadRequest(text="page and per_page must be integers") from None
        if page < 1 or not 1 <= per_page <= max_per_page:
            raise web.HTTPBadRequest(text=f"page >= 1 and 1 <= per_page <= {max_per_page}")
        if latency:
            await asyncio.sleep(latency)
        total_pages = -(-items // per_page)
        first = (page - 1) * per_page + 1
        last = min(page * per_page, items)
        body = ItemsPage(
            page, per_page, total_pages, items, [item(i) for i in range(first, last + 1)]
        )
        return web.Response(
            body=encoder.encode(body),
            content_type="application/json",
            headers={"X-Total-Count": str(items)},
        )

    app = web.Application()
    app.router.add_get("/items", items_handler)
    return app


async def serve(
    *, host: str = "127.0.0.1", port: int = 0, items: int = DEFAULT_ITEMS, latency: float = 0.002
) -> tuple[web.AppRunner, str]:
    """Start the demo API; returns the runner (``await runner.cleanup()`` to stop) and its URL."""
    runner = web.AppRunner(make_app(items=items, latency=latency), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, f"http://{host}:{bound}/items"

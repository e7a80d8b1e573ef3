"""A real extraction job, as the issue that asked for them writes it: every order of every
customer (a dependent source), fetched incrementally by ``updated_since`` into PostgreSQL
upserting by ``id``, with OAuth2 tokens that expire during the run. Three runs against one
API that changes between them; each part has its own tests, this one holds them together."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import BasicAuth, web
from yarl import URL

import streampage
from streampage.auth import OAuth2ClientCredentials
from streampage.sinks.postgres import Postgres

pytest_plugins = ["pg_server"]

HANG = 60.0
PER_PAGE = 3  # customers a page, and orders a page


class Shop:
    """Customers by cursor, each with its orders by page number and a total; orders have
    ``updated_at`` (an integer clock) and ``updated_since`` keeps those at or after it.
    Bearer tokens from /token live ``ttl`` seconds; each request with an expired one is
    a 401."""

    def __init__(self, customers: int, ttl: float) -> None:
        self.clock = 100
        self.orders: dict[int, list[dict[str, Any]]] = {
            c: [self._order(c, i) for i in range(c % 4 * 2)] for c in range(1, customers + 1)
        }
        self.ttl = ttl
        self.tokens: dict[str, float] = {}
        self.issued = 0
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.url = ""

    def _order(self, c: int, i: int) -> dict[str, Any]:
        self.clock += 1
        return {"id": f"{c}-{i}", "customer": c, "total": i * 10, "updated_at": self.clock}

    def change(self, c: int, i: int) -> None:
        """Order i of customer c changes: a new total, a later updated_at."""
        order = next(o for o in self.orders[c] if o["id"] == f"{c}-{i}")
        self.clock += 1
        order.update(total=order["total"] + 1, updated_at=self.clock)

    def add(self, c: int) -> None:
        self.orders[c].append(self._order(c, len(self.orders[c])))

    def latest(self) -> dict[str, dict[str, Any]]:
        return {o["id"]: o for orders in self.orders.values() for o in orders}

    def authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        expires = self.tokens.get(token)
        return expires is not None and asyncio.get_running_loop().time() < expires

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form.get("grant_type") == "client_credentials"
        basic = BasicAuth.decode(request.headers["Authorization"])  # RFC 6749's default
        if (basic.login, basic.password) != ("job", "s3cret"):
            return web.json_response({"error": "invalid_client"}, status=401)
        self.issued += 1
        token = uuid.uuid4().hex
        self.tokens[token] = asyncio.get_running_loop().time() + self.ttl
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.ttl}
        )

    async def customers(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return web.json_response({"error": "expired"}, status=401)
        self.seen.append(("customers", dict(request.query)))
        ids = sorted(self.orders)
        at = int(request.query.get("cursor", 0))
        chunk = ids[at : at + PER_PAGE]
        after = at + PER_PAGE if at + PER_PAGE < len(ids) else None
        await asyncio.sleep(0.005)
        return web.json_response({"data": [{"id": c} for c in chunk], "next": after})

    async def orders_of(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return web.json_response({"error": "expired"}, status=401)
        c = int(request.match_info["c"])
        self.seen.append((f"orders/{c}", dict(request.query)))
        since = int(request.query.get("updated_since", 0))
        kept = sorted(
            (o for o in self.orders[c] if o["updated_at"] >= since),
            key=lambda o: (o["updated_at"], o["id"]),
        )
        page = int(request.query.get("page", 1))
        pages = max(1, -(-len(kept) // PER_PAGE))
        await asyncio.sleep(0.005)
        body = kept[(page - 1) * PER_PAGE : page * PER_PAGE]
        return web.json_response({"data": body, "pages": pages})


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    api = Shop(customers=40, ttl=0.25)
    app = web.Application()
    app.router.add_post("/token", api.token)
    app.router.add_get("/customers", api.customers)
    app.router.add_get("/customers/{c}/orders", api.orders_of)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api.url = f"http://127.0.0.1:{port}"
    yield api
    await runner.cleanup()


@pytest.fixture
async def pg_dsn(postgres_dsn: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield str(URL(postgres_dsn).with_path(f"/{name}"))
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


async def nightly(api: Shop, dsn: str) -> streampage.StreamStats:
    """The job of the issue, as written there (an OAuth2 auth= added)."""
    auth = OAuth2ClientCredentials(f"{api.url}/token", client_id="job", client_secret="s3cret")
    orders = (
        streampage.stream(
            f"{api.url}/customers",
            pages=streampage.Cursor(field="next"),
            concurrency=8,
            auth=auth,
        )
        .records("data")
        .then(
            lambda customer: streampage.Source(
                f"{api.url}/customers/{customer['id']}/orders", key=customer["id"]
            ),
            pages=streampage.PageNumber(total_pages="pages"),
        )
        .records("data")
    )
    job = orders.into(
        Postgres(dsn, table="orders", primary_key="id"),
        checkpoint="orders",
        incremental=streampage.Incremental(field="updated_at", param="updated_since"),
    )
    return await asyncio.wait_for(job, HANG)


async def table(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT data FROM orders")
    finally:
        await conn.close()
    return [json.loads(r["data"]) for r in rows]


async def test_every_order_of_every_customer_once_in_its_latest_form_run_after_run(
    shop: Shop, pg_dsn: str
) -> None:
    # run 1: everything
    first = await nightly(shop, pg_dsn)
    held = await table(pg_dsn)
    assert sorted(o["id"] for o in held) == sorted(shop.latest())
    assert {o["id"]: o for o in held} == shop.latest()
    assert first.parent_pages == -(-len(shop.orders) // PER_PAGE)
    assert not any("updated_since" in q for _, q in shop.seen)
    high = max(o["updated_at"] for o in shop.latest().values())

    # between the runs: orders change, new ones come; tokens expire meanwhile
    for c, i in [(3, 0), (7, 1), (18, 2)]:
        shop.change(c, i)
    for c in (5, 22):
        shop.add(c)
    await asyncio.sleep(shop.ttl)
    shop.seen.clear()
    issued = shop.issued

    # run 2: only what changed, sent to every child; each order once, in its new form
    began = asyncio.get_running_loop().time()
    second = await nightly(shop, pg_dsn)
    took = asyncio.get_running_loop().time() - began
    held = await table(pg_dsn)
    assert Counter(o["id"] for o in held) == Counter(set(shop.latest()))  # each once
    assert {o["id"]: o for o in held} == shop.latest()
    child_queries = [q for where, q in shop.seen if where.startswith("orders/")]
    assert child_queries and all(q.get("updated_since") == str(high) for q in child_queries)
    assert not any("updated_since" in q for where, q in shop.seen if where == "customers")
    assert second.records == 3 + 2  # 3 changed, 2 new ...
    assert second.incremental_skipped == 1  # ... and the one at the old high, written already
    assert shop.issued > issued  # the expired token was renewed ...
    assert shop.issued - issued <= took / shop.ttl + 2  # ... once an expiry, not a worker

    # run 3: nothing new; nothing written, nothing lost
    shop.seen.clear()
    third = await nightly(shop, pg_dsn)
    assert {o["id"]: o for o in await table(pg_dsn)} == shop.latest()
    assert third.records == 0

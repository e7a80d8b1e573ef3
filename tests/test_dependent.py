"""Dependent sources (issue 14): ``stream(parents).records(path).then(children)``.

"For every customer, every page of its orders": each record of a parent stream gives its
child sources, fetched by the parents' worker pool under its limits, as the parent records
arrive and without walking the parents ahead of the children; every child page of every
parent page is delivered (or committed) exactly once, and a resume fetches only what is
missing.

Every test talks to ``ShopApi``, a real aiohttp.web server on 127.0.0.1:

- ``/customers?cursor=C``: the parent pages as a cursor walk, ``{"data": [...], "next": C}``
  (``next`` is null on the last page);
- ``/customer-pages?page=N``: the same parent pages by number, ``{"data": [...], "pages": P}``;
- ``/customers/{id}/orders?page=N`` (and ``/refunds``): the child pages, ``{"data": [...],
  "pages": K}``; ``/orders?customer={id}&page=N`` serves the same orders by query.

Parent page ``n`` holds customers ``(n-1)*per_parent+1 .. n*per_parent``; customer ``c`` has
``child_pages(c)`` pages of ``per_page`` orders each, ``{"id": "orders/c/n/i", ...}``. A
customer with no orders says ``"pages": 0`` when ``c % 3 == 0`` (nothing to fetch past page
1) and ``"pages": 1`` otherwise (one empty page). The server counts every request by run
(the ``X-Run`` header the stream sends), endpoint and page, and the requests in flight
across all endpoints; it can fail a page with a status, hold it on an Event, or delay it.

The SIGKILL tests run ``tests/dependent_job.py`` in a subprocess against this server (24
parent pages, 1 to 3 child pages each, into SQLite, JSON Lines or PostgreSQL in batches of
5 records). The job prints ``commit`` after each commit; the test SIGKILLs it after 15,
reads what the sink holds committed (which child pages, so which parent pages have every
child committed), resumes it to the end (run 2) and once more (run 3, a finished run).
Each run sends its own ``X-Run`` header, so the server's counts say what each run fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import HANG, collect
from yarl import URL

import streampage
from streampage import ConfigurationError, Cursor, PageNumber, Source
from streampage.sinks import SQLite

pytest_plugins = ["pg_server"]  # postgres_dsn: a real server, for the kill test

JOB = Path(__file__).with_name("dependent_job.py")
ROOT = JOB.parent.parent

#: a key of the server's request log: ("parent", n), or (kind, customer, n) for a child
Key = tuple[Any, ...]


# ---------------------------------------------------------------------------- the API


class ShopApi:
    """Customers (the parents) and their orders (the children); see the module docstring."""

    def __init__(
        self,
        *,
        parents: int = 5,
        per_parent: int = 4,
        child_pages: Callable[[int], int] = lambda customer: 2,
        per_page: int = 2,
        delay: Callable[[Key], float] = lambda key: 0.0,
    ) -> None:
        self.parents = parents
        self.per_parent = per_parent
        self.child_pages = child_pages
        self.per_page = per_page
        self.delay = delay
        #: (X-Run, key) of every request, in arrival order
        self.requests: list[tuple[str, Key]] = []
        #: (key, X-Tenant, Authorization, loop time) of every request
        self.seen: list[tuple[Key, str | None, str | None, float]] = []
        #: (key, query) of every child request
        self.child_queries: list[tuple[Key, dict[str, str]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        #: key -> [status, times left (None: always)]
        self.failing: dict[Key, list[Any]] = {}
        self.gates: dict[Key, asyncio.Event] = {}
        #: keys whose request waits on its gate right now
        self.held: set[Key] = set()
        self.last_arrival = 0.0
        self._change = asyncio.Event()
        self.url = ""
        self._cursors = {self.cursor(n): n for n in range(2, parents + 1)}
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ content

    @staticmethod
    def cursor(n: int) -> str:
        return f"c{n * 7919:x}=="  # opaque, and needs percent-encoding

    def customers_on(self, n: int) -> list[int]:
        if not 1 <= n <= self.parents:
            return []
        return list(range((n - 1) * self.per_parent + 1, n * self.per_parent + 1))

    @property
    def customers(self) -> list[int]:
        return list(range(1, self.parents * self.per_parent + 1))

    def reported_pages(self, customer: int) -> int:
        pages = self.child_pages(customer)
        return pages if pages else (0 if customer % 3 == 0 else 1)

    def child_records(self, kind: str, customer: int, n: int) -> list[dict[str, Any]]:
        if not 1 <= n <= self.child_pages(customer):
            return []
        return [
            {"id": f"{kind}/{customer}/{n}/{i}", "customer": customer, "page": n}
            for i in range(self.per_page)
        ]

    def child_keys(self, customers: Iterable[int] | None = None) -> list[tuple[int, int]]:
        """(customer, page) of every order page that holds records."""
        chosen = self.customers if customers is None else customers
        return [(c, n) for c in chosen for n in range(1, self.child_pages(c) + 1)]

    def order_ids(self, customers: Iterable[int] | None = None, kind: str = "orders") -> list[str]:
        """The ids of every order (of ``customers``), sorted."""
        return sorted(
            r["id"] for c, n in self.child_keys(customers) for r in self.child_records(kind, c, n)
        )

    # ------------------------------------------------------------------ observation

    def served(self, run: str | None = None) -> Counter[Key]:
        """Requests by key, of one run (its X-Run header) or of all."""
        return Counter(key for tag, key in self.requests if run is None or tag == run)

    def parent_requests(self, run: str | None = None) -> Counter[int]:
        return Counter({key[1]: k for key, k in self.served(run).items() if key[0] == "parent"})

    def order_requests(self, run: str | None = None) -> Counter[tuple[int, int]]:
        return Counter(
            {(key[1], key[2]): k for key, k in self.served(run).items() if key[0] == "orders"}
        )

    def hold(self, key: Key) -> asyncio.Event:
        gate = self.gates[key] = asyncio.Event()
        return gate

    def fail(self, key: Key, status: int, times: int | None = None) -> None:
        """Answer ``key`` with ``status``, ``times`` times (None: always)."""
        self.failing[key] = [status, times]

    async def wait_for(self, predicate: Callable[[], bool], within: float = HANG) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever a request starts or ends,
        and every 10 ms (it may depend on the clock or the client)."""
        async with asyncio.timeout(within):
            while not predicate():
                change = self._change
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.01):
                        await change.wait()

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def quiet(self, seconds: float = 0.3, within: float = HANG) -> None:
        """Wait until no request has arrived for ``seconds``."""
        loop = asyncio.get_running_loop()
        await self.wait_for(lambda: loop.time() - self.last_arrival >= seconds, within)

    # ------------------------------------------------------------------ serving

    async def _serve(self, request: web.Request, key: Key, body: Callable[[], Any]) -> web.Response:
        loop = asyncio.get_running_loop()
        self.last_arrival = loop.time()
        self.requests.append((request.headers.get("X-Run", ""), key))
        self.seen.append(
            (
                key,
                request.headers.get("X-Tenant"),
                request.headers.get("Authorization"),
                loop.time(),
            )
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._changed()
        try:
            gate = self.gates.get(key)
            if gate is not None and not gate.is_set():
                self.held.add(key)
                self._changed()
                try:
                    await gate.wait()
                finally:
                    self.held.discard(key)
            seconds = self.delay(key)
            if seconds:
                await asyncio.sleep(seconds)
            failing = self.failing.get(key)
            if failing is not None and failing[1] != 0:
                if failing[1] is not None:
                    failing[1] -= 1
                return web.Response(status=failing[0], text=f"{key} failed")
            return web.json_response(body())
        finally:
            self.in_flight -= 1
            self._changed()

    async def by_cursor(self, request: web.Request) -> web.Response:
        cursor = request.query.get("cursor")
        n = 1 if cursor is None else self._cursors.get(cursor)
        if n is None:
            raise web.HTTPBadRequest(text=f"unknown cursor {cursor!r}")

        def body() -> Any:
            customers = [{"id": c, "name": f"customer-{c}"} for c in self.customers_on(n)]
            nxt = self.cursor(n + 1) if n < self.parents else None
            return {"data": customers, "next": nxt}

        return await self._serve(request, ("parent", n), body)

    async def by_number(self, request: web.Request) -> web.Response:
        n = int(request.query.get("page", "1"))

        def body() -> Any:
            customers = [{"id": c, "name": f"customer-{c}"} for c in self.customers_on(n)]
            return {"data": customers, "pages": self.parents}

        return await self._serve(request, ("parent", n), body)

    async def _child(self, request: web.Request, kind: str, customer: int) -> web.Response:
        n = int(request.query.get("page", "1"))
        key = (kind, customer, n)
        self.child_queries.append((key, dict(request.query)))

        def body() -> Any:
            records = self.child_records(kind, customer, n)
            return {"data": records, "pages": self.reported_pages(customer)}

        return await self._serve(request, key, body)

    async def by_path(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in ("orders", "refunds"):
            raise web.HTTPNotFound()
        return await self._child(request, kind, int(request.match_info["customer"]))

    async def by_query(self, request: web.Request) -> web.Response:
        return await self._child(request, "orders", int(request.query["customer"]))

    def orders_url(self, customer: int, kind: str = "orders") -> str:
        return f"{self.url}/customers/{customer}/{kind}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/customers", self.by_cursor)
        app.router.add_get("/customer-pages", self.by_number)
        app.router.add_get("/customers/{customer}/{kind}", self.by_path)
        app.router.add_get("/orders", self.by_query)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        for gate in self.gates.values():
            gate.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def shop() -> AsyncIterator[Callable[..., Awaitable[ShopApi]]]:
    """A factory: ``api = await shop(parents=..., ...)`` starts a ShopApi."""
    apis: list[ShopApi] = []

    async def make(**config: Any) -> ShopApi:
        api = ShopApi(**config)
        await api.start()
        apis.append(api)
        return api

    yield make
    for api in apis:
        await api.stop()


# ---------------------------------------------------------------------------- helpers


def parent_stream(api: ShopApi, parents: str, **options: Any) -> streampage.Stream[Any]:
    """The customers: a cursor walk (``"cursor"``) or page numbers up to a total (``"total"``)."""
    if parents == "cursor":
        return streampage.stream(f"{api.url}/customers", pages=Cursor(field="next"), **options)
    return streampage.stream(
        f"{api.url}/customer-pages", pages=PageNumber(total_pages="pages"), **options
    )


def orders_of(api: ShopApi, parents: str = "cursor", **options: Any) -> streampage.Stream[Any]:
    """For every customer, every page of its orders: the issue's example. ``options`` go to
    the parent ``stream(...)``."""
    return (
        parent_stream(api, parents, **options)
        .records("data")
        .then(
            lambda customer: Source(api.orders_url(customer["id"]), key=customer["id"]),
            pages=PageNumber(total_pages="pages"),
        )
    )


def child_of(page: streampage.Page[Any]) -> tuple[str, int, int]:
    """(kind, customer, page number) of a delivered page, from the URL it was fetched from;
    a parent page delivered to the caller fails the test."""
    url = URL(page.response.url)
    parts = url.path.strip("/").split("/")
    n = int(url.query.get("page", "1"))
    if parts == ["orders"]:
        return "orders", int(url.query["customer"]), n
    assert len(parts) == 3 and parts[0] == "customers", f"not a child page: {url}"
    return parts[2], int(parts[1]), n


def sqlite_ids(path: Path, table: str = "orders") -> list[str]:
    """The ids of the records ``table`` holds (what is committed), sorted."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if table not in tables:
            return []
        return sorted(json.loads(row[0])["id"] for row in db.execute(f"SELECT data FROM {table}"))


def duplicates(ids: Iterable[str]) -> list[str]:
    return sorted(i for i, k in Counter(ids).items() if k > 1)


# ---------------------------------------------------------------------------- delivery


@pytest.mark.parametrize("parents", ["cursor", "total"])
async def test_every_child_page_of_every_parent_page_exactly_once(shop, parents):
    # 5 parent pages of 4 customers; customer c has c % 4 pages of orders (0 to 3): with
    # none, one empty page or nothing past page 1
    api = await shop(
        parents=5,
        per_parent=4,
        child_pages=lambda c: c % 4,
        delay=lambda key: random.uniform(0, 0.01),
    )
    s = orders_of(api, parents, concurrency=8)
    assert isinstance(s, streampage.Stream)

    pages = await collect(s)

    delivered = Counter(child_of(p) for p in pages)  # no parent page among them
    assert not [k for k, times in delivered.items() if times > 1], f"twice: {delivered}"
    with_records = {("orders", c, n) for c, n in api.child_keys()}
    one_empty_page = {("orders", c, 1) for c in api.customers if api.reported_pages(c) == 1}
    nothing = {("orders", c, 1) for c in api.customers if api.reported_pages(c) == 0}
    assert with_records | one_empty_page <= set(delivered), "child pages missing"
    assert set(delivered) <= with_records | one_empty_page | nothing
    for page in pages:
        assert page.source.key == child_of(page)[1]  # what the callback gave
    ids = [r["id"] for p in pages for r in p.data["data"]]
    assert sorted(ids) == api.order_ids()
    assert s.failures == []
    assert s.stats.pages == len(pages)
    assert s.completeness.incomplete == 0 and s.completeness.verified > 0

    # the records of the same stream, once each
    records = [r["id"] async for r in orders_of(api, parents, concurrency=8).records("data")]
    assert sorted(records) == api.order_ids()


async def test_children_may_be_a_source_a_url_a_pair_none_or_a_list(shop):
    api = await shop(parents=2, per_parent=5, child_pages=lambda c: 1 + c % 3)

    def children(customer: dict[str, Any]) -> Any:
        c = customer["id"]
        form = c % 5
        if form == 0:
            return None
        if form == 1:
            return Source(api.orders_url(c), key=c)
        if form == 2:
            return api.orders_url(c)
        if form == 3:
            return (f"{api.url}/orders", {"customer": c})
        return [Source(api.orders_url(c), key=c), (api.orders_url(c, "refunds"), {})]

    # no pages=: the children's paginator is pages=auto, as for stream()
    s = (
        parent_stream(api, "cursor", concurrency=4)
        .records("data")
        .then(children, params={"currency": "EUR"})
    )
    pages = await collect(s)

    ids = sorted(r["id"] for p in pages for r in p.data["data"])
    with_orders = [c for c in api.customers if c % 5 != 0]
    refunds = [c for c in api.customers if c % 5 == 4]
    assert ids == sorted(api.order_ids(with_orders) + api.order_ids(refunds, "refunds"))
    for page in pages:
        kind, customer, _ = child_of(page)
        if customer % 5 in (1, 4) and kind == "orders":
            assert page.source.key == customer
    assert api.child_queries, "no child was fetched"
    for key, query in api.child_queries:
        assert query.get("currency") == "EUR", f"{key}: params= not merged into {query}"


async def test_a_list_of_children_may_hold_none(shop):
    # "a list of those": None among them is no child, as None alone is
    api = await shop(parents=1, per_parent=4, child_pages=lambda c: 2)
    s = (
        parent_stream(api, "cursor")
        .records("data")
        .then(
            lambda customer: (
                [None, api.orders_url(customer["id"])] if customer["id"] % 2 else [None]
            ),
            pages=PageNumber(total_pages="pages"),
        )
    )

    pages = await collect(s)

    assert sorted(r["id"] for p in pages for r in p.data["data"]) == api.order_ids([1, 3])


def test_then_on_the_records_of_a_dependent_stream_is_a_configuration_error() -> None:
    dependent = (
        streampage.stream("http://127.0.0.1:9/customers", pages=Cursor(field="next"))
        .records("data")
        .then(lambda customer: f"http://127.0.0.1:9/customers/{customer['id']}/orders")
    )
    with pytest.raises(ConfigurationError):
        dependent.records("data").then(lambda order: f"http://127.0.0.1:9/orders/{order['id']}")


# ---------------------------------------------------------------------------- one pool


async def test_children_share_the_parents_pool_and_its_concurrency(shop):
    # parents fan out (page numbers up to a total) while children of earlier parents run
    api = await shop(
        parents=6,
        per_parent=4,
        child_pages=lambda c: 2,
        delay=lambda key: 0.03 if key[0] == "parent" else 0.02,
    )

    pages = await collect(orders_of(api, "total", concurrency=4))

    assert sorted(r["id"] for p in pages for r in p.data["data"]) == api.order_ids()
    assert api.max_in_flight <= 4, "parents and children together exceeded concurrency=4"
    assert api.max_in_flight >= 3, "the pool never ran wide"


async def test_children_go_with_the_parents_headers_auth_and_rate(shop):
    api = await shop(parents=2, per_parent=5, child_pages=lambda c: 1)
    s = orders_of(
        api,
        "cursor",
        concurrency=8,
        headers={"X-Tenant": "acme"},
        auth=streampage.auth.Bearer("t0ken"),
        rate=streampage.RateLimit(40),
    )

    pages = await collect(s)

    assert len(pages) == 10
    assert len(api.seen) == 12  # 2 parent pages, 10 child pages
    for key, tenant, authorization, _ in api.seen:
        assert (tenant, authorization) == ("acme", "Bearer t0ken"), key
    times = sorted(t for *_, t in api.seen)
    # 12 requests at 40/s (no burst beyond one): 11 intervals of 25 ms, children included
    assert times[-1] - times[0] >= 0.8 * 11 / 40


async def test_children_follow_the_parents_retry_policy(shop):
    api = await shop(parents=2, per_parent=3, child_pages=lambda c: 2)
    api.fail(("orders", 4, 1), 503, times=1)
    s = orders_of(api, "cursor", concurrency=4, retry=False)

    with pytest.raises(streampage.HTTPStatusError) as caught:
        await collect(s)

    assert (caught.value.page, caught.value.status, caught.value.attempts) == (1, 503, 1)
    assert api.order_requests()[(4, 1)] == 1  # retry=False: one attempt, children too


async def test_a_transient_child_failure_is_retried_and_delivered_once(shop):
    api = await shop(parents=2, per_parent=3, child_pages=lambda c: 2)
    api.fail(("orders", 4, 2), 503, times=1)
    s = orders_of(api, "cursor", concurrency=4)

    pages = await collect(s)

    assert Counter(child_of(p) for p in pages)[("orders", 4, 2)] == 1
    assert sorted(r["id"] for p in pages for r in p.data["data"]) == api.order_ids()
    assert api.order_requests()[(4, 2)] == 2
    assert s.stats.retries == {"status 503": 1}
    assert s.failures == []


# ---------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("parents", ["cursor", "total"])
async def test_children_are_delivered_while_a_later_parent_page_is_held(shop, parents):
    api = await shop(parents=4, per_parent=3, child_pages=lambda c: 2)
    gate = api.hold(("parent", 3))
    early = {("orders", c, n) for c, n in api.child_keys(api.customers_on(1) + api.customers_on(2))}
    on_held_page = set(api.customers_on(3))
    seen: list[tuple[str, int, int]] = []

    async with asyncio.timeout(HANG), orders_of(api, parents, concurrency=8) as s:
        async for page in s:
            seen.append(child_of(page))
            if not gate.is_set() and early <= set(seen):
                # every child page of parent pages 1 and 2 is here, and page 3 is held
                await api.wait_for(lambda: ("parent", 3) in api.held)
                assert not [k for k in seen if k[1] in on_held_page]
                gate.set()

    assert gate.is_set(), "the stream ended before the children of pages 1 and 2 all came"
    assert sorted(seen) == sorted(("orders", c, n) for c, n in api.child_keys())


@pytest.mark.parametrize("parents", ["cursor", "total"])
async def test_a_consumer_that_stops_reading_holds_the_parent_walk(shop, leaks, parents):
    api = await shop(parents=200, per_parent=10, child_pages=lambda c: 1)

    async with asyncio.timeout(HANG), orders_of(api, parents, concurrency=8) as s:
        async for _page in s:
            await api.quiet(0.3)  # the consumer stops reading: the fetch fills up and waits
            break

    parent_pages = api.parent_requests()
    assert sum(parent_pages.values()) <= 4, f"the parent walk ran ahead: {sorted(parent_pages)}"
    assert len(api.order_requests()) >= 1
    await leaks.wait_no_tasks()
    leaks.assert_sessions_closed()


# ---------------------------------------------------------------------------- failures


async def test_a_child_page_that_fails_raises_a_page_error_naming_it(shop):
    api = await shop(parents=3, per_parent=3, child_pages=lambda c: 3)
    api.fail(("orders", 7, 2), 404)
    s = orders_of(api, "cursor", concurrency=4)

    with pytest.raises(streampage.PageError) as caught:
        await collect(s)

    error = caught.value
    assert isinstance(error, streampage.HTTPStatusError)
    assert (error.page, error.status) == (2, 404)
    assert "/customers/7/orders" in error.url
    assert "page 2" in str(error) and "/customers/7/orders" in str(error)
    assert error.source.key == 7


async def test_a_failed_child_is_skipped_and_a_resume_fetches_only_its_missing_pages(
    shop, tmp_path
):
    # 3 parent pages of 4 customers; customer 7 (parent page 2) has 3 pages, its page 2 fails
    api = await shop(parents=3, per_parent=4, child_pages=lambda c: 3 if c == 7 else 1 + c % 2)
    api.fail(("orders", 7, 2), 500)
    db = tmp_path / "out.db"
    retry = streampage.RetryPolicy(attempts=2, backoff=0.005, max_wait=0.02)

    async def run(tag: str, mode: str) -> tuple[streampage.Stream[Any], Any]:
        s = orders_of(
            api, "total", concurrency=4, on_error="skip", retry=retry, headers={"X-Run": tag}
        )
        drained = s.records("data").into(
            SQLite(db, "orders"), batch=3, checkpoint="orders", mode=mode
        )
        return s, await asyncio.wait_for(drained, HANG)

    first, _ = await run("1", "new")
    assert [(f.page, f.source.key, f.status) for f in first.failures] == [(2, 7, 500)]
    assert isinstance(first.failures[0].error, streampage.HTTPStatusError)
    failed = {r["id"] for r in api.child_records("orders", 7, 2)}
    assert sqlite_ids(db) == sorted(set(api.order_ids()) - failed)

    # the fault is gone: the resume fetches page 2 of customer 7
    del api.failing[("orders", 7, 2)]
    second, stats = await run("2", "resume")
    assert stats.resumed_finished is False  # the first run was not finished
    assert second.failures == []
    assert sqlite_ids(db) == api.order_ids()
    fetched, parents_fetched = api.order_requests("2"), api.parent_requests("2")
    assert fetched[(7, 2)] == 1

    # a resume of the finished run fetches no child again
    _, stats = await run("3", "resume")
    assert stats.resumed_finished is True
    assert api.order_requests("3") == Counter()
    assert sqlite_ids(db) == api.order_ids()

    # the resume (run 2) fetched nothing else of a child: not the complete children, not
    # the parent page 3 whose children are all complete, and of customer 7 only its page 1
    # besides page 2: a paginator that reads its total on page 1 reads it again on resume
    # (not delivered again: the records above are each there once)
    assert {c for c, _ in fetched} == {7}, f"complete children fetched again: {fetched}"
    assert set(parents_fetched) <= {1, 2}, f"parent pages fetched again: {parents_fetched}"
    assert set(fetched) <= {(7, 1), (7, 2)}, fetched


class Boom(Exception):
    pass


@pytest.mark.parametrize("wrong", ["raises", "not a source"])
async def test_a_wrong_children_callback_names_the_parent_page_and_commits_nothing_of_it(
    shop, tmp_path, wrong
):
    # parent page 3 (customers 7, 8, 9) comes last; the callback fails on customer 9
    api = await shop(
        parents=4,
        per_parent=3,
        child_pages=lambda c: 1,
        delay=lambda key: 0.2 if key == ("parent", 3) else 0.0,
    )
    bad = {9}

    def children(customer: dict[str, Any]) -> Any:
        c = customer["id"]
        if c in bad:
            if wrong == "raises":
                raise Boom(f"no orders for customer {c}")
            return 42
        return Source(api.orders_url(c), key=c)

    def orders() -> streampage.Records:
        return (
            parent_stream(api, "total", concurrency=4)
            .records("data")
            .then(children, pages=PageNumber(total_pages="pages"))
            .records("data")
        )

    db = tmp_path / "out.db"
    expected: tuple[type[Exception], ...] = (
        (Boom, ConfigurationError) if wrong == "raises" else (ConfigurationError,)
    )
    with pytest.raises(expected) as caught:
        await asyncio.wait_for(orders().into(SQLite(db, "orders"), batch=2, checkpoint="o"), HANG)

    error = caught.value
    text = "\n".join([str(error), *getattr(error, "__notes__", [])])
    assert re.search(r"page[ =]3\b", text), f"the parent page is not named: {text}"
    held = sqlite_ids(db)
    assert held, "nothing was committed before the error: the test would prove nothing"
    assert not [i for i in held if int(i.split("/")[1]) in (7, 8, 9)], held
    assert not duplicates(held)

    # with the callback fixed, a resume brings the rest: every order exactly once
    bad.clear()
    await asyncio.wait_for(
        orders().into(SQLite(db, "orders"), batch=2, checkpoint="o", mode="resume"), HANG
    )
    assert sqlite_ids(db) == api.order_ids()


# ---------------------------------------------------------------------------- SIGKILL


class Job:
    """One run of dependent_job.py: counts the commits it reports, can be SIGKILLed."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.commits = 0
        self.done: str | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as err:  # noqa: ASYNC230 - before the child starts
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(JOB), *self.args,
                stdout=asyncio.subprocess.PIPE, stderr=err, env=env, cwd=ROOT,
            )  # fmt: skip
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode().strip()
            if text == "commit":
                self.commits += 1
            elif text.startswith("done"):
                self.done = text

    async def kill_after(self, commits: int) -> bool:
        """SIGKILL the job once it has reported ``commits`` commits; False if it exited
        before."""
        assert self.proc is not None
        async with asyncio.timeout(30):
            while self.commits < commits:
                if self.proc.returncode is not None:
                    break
                await asyncio.sleep(0.001)
        killed = False
        with contextlib.suppress(ProcessLookupError):
            if self.proc.returncode is None:
                self.proc.send_signal(signal.SIGKILL)
                killed = True
        rc = await self.wait()
        return killed and rc == -signal.SIGKILL

    async def wait(self) -> int:
        assert self.proc is not None and self._reader is not None
        async with asyncio.timeout(30):
            rc = await self.proc.wait()
            await self._reader
        return rc

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class Target:
    """Where the job's sink writes (SQLite, JSON Lines or PostgreSQL), and how to read back
    what it holds: the committed records only, as a resume would find them."""

    def __init__(self, kind: str, tmp_path: Path, dsn: str | None = None) -> None:
        self.kind = kind
        self.dsn = dsn
        self.schema = f"dep_{uuid.uuid4().hex[:12]}"
        self.path = tmp_path / ("out.db" if kind == "sqlite" else "out.jsonl")

    async def setup(self) -> None:
        if self.kind == "postgres":
            import asyncpg

            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f"CREATE SCHEMA {self.schema}")
            finally:
                await conn.close()

    def args(self) -> list[str]:
        if self.kind == "postgres":
            assert self.dsn is not None
            return ["postgres", self.dsn, "--table", f"{self.schema}.orders"]
        return [self.kind, str(self.path)]

    async def held(self) -> list[str]:
        """The ids of the committed records, sorted."""
        if self.kind == "sqlite":
            return sqlite_ids(self.path)
        if self.kind == "postgres":
            import asyncpg

            conn = await asyncpg.connect(self.dsn)
            try:
                if await conn.fetchval("SELECT to_regclass($1)", f"{self.schema}.orders") is None:
                    return []
                rows = await conn.fetch(f"SELECT data::text FROM {self.schema}.orders")
            finally:
                await conn.close()
            return sorted(json.loads(row[0])["id"] for row in rows)
        # JSON Lines: the file up to the offset of the journal's last commit of "orders"
        journal = self.path.with_name(f".{self.path.name}.streampage") / "journal"
        offset = 0
        if journal.exists():
            for line in journal.read_bytes().split(b"\n")[:-1]:
                try:
                    entry = json.loads(line)
                except ValueError:  # a torn last line is no commit
                    break
                if entry.get("name") == "orders":
                    offset = entry["offset"]
        data = self.path.read_bytes()[:offset] if self.path.exists() else b""
        return sorted(json.loads(line)["id"] for line in data.splitlines())


#: commits the first run reports before it is killed (of about 80: batches of 5 records)
KILL_AFTER = 15


async def sigkill_then_resume(api: ShopApi, target: Target, parents: str, tmp_path: Path) -> None:
    await target.setup()
    common = [api.url, *target.args(), "--parents", parents, "--batch", "5"]

    def job(run: str, resume: bool) -> Job:
        args = [*common, "--run", run, *(["--resume"] if resume else [])]
        return Job(args, tmp_path / f"run{run}.stderr")

    first = job("1", resume=False)
    await first.start()
    killed = await first.kill_after(KILL_AFTER)
    assert killed, f"run 1 was not killed mid-way ({first.commits} commits):\n{first.stderr()}"

    # what the kill left: whole child pages, each once
    held = await target.held()
    all_ids = api.order_ids()
    assert 0 < len(held) < len(all_ids), f"the kill did not land mid-way: {len(held)} held"
    assert not duplicates(held), f"committed twice: {duplicates(held)}"
    committed = {(int(i.split("/")[1]), int(i.split("/")[2])) for i in held}
    for c, n in committed:
        page = [r["id"] for r in api.child_records("orders", c, n)]
        assert set(page) <= set(held), f"child page {(c, n)} committed in part"
    done = {
        p
        for p in range(1, api.parents + 1)
        if all(key in committed for key in api.child_keys(api.customers_on(p)))
    }
    assert done, "no parent page had all of its children committed at the kill"

    second = job("2", resume=True)
    await second.start()
    rc = await second.wait()
    assert rc == 0, f"the resume failed:\n{second.stderr()}"
    final = await target.held()
    assert final == all_ids, (
        f"not every order exactly once: {len(final)} records, duplicated "
        f"{duplicates(final)[:10]}, missing {sorted(set(all_ids) - set(final))[:10]}"
    )
    fetched, parents_fetched = api.order_requests("2"), api.parent_requests("2")

    # a resume of the finished run fetches no child again, and writes nothing
    third = job("3", resume=True)
    await third.start()
    rc = await third.wait()
    assert rc == 0, f"the resume of the finished run failed:\n{third.stderr()}"
    assert third.done is not None and third.done.split()[2] == "True", third.done
    assert api.order_requests("3") == Counter()
    assert await target.held() == all_ids

    # run 2 fetched no child committed whole, and no parent page whose children all were
    # (but a cursor walk fetches its last committed parent page again, for its link)
    whole = {c for c in api.customers if all(k in committed for k in api.child_keys([c]))}
    again = sorted(k for k in fetched if k[0] in whole)
    assert not again, f"children committed whole fetched again: {again}"
    # the resume (run 2) fetched no child committed whole, and no parent page whose
    # children all were, but what the paginator reads again on any resume, without
    # their children: a cursor walk starts again at its last page with every page
    # before it done (for its link) and walks through the done pages after it; a page
    # number paginator reads its total on page 1 again
    refetched = set(parents_fetched) & done
    if parents == "cursor":
        prefix = max((n for n in done if set(range(1, n + 1)) <= done), default=0)
        allowed = {n for n in done if n >= prefix}
    else:
        allowed = {1}
    assert refetched <= allowed, (
        f"parent pages with every child committed fetched again: {sorted(refetched)} "
        f"(committed: {sorted(done)})"
    )
    # nor a committed page of a child the kill left part-way, but its page 1, where it
    # reads its page count
    again = sorted(k for k in set(fetched) & committed if k[1] != 1)
    assert not again, f"committed child pages fetched again: {again}"


async def kill_test_api(shop: Callable[..., Awaitable[ShopApi]]) -> ShopApi:
    """24 parent pages of 4 customers, 1 to 3 pages of 2 orders each (no empty child, so
    that the records held say which child pages are committed): about 80 commits of 5."""
    return await shop(
        parents=24,
        per_parent=4,
        child_pages=lambda c: 1 + (c * 7) % 3,
        delay=lambda key: (
            0.01 if key[0] == "parent" else (5 + (key[1] * 13 + key[2] * 7) % 11) / 1000
        ),
    )


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


@posix_only
@pytest.mark.parametrize("parents", ["cursor", "total"])
@pytest.mark.parametrize("kind", ["sqlite", "jsonl"])
async def test_sigkill_then_resume(shop, tmp_path, kind, parents):
    """The job is SIGKILLed after KILL_AFTER commits and resumed (run 2), then resumed once
    more after it finished (run 3). The server counts each run's requests by its X-Run
    header; the sink's committed records say which child pages the kill left committed."""
    api = await kill_test_api(shop)
    await sigkill_then_resume(api, Target(kind, tmp_path), parents, tmp_path)


@posix_only
async def test_sigkill_then_resume_postgres(shop, tmp_path, postgres_dsn):
    api = await kill_test_api(shop)
    await sigkill_then_resume(api, Target("postgres", tmp_path, postgres_dsn), "cursor", tmp_path)


# ---------------------------------------------------------------------- a second reading's
# findings: credentials and origins, a finished run's last parent page, the fingerprint of
# a dependent checkpoint, children that share a key, marks without records


class Memory:
    """A sink in memory: its records and checkpoint as of its last commit; the commit
    numbered ``fail_at`` raises (nothing of it lands), as a full disk would."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.stored: bytes | None = None
        self.pending: list[Any] = []
        self.durable: list[Any] = []
        self.commits = 0
        self.fail_at = fail_at

    def __repr__(self) -> str:
        return "Memory()"

    async def open(self, name: str) -> bytes | None:
        self.pending = []
        return self.stored

    async def write(self, records: Any) -> None:
        self.pending.extend(records)

    async def commit(self, name: str, checkpoint: bytes) -> None:
        if self.commits + 1 == self.fail_at:
            raise OSError("No space left on device")
        self.commits += 1
        self.durable.extend(self.pending)
        self.pending = []
        self.stored = checkpoint

    async def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def served(routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]):
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("credential", ["bearer", "query key"])
async def test_a_child_on_another_origin_is_refused_or_fetched_without_credentials(credential):
    seen: list[tuple[str, str | None, str]] = []

    async def files(request: web.Request) -> web.Response:
        seen.append(("foreign", request.headers.get("Authorization"), request.query_string))
        return web.json_response({"data": [{"file": request.match_info["id"]}]})

    async with served({"/files/{id}": files}) as foreign:

        async def customers(request: web.Request) -> web.Response:
            seen.append(("home", request.headers.get("Authorization"), request.query_string))
            links = [f"{foreign}/files/1", f"{home}/files/2"]  # a record names any URL
            return web.json_response({"data": [{"id": 1, "links": links}]})

        async def own_files(request: web.Request) -> web.Response:
            seen.append(("home", request.headers.get("Authorization"), request.query_string))
            return web.json_response({"data": [{"file": request.match_info["id"]}]})

        async with served({"/customers": customers, "/files/{id}": own_files}) as home:
            auth = (
                streampage.auth.Bearer("s3cret")
                if credential == "bearer"
                else streampage.auth.APIKey("api_key", "s3cret", where="query")
            )

            def dependent(**then: Any) -> streampage.Stream[Any]:
                parents = streampage.stream(
                    f"{home}/customers", pages=PageNumber(stop=1), auth=auth
                )
                return parents.records("data").then(
                    lambda c: c["links"], pages=PageNumber(stop=1), **then
                )

            with pytest.raises(ConfigurationError) as refused:
                await collect(dependent())
            said = str(refused.value)
            assert "parent page 1" in said and "another origin" in said
            assert "cross_origin=True" in said and "s3cret" not in said
            assert not [row for row in seen if row[0] == "foreign"]  # refused before a request

            seen.clear()
            pages = await collect(dependent(cross_origin=True))
            assert sorted(p.data["data"][0]["file"] for p in pages) == ["1", "2"]
            foreign_rows = [row for row in seen if row[0] == "foreign"]
            home_rows = [row for row in seen if row[0] == "home"]
            assert len(foreign_rows) == 1 and len(home_rows) == 2
            for _, authorization, query in foreign_rows:  # no credential of the stream's
                assert authorization is None and "s3cret" not in query
            for _, authorization, query in home_rows:  # the parent's origin gets them all
                assert "s3cret" in (authorization or "") + query


async def test_a_resume_of_a_finished_run_takes_new_records_of_the_last_parent_page():
    customers_now = [1, 2, 3]
    requests: Counter[tuple[str, int]] = Counter()

    async def customers(request: web.Request) -> web.Response:
        at = int(request.query.get("cursor", 0))
        requests[("parent", at)] += 1
        chunk = customers_now[at : at + 2]
        after = at + 2 if at + 2 < len(customers_now) else None
        return web.json_response({"data": [{"id": c} for c in chunk], "next": after})

    async def orders(request: web.Request) -> web.Response:
        c = int(request.match_info["c"])
        requests[("orders", c)] += 1
        return web.json_response({"data": [{"id": f"{c}-a"}, {"id": f"{c}-b"}], "pages": 1})

    async with served({"/customers": customers, "/c/{c}/orders": orders}) as api:

        def job() -> streampage.Records:
            return (
                streampage.stream(f"{api}/customers", pages=Cursor(field="next"))
                .records("data")
                .then(lambda c: f"{api}/c/{c['id']}/orders", pages=PageNumber(total_pages="pages"))
                .records("data")
            )

        sink = Memory()
        await job().into(sink, batch=2)
        assert sorted(r["id"] for r in sink.durable) == ["1-a", "1-b", "2-a", "2-b", "3-a", "3-b"]
        customers_now.append(4)  # the short last parent page (customer 3) fills up
        requests.clear()
        stats = await job().into(sink, batch=2, mode="resume")
        assert stats.resumed_finished
        assert sorted(r["id"] for r in sink.durable)[-2:] == ["4-a", "4-b"]
        assert len(sink.durable) == 8  # each once
        assert requests[("orders", 4)] == 1
        assert not [k for k in requests if k[0] == "orders" and k[1] != 4]  # no other child
        assert b'"finished":true' in (sink.stored or b"")


async def test_a_checkpoint_of_a_plain_stream_is_not_resumed_as_a_dependent_one():
    async def customers(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": 1}, {"id": 2}]})

    async def orders(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": request.match_info["c"]}], "pages": 1})

    async with served({"/customers": customers, "/c/{c}/orders": orders}) as api:
        plain = streampage.stream(f"{api}/customers", pages=PageNumber(stop=1)).records("data")
        dependent = (
            streampage.stream(f"{api}/customers", pages=PageNumber(stop=1))
            .records("data")
            .then(lambda c: f"{api}/c/{c['id']}/orders", pages=PageNumber(total_pages="pages"))
            .records("data")
        )
        sink = Memory()
        await plain.into(sink)
        with pytest.raises(ConfigurationError, match="checkpoint is of a plain stream"):
            await dependent.into(sink, mode="resume")
        other = Memory()
        await (
            streampage.stream(f"{api}/customers", pages=PageNumber(stop=1))
            .records("data")
            .then(lambda c: f"{api}/c/{c['id']}/orders", pages=PageNumber(total_pages="pages"))
            .records("data")
            .into(other)
        )
        again = streampage.stream(f"{api}/customers", pages=PageNumber(stop=1)).records("data")
        with pytest.raises(ConfigurationError, match="checkpoint is of a dependent stream"):
            await again.into(other, mode="resume")


async def test_two_children_with_one_key_are_two_children_to_a_resume():
    slow = asyncio.Event()

    async def customers(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": 1}]})

    async def child(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "refunds" and not slow.is_set():
            await asyncio.sleep(0.3)  # orders end (and commit) first
        return web.json_response({"data": [{"r": f"{kind}-1"}], "pages": 1})

    async with served({"/customers": customers, "/c/{c}/{kind}": child}) as api:

        def job() -> streampage.Records:
            def children(c: dict[str, Any]) -> list[Source]:
                return [
                    Source(f"{api}/c/{c['id']}/orders", key=c["id"]),
                    Source(f"{api}/c/{c['id']}/refunds", key=c["id"]),  # the same key
                ]

            return (
                streampage.stream(f"{api}/customers", pages=PageNumber(stop=1))
                .records("data")
                .then(children, pages=PageNumber(total_pages="pages"))
                .records("data")
            )

        sink = Memory(fail_at=2)
        with pytest.raises(streampage.SinkError):
            await job().into(sink, batch=1)
        assert [r["r"] for r in sink.durable] == ["orders-1"]
        slow.set()
        sink.fail_at = None
        await job().into(sink, batch=1, mode="resume")
        assert sorted(r["r"] for r in sink.durable) == ["orders-1", "refunds-1"]


async def test_parent_pages_without_children_are_committed_as_they_are_done():
    requests: Counter[int] = Counter()

    async def parents(request: web.Request) -> web.Response:
        page = int(request.query.get("page", 1))
        requests[page] += 1
        return web.json_response({"data": [{"id": page, "kids": page == 60}], "pages": 60})

    async def kid(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"x": 1}], "pages": 1})

    async with served({"/p": parents, "/k/{i}": kid}) as api:

        def job() -> streampage.Records:
            return (
                streampage.stream(f"{api}/p", pages=PageNumber(total_pages="pages"), concurrency=4)
                .records("data")
                .then(
                    lambda r: f"{api}/k/{r['id']}" if r["kids"] else None,
                    pages=PageNumber(total_pages="pages"),
                )
                .records("data")
            )

        sink = Memory(fail_at=4)
        with pytest.raises(streampage.SinkError):
            await job().into(sink, batch=5)
        assert sink.commits == 3 and not sink.durable  # done parent pages, and no record
        done = json.loads(sink.stored or b"{}")["sources"]
        committed = sum(b - a + 1 for ranges in done.values() for a, b in ranges["pages"])
        assert committed >= 15
        requests.clear()
        sink.fail_at = None
        await job().into(sink, batch=5, mode="resume")
        assert [r["x"] for r in sink.durable] == [1]
        assert sum(requests.values()) <= 60 - committed + 1  # (+ page 1, for the total)

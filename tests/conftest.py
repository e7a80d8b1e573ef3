"""Fixtures: a real, configurable aiohttp.web page server on 127.0.0.1, and leak checks.

Every test talks to a real HTTP server started in the test's own event loop (so the server
can hold a page on an ``asyncio.Event`` the test controls). The server counts what it sees:
the pages requested in arrival order, the handlers in flight and their maximum, the
responses sent, and the TCP connections open right now.

    async def test_x(page_server):
        server = await page_server(pages=10, delay=lambda n: 0.01)
        async with streampage.stream(server.url, pages=streampage.PageNumber(stop=10)) as s:
            ...
        assert server.max_in_flight <= 16
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

import streampage

#: Upper bound for any single wait in a test; a hang is a failure, not a stuck suite.
HANG = 10.0


def item(i: int) -> dict[str, Any]:
    """The record with id ``i``, as every page server serves it."""
    return {"id": i, "name": f"item-{i}"}


class _CountingServer(web.Server):
    """aiohttp's low-level server, counting the TCP connections that are open right now."""

    def __init__(self, handler: Any, owner: PageServer, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        self._owner._open.add(handler)
        self._owner.connections_made += 1
        self._owner._changed()
        super().connection_made(handler, transport)

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        self._owner._open.discard(handler)
        self._owner._changed()
        super().connection_lost(handler, exc)


class PageServer:
    """A paginated JSON API: pages ``1..pages`` hold ``per_page`` records each.

    Page ``n`` is ``{"page": n, "items": [...], **extra(n)}`` (``shape="object"``) or the bare
    list of records (``shape="list"``). Past the last page the server answers an empty page
    (``past_end="empty"``) or 404 (``past_end="404"``). ``pages=None`` never ends.

    Overrides, by page number: ``fail`` maps a page to an HTTP status (error response with a
    text body), ``raw`` to raw body bytes, ``headers(n)`` adds response headers, ``delay(n)``
    is seconds to wait before answering, and ``hold(n)`` returns an Event the page waits for.
    """

    def __init__(
        self,
        *,
        pages: int | None = 10,
        per_page: int = 3,
        shape: str = "object",
        past_end: str = "empty",
        param: str = "page",
        delay: Callable[[int], float] | None = None,
        extra: Callable[[int], Mapping[str, Any]] | None = None,
        headers: Callable[[int], Mapping[str, str]] | None = None,
        fail: Mapping[int, int] | None = None,
        raw: Mapping[int, bytes] | None = None,
    ) -> None:
        assert shape in ("object", "list")
        assert past_end in ("empty", "404")
        self.pages = pages
        self.per_page = per_page
        self.shape = shape
        self.past_end = past_end
        self.param = param
        self.delay = delay
        self.extra = extra
        self.headers = headers
        self.fail = dict(fail or {})
        self.raw = dict(raw or {})
        self.gates: dict[int, asyncio.Event] = {}

        # --- what the server saw
        #: page numbers in the order their requests arrived
        self.requests: list[int] = []
        #: the query of every request, in arrival order
        self.queries: list[dict[str, list[str]]] = []
        #: page numbers in the order their responses were sent
        self.completed: list[int] = []
        #: ("start" | "end", page) in order, for "A finished before B started" checks
        self.events: list[tuple[str, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.responses_sent = 0
        self.connections_made = 0
        self._open: set[Any] = set()
        self._change = asyncio.Event()
        self._runner: web.ServerRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ content

    def items(self, n: int) -> list[dict[str, Any]]:
        """The records page ``n`` holds (empty past the last page)."""
        if n < 1 or (self.pages is not None and n > self.pages):
            return []
        first = (n - 1) * self.per_page + 1
        return [item(i) for i in range(first, first + self.per_page)]

    def body(self, n: int) -> Any:
        """The decoded JSON body of page ``n``, as a client should see it."""
        if self.shape == "list":
            return self.items(n)
        return {"page": n, "items": self.items(n), **(self.extra(n) if self.extra else {})}

    def is_past_end(self, n: int) -> bool:
        return self.pages is not None and n > self.pages

    def hold(self, n: int) -> asyncio.Event:
        """Make page ``n`` wait until the returned event is set."""
        gate = self.gates[n] = asyncio.Event()
        return gate

    def release_all(self) -> None:
        for gate in self.gates.values():
            gate.set()

    # ------------------------------------------------------------------ observation

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], within: float = HANG) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever the server's state moves."""
        async with asyncio.timeout(within):
            while not predicate():
                change = self._change
                # also wake up now and then: a predicate may depend on the client's state
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.01):
                        await change.wait()

    # ------------------------------------------------------------------ serving

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        query = {k: request.query.getall(k) for k in request.query}
        try:
            n = int(request.query.get(self.param, "1"))
        except ValueError:
            return web.Response(status=400, text=f"bad {self.param}")
        self.requests.append(n)
        self.queries.append(query)
        self.events.append(("start", n))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._changed()
        try:
            gate = self.gates.get(n)
            if gate is not None:
                await gate.wait()
            seconds = self.delay(n) if self.delay is not None else 0.0
            if seconds:
                await asyncio.sleep(seconds)
            response = self._respond(n)
            self.responses_sent += 1
            self.completed.append(n)
            self.events.append(("end", n))
            return response
        finally:
            self.in_flight -= 1
            self._changed()

    def _respond(self, n: int) -> web.Response:
        headers = dict(self.headers(n)) if self.headers is not None else {}
        if n in self.fail:
            status = self.fail[n]
            return web.Response(status=status, text=f"page {n} failed with {status}")
        if n in self.raw:
            return web.Response(body=self.raw[n], content_type="application/json")
        if self.is_past_end(n) and self.past_end == "404":
            return web.Response(status=404, text="no such page", headers=headers)
        return web.Response(
            body=msgspec.json.encode(self.body(n)),
            content_type="application/json",
            headers=headers,
        )

    async def start(self) -> None:
        server = _CountingServer(self._handle, self, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/items"

    async def stop(self) -> None:
        self.release_all()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def page_server() -> AsyncIterator[Callable[..., Awaitable[PageServer]]]:
    """A factory: ``server = await page_server(pages=..., ...)`` starts a PageServer."""
    servers: list[PageServer] = []

    async def make(**config: Any) -> PageServer:
        server = PageServer(**config)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/items"


# ---------------------------------------------------------------------- leak checks


def _is_server_task(task: asyncio.Task[Any]) -> bool:
    """Tasks of the in-process aiohttp.web server (connection and request handlers)."""
    coro = task.get_coro()
    code = getattr(coro, "cr_code", None)
    return code is not None and "aiohttp/web_" in code.co_filename.replace("\\", "/")


def open_client_sessions() -> list[aiohttp.ClientSession]:
    """Every aiohttp.ClientSession alive in the process that is not closed."""
    return [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed]


class LeakCheck:
    """Remembers the tasks and sessions alive when it was made; reports client-side ones
    added since that are still running (tasks) or open (aiohttp sessions)."""

    def __init__(self) -> None:
        self.before = asyncio.all_tasks()
        self.sessions_before = {id(s) for s in open_client_sessions()}

    def stray_tasks(self) -> set[asyncio.Task[Any]]:
        current = asyncio.current_task()
        return {
            t
            for t in asyncio.all_tasks() - self.before
            if t is not current and not t.done() and not _is_server_task(t)
        }

    def assert_no_tasks(self) -> None:
        stray = self.stray_tasks()
        assert not stray, f"tasks still running: {[t.get_coro() for t in stray]}"

    async def wait_no_tasks(self, within: float = 1.0) -> None:
        """Wait (a few loop turns, at most ``within`` seconds) until no stray task is left."""
        stray = self.stray_tasks()
        if stray:
            await asyncio.wait(stray, timeout=within)
        self.assert_no_tasks()

    def assert_sessions_closed(self) -> None:
        sessions = [s for s in open_client_sessions() if id(s) not in self.sessions_before]
        assert not sessions, f"client sessions left open: {sessions}"


@pytest.fixture
async def leaks() -> LeakCheck:
    """Snapshot of the running tasks and open client sessions, taken before the test body."""
    return LeakCheck()


async def collect(s: streampage.Stream[Any], within: float = HANG) -> list[streampage.Page[Any]]:
    """Every page a stream yields, in the order yielded (inside ``async with``)."""
    pages = []
    async with asyncio.timeout(within), s:
        async for page in s:
            pages.append(page)
    return pages


# ---------------------------------------------------------------------- the command line


class CliRun:
    """What a `streampage fetch` subprocess did: exit code, stdout and stderr as text."""

    def __init__(self, code: int, out: bytes, err: bytes) -> None:
        self.code = code
        self.out = out.decode()
        self.err = err.decode()

    def __repr__(self) -> str:
        return f"CliRun(code={self.code}, err={self.err[-2000:]!r})"


async def cli_fetch(*args: str, cwd: Path | None = None, within: float = 30.0) -> CliRun:
    """`python -m streampage fetch ARGS` in a subprocess, while this loop serves the API."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streampage",
        "fetch",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return CliRun(proc.returncode, out, err)


class Flaky:
    """Wraps a sink; its ``fail_at``-th commit raises, as a full disk would."""

    def __init__(self, sink: Any, fail_at: int) -> None:
        self.sink, self.fail_at, self.commits = sink, fail_at, 0

    def __repr__(self) -> str:
        return f"Flaky({self.sink!r})"

    async def open(self, name: str) -> bytes | None:
        return await self.sink.open(name)  # type: ignore[no-any-return]

    async def write(self, records: Sequence[Any]) -> None:
        await self.sink.write(records)

    async def commit(self, name: str, checkpoint: bytes) -> None:
        self.commits += 1
        if self.commits == self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        await self.sink.commit(name, checkpoint)

    async def close(self) -> None:
        await self.sink.close()

"""A fault-injecting aiohttp.web page server, the factory behind the `fault_server` fixture.

Page ``n`` is ``{"page": n, "items": [n]}``. Each page has a *schedule*: the faults its
successive attempts meet (attempt 1 gets ``schedule[n][0]``, ...); once the list is used up the
page is served normally. The server logs every request (``server.hits``): page, attempt, when
it arrived and ended, which fault it got, the status it sent, the request headers, the handlers
in flight on arrival, and how many body bytes it managed to write.

    from faults import Fault, fault_servers

    @pytest.fixture
    async def fault_server():
        async with fault_servers() as make:
            yield make

    async def test_x(fault_server):
        server = await fault_server(schedule={3: [Fault.status(503), Fault.reset()]})
        ...
        assert server.attempts[3] == 3

``random_schedule(seed, pages, ...)`` makes a seeded schedule of transient faults, and
``expected_outcome`` says what a stream with a given RetryPolicy must make of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import math
import random
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import msgspec
import pytest
from aiohttp import web

import streampage

#: Upper bound for any single wait in a test: a hang is a failure, not a stuck suite.
HANG = 15.0
CHUNK = 64 * 1024


# ---------------------------------------------------------------------- faults


@dataclass(frozen=True, repr=False)
class Fault:
    """What one attempt at a page meets. Build with the class methods."""

    kind: str
    code: int = 200  # the status sent (status, redirect); for oversized: announce the size
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    size: int = 0  # oversized: bytes to offer
    interval: float = 0.0  # drip: seconds between bytes
    location: str | Callable[[web.BaseRequest], str] | None = None  # redirect
    delay: float = 0.0  # seconds before answering
    after_headers: float = 0.0  # paced: seconds of silence between the headers and the body

    def __repr__(self) -> str:
        return f"{self.kind} {self.code}" if self.kind in ("status", "redirect") else self.kind

    # -- normal answers ------------------------------------------------------------
    @classmethod
    def ok(cls, headers: Mapping[str, str] | None = None, delay: float = 0.0) -> Fault:
        """The page, normally (optionally with extra response headers)."""
        return cls("ok", headers=tuple((headers or {}).items()), delay=delay)

    @classmethod
    def status(
        cls, status: int, headers: Mapping[str, str] | None = None, delay: float = 0.0
    ) -> Fault:
        """An error status with a short text body."""
        return cls("status", code=status, headers=tuple((headers or {}).items()), delay=delay)

    @classmethod
    def retry_after(
        cls, status: int, seconds: float | None = None, date_in: float | None = None
    ) -> Fault:
        """429/503 with ``Retry-After`` in delta seconds, or as an HTTP-date ``date_in`` s ahead."""
        if date_in is not None:
            value = formatdate(time.time() + date_in, usegmt=True)
        else:
            assert seconds is not None
            value = str(int(seconds))
        return cls.status(status, {"Retry-After": value})

    @classmethod
    def raw_body(cls, body: bytes) -> Fault:
        """A 200 with this body (e.g. invalid JSON) and a correct Content-Length."""
        return cls("raw", body=body)

    @classmethod
    def chunked(cls, body: bytes) -> Fault:
        """A 200 with this body, sent chunked (no Content-Length) in 64 KiB pieces."""
        return cls("chunked", body=body)

    @classmethod
    def gzip(cls, body: bytes) -> Fault:
        """A 200 with this body gzip-compressed: ``Content-Encoding: gzip``, and a
        Content-Length that is the (small) compressed size."""
        return cls("gzip", body=_gzip(body))

    @classmethod
    def other_page(cls, n: int) -> Fault:
        """A 200 whose body is valid JSON, but page ``n``'s (a cache or proxy mix-up)."""
        return cls.raw_body(msgspec.json.encode(page_body(n)))

    @classmethod
    def invalid_json(cls) -> Fault:
        return cls.raw_body(b'{"page": 1, "items": [1,')

    @classmethod
    def invalid_utf8(cls) -> Fault:
        return cls.raw_body(b'{"page": 1, "name": "\xff\xfe"}')

    @classmethod
    def redirect(cls, location: str | Callable[[web.BaseRequest], str], status: int = 302) -> Fault:
        """A redirect; ``location`` may be a function of the request (to keep the query)."""
        return cls("redirect", code=status, location=location)

    # -- broken connections --------------------------------------------------------
    @classmethod
    def reset(cls) -> Fault:
        """Reset the connection (RST) before any response byte."""
        return cls("reset")

    @classmethod
    def reset_mid_body(cls) -> Fault:
        """Send the headers (with Content-Length) and half the body, then reset (RST)."""
        return cls("reset_mid_body")

    @classmethod
    def truncated(cls) -> Fault:
        """Content-Length says more than is sent; the connection then closes cleanly (FIN)."""
        return cls("truncated")

    @classmethod
    def cut_no_length(cls) -> Fault:
        """HTTP/1.1 200 with neither Content-Length nor chunking, closed half-way through:
        the client cannot tell it short except by the JSON being incomplete."""
        return cls("cut_no_length")

    # -- slow servers --------------------------------------------------------------
    @classmethod
    def hang(cls) -> Fault:
        """Never answer (no status line)."""
        return cls("hang")

    @classmethod
    def hang_mid_body(cls) -> Fault:
        """Send headers and part of the body, then go silent."""
        return cls("hang_mid_body")

    @classmethod
    def drip(cls, interval: float = 0.05) -> Fault:
        """Send a valid but endless-seeming body one byte every ``interval`` seconds."""
        return cls("drip", interval=interval)

    @classmethod
    def paced(
        cls, body: bytes, chunk: int = CHUNK, interval: float = 0.01, after_headers: float = 0.0
    ) -> Fault:
        """A 200 with this body, chunked, ``chunk`` bytes every ``interval`` seconds: a body
        that takes long to arrive but never stalls (``len(body) / chunk * interval`` s),
        after ``after_headers`` seconds of silence between the headers and its first byte."""
        return cls("paced", body=body, size=chunk, interval=interval, after_headers=after_headers)

    @classmethod
    def oversized(cls, size: int, content_length: bool = False) -> Fault:
        """Offer a body of ``size`` bytes, chunked (or with a Content-Length)."""
        return cls("oversized", size=size, code=1 if content_length else 0)


# ---------------------------------------------------------------------- the server


@dataclass
class Hit:
    """One request as the server saw it."""

    page: int
    attempt: int
    kind: str
    arrived: float
    headers: Mapping[str, str]
    in_flight: int  # handlers in flight on arrival, this one included
    query: Mapping[str, str] = field(default_factory=dict)
    ended: float | None = None
    status: int | None = None
    bytes_written: int = 0


def page_body(n: int) -> dict[str, Any]:
    return {"page": n, "items": [n]}


class FaultServer:
    """A paginated JSON API on ``host`` (127.0.0.1 or 127.0.0.2) that injects scheduled faults.

    ``throttle_above=K`` answers 429 to any request that arrives while K others are in flight
    (with ``throttle_headers``). ``delay`` is the latency of a normal page (a number, or a
    function of the page number).

    ``budget=(limit, window)`` enforces a rate limit of ``limit`` requests per ``window``
    seconds (the window starts with the first request after the last one ended): every
    normal answer says what is left (``RateLimit-Remaining``/``-Reset`` in delta seconds, or
    with ``budget_style="x"`` ``X-RateLimit-Remaining``/``-Reset`` as a Unix time), and a
    request over the budget gets a 429 with no Retry-After.

    ``outage=(after, seconds)`` is a time window: once ``after`` requests have arrived, every
    request arriving in the next ``seconds`` seconds meets ``outage_fault`` (default: 503
    without Retry-After) instead of its scheduled answer; ``outage_window`` says when it was.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        schedule: Mapping[int, Sequence[Fault]] | None = None,
        delay: float | Callable[[int], float] = 0.0,
        throttle_above: int | None = None,
        throttle_headers: Mapping[str, str] | None = None,
        path: str = "/items",
        budget: tuple[int, float] | None = None,
        budget_style: str = "ietf",
        ssl_context: ssl.SSLContext | None = None,
        outage: tuple[int, float] | None = None,
        outage_fault: Fault | None = None,
    ) -> None:
        self.host = host
        self.outage = outage
        self.outage_fault = outage_fault or Fault.status(503)
        #: (start, end) of the outage in time.monotonic(), once it has started
        self.outage_window: tuple[float, float] | None = None
        self.schedule = {n: list(f) for n, f in (schedule or {}).items()}
        self.delay = delay
        self.throttle_above = throttle_above
        self.throttle_headers = dict(throttle_headers or {})
        self.path = path
        self.budget = budget
        self.ssl_context = ssl_context
        self.budget_style = budget_style
        self._window_ends = 0.0
        self._used = 0
        self.hits: list[Hit] = []
        self.attempts: Counter[int] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.ServerRunner | None = None
        self.origin = ""
        self.url = ""

    # ------------------------------------------------------------------ observation

    def hits_for(self, page: int) -> list[Hit]:
        return [h for h in self.hits if h.page == page]

    def statuses(self) -> Counter[int | None]:
        return Counter(h.status for h in self.hits)

    @property
    def bytes_written(self) -> int:
        return sum(h.bytes_written for h in self.hits)

    # ------------------------------------------------------------------ serving

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            n = int(request.query.get("page", "1"))
        except ValueError:
            return web.Response(status=400, text="bad page")
        self.attempts[n] += 1
        attempt = self.attempts[n]
        planned = self.schedule.get(n, [])
        fault = planned[attempt - 1] if attempt <= len(planned) else Fault.ok()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self._in_outage():
            fault = self.outage_fault
        if self.throttle_above is not None and self.in_flight > self.throttle_above:
            fault = Fault.status(429, self.throttle_headers)
        if self.budget is not None and fault.kind == "ok":
            fault = self._spend(fault)
        hit = Hit(
            page=n,
            attempt=attempt,
            kind=fault.kind,
            arrived=time.monotonic(),
            headers=dict(request.headers),
            in_flight=self.in_flight,
            query=dict(request.query),
        )
        self.hits.append(hit)
        try:
            return await self._serve(request, n, fault, hit)
        except ConnectionError:  # the client hung up while we were writing: as intended
            return await _forever()
        finally:
            self.in_flight -= 1
            hit.ended = time.monotonic()

    def _in_outage(self) -> bool:
        if self.outage is None:
            return False
        after, seconds = self.outage
        now = time.monotonic()
        if self.outage_window is None:
            if len(self.hits) < after:
                return False
            self.outage_window = (now, now + seconds)
        start, end = self.outage_window
        return start <= now < end

    def _spend(self, fault: Fault) -> Fault:
        limit, window = self.budget  # type: ignore[misc]
        now = time.monotonic()
        if now >= self._window_ends:
            self._window_ends, self._used = now + window, 0
        self._used += 1
        left = self._window_ends - now
        if self._used > limit:
            return Fault.status(429)
        remaining = str(limit - self._used)
        if self.budget_style == "x":
            headers = {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": remaining,
                "X-RateLimit-Reset": str(math.ceil(time.time() + left)),
            }
        else:
            headers = {
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": remaining,
                "RateLimit-Reset": str(math.ceil(left)),
            }
        return Fault.ok(headers, fault.delay)

    async def _serve(
        self, request: web.BaseRequest, n: int, fault: Fault, hit: Hit
    ) -> web.StreamResponse:
        kind = fault.kind
        if fault.delay:
            await asyncio.sleep(fault.delay)
        body = msgspec.json.encode(page_body(n))
        if kind == "ok":
            delay = self.delay(n) if callable(self.delay) else self.delay
            if delay:
                await asyncio.sleep(delay)
            hit.status = 200
            hit.bytes_written = len(body)
            return web.Response(
                body=body, content_type="application/json", headers=dict(fault.headers)
            )
        if kind == "status":
            hit.status = fault.code
            return web.Response(
                status=fault.code, text=f"page {n}: {fault.code}", headers=dict(fault.headers)
            )
        if kind == "raw":
            hit.status = 200
            assert fault.body is not None
            return web.Response(body=fault.body, content_type="application/json")
        if kind == "gzip":
            assert fault.body is not None
            hit.status = 200
            hit.bytes_written = len(fault.body)
            return web.Response(
                body=fault.body,
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        if kind == "chunked":
            assert fault.body is not None
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            hit.status = 200
            for i in range(0, len(fault.body), CHUNK):
                await resp.write(fault.body[i : i + CHUNK])
                hit.bytes_written += len(fault.body[i : i + CHUNK])
            await resp.write_eof()
            return resp
        if kind == "paced":
            assert fault.body is not None
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            hit.status = 200
            if fault.after_headers:
                await asyncio.sleep(fault.after_headers)
            for i in range(0, len(fault.body), fault.size):
                await asyncio.sleep(fault.interval)
                await resp.write(fault.body[i : i + fault.size])
                hit.bytes_written += len(fault.body[i : i + fault.size])
            await resp.write_eof()
            return resp
        if kind == "redirect":
            hit.status = fault.code
            loc = fault.location(request) if callable(fault.location) else fault.location
            assert loc is not None
            return web.Response(status=fault.code, headers={"Location": loc})
        transport = request.transport
        assert transport is not None
        if kind == "reset":
            _rst(transport)
            return await _forever()
        if kind in ("reset_mid_body", "truncated", "hang_mid_body"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(body) + (100 if kind == "truncated" else 0)
            await resp.prepare(request)
            hit.status = 200
            await resp.write(body[: len(body) // 2])
            hit.bytes_written = len(body) // 2
            if kind == "reset_mid_body":
                _rst(transport)
            elif kind == "truncated":
                await resp.write(body[len(body) // 2 :])
                hit.bytes_written = len(body)
                transport.close()
            return await _forever()
        if kind == "cut_no_length":
            hit.status = 200
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
            transport.write(head + body[: len(body) // 2])
            hit.bytes_written = len(body) // 2
            transport.close()
            return await _forever()
        if kind == "hang":
            return await _forever()
        if kind == "drip":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            hit.status = 200
            await resp.write(b'{"page": %d, "items": [' % n)
            while True:  # valid JSON that never ends: only a whole-attempt deadline stops it
                await asyncio.sleep(fault.interval)
                await resp.write(b" ")
                hit.bytes_written += 1
        if kind == "oversized":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            if fault.code:  # announce the size
                resp.content_length = fault.size
            await resp.prepare(request)
            hit.status = 200
            chunk = b" " * CHUNK
            while hit.bytes_written < fault.size:
                part = chunk[: fault.size - hit.bytes_written]
                await resp.write(part)
                hit.bytes_written += len(part)
            await resp.write_eof()
            return resp
        raise AssertionError(f"unknown fault {kind!r}")

    async def start(self) -> None:
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if self.ssl_context is not None else "http"
        self.origin = f"{scheme}://{self.host}:{port}"
        self.url = self.origin + self.path

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@functools.cache
def _gzip(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=6)


def _rst(transport: asyncio.BaseTransport) -> None:
    """Close the connection with a TCP reset rather than a clean FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _forever() -> web.StreamResponse:
    """Wait until the handler is cancelled (the client went away, or the server stops)."""
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def fault_servers() -> AsyncIterator[Callable[..., Awaitable[FaultServer]]]:
    """A factory of started FaultServers, all stopped on exit. Each test file turns it into
    its ``fault_server`` fixture::

        @pytest.fixture
        async def fault_server():
            async with fault_servers() as make:
                yield make
    """
    servers: list[FaultServer] = []

    async def make(**config: Any) -> FaultServer:
        server = FaultServer(**config)
        await server.start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            await server.stop()


# ---------------------------------------------------------------------- helpers


def fast_retry(**kwargs: Any) -> streampage.RetryPolicy:
    """A RetryPolicy with tiny backoffs, so that tests run fast."""
    kwargs.setdefault("backoff", 0.005)
    kwargs.setdefault("max_wait", 0.02)
    return streampage.RetryPolicy(**kwargs)


async def collect(s: streampage.Stream[Any], within: float = HANG) -> list[streampage.Page[Any]]:
    """Every page a stream yields (inside ``async with``), under a hang guard."""
    pages = []
    async with asyncio.timeout(within), s:
        async for page in s:
            pages.append(page)
    return pages


async def collect_error(
    s: streampage.Stream[Any], within: float = HANG
) -> tuple[list[streampage.Page[Any]], BaseException]:
    """The pages yielded before the stream raised, and what it raised (it must raise)."""
    pages = []
    try:
        async with asyncio.timeout(within), s:
            async for page in s:
                pages.append(page)
    except streampage.StreamPageError as exc:
        return pages, exc
    raise AssertionError(f"the stream ended without an error after {len(pages)} pages")


def dead_port_with_hanging_connect() -> tuple[socket.socket, list[socket.socket], int]:
    """A listening socket whose accept queue is full: a new connect() to it hangs (Linux).

    Returns the listener, the filler connections (close them after), and the port.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    return listener, fillers, port


# ---------------------------------------------------------------------- random schedules

#: Transient faults for random schedules: each with the retry reason it must be counted under
#: (None: counted under "status <code>"), and whether it is a decode failure.
TRANSIENT: dict[str, Callable[[], Fault]] = {
    "500": lambda: Fault.status(500),
    "502": lambda: Fault.status(502),
    "503": lambda: Fault.status(503),
    "504": lambda: Fault.status(504),
    "408": lambda: Fault.status(408),
    "425": lambda: Fault.status(425),
    "429": lambda: Fault.retry_after(429, seconds=0),
    "reset": Fault.reset,
    "reset_mid_body": Fault.reset_mid_body,
    "truncated": Fault.truncated,
    "cut_no_length": Fault.cut_no_length,
    "invalid_json": Fault.invalid_json,
}


def reason_of(fault: Fault) -> str:
    """The retry reason stream.stats.retries must count a fault under."""
    if fault.kind == "status":
        return f"status {fault.code}"
    return {
        "reset": "connection",
        "reset_mid_body": "truncated",
        "truncated": "truncated",
        "cut_no_length": "decode",
        "raw": "decode",
        "hang": "timeout",
        "hang_mid_body": "timeout",
        "drip": "timeout",
    }[fault.kind]


def random_schedule(
    seed: int, pages: int, max_faults: int, kinds: Sequence[str] = tuple(TRANSIENT)
) -> dict[int, list[Fault]]:
    """A seeded schedule: each page meets 0..max_faults transient faults, then succeeds."""
    rng = random.Random(seed)
    return {
        n: [TRANSIENT[rng.choice(kinds)]() for _ in range(rng.randint(0, max_faults))]
        for n in range(1, pages + 1)
    }


@dataclass
class Expected:
    delivered: bool
    attempts: int  # requests the server sees for the page
    retries: Counter[str]  # retry reasons counted
    status: int | None  # Failure.status when it fails


def expected_outcome(faults: Sequence[Fault], policy: streampage.RetryPolicy) -> Expected:
    """What the retry loop must do with one page's schedule (backoff caps assumed loose)."""
    retries: Counter[str] = Counter()
    decode_failures = 0
    for attempt, fault in enumerate(faults, start=1):
        reason = reason_of(fault)
        if reason == "decode":
            decode_failures += 1
            final = decode_failures >= policy.decode_attempts
        else:
            final = False
        if final or attempt >= policy.attempts:
            status = fault.code if fault.kind == "status" else None
            return Expected(False, attempt, retries, status)
        retries[reason] += 1
    return Expected(True, len(faults) + 1, retries, None)


def self_signed_server_context(directory: Any) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (needs openssl)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context

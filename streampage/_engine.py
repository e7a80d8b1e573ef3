"""The engine: a lazy producer, a bounded work queue, long-lived fetch workers, a result buffer.

    paginator run ─numbers─► producer ─► work queue ─► N workers ─► result queue ─► consumer
         ▲                  (waits on the  (maxsize N)  (one shared  (maxsize buffer)  (Stream)
         │                   reorder window)             session)
         └────── feedback: total discovered, end found (accept / ends_at_status) ──────┘

Every number the producer hands out comes back through the result queue exactly once, as a
page, an error, or ``None`` (nothing to deliver: past the end, or cancelled because it was).
That invariant is what lets the ordered consumer advance past gaps, and what makes "nothing is
dropped silently" checkable. The run ends by closing, not by counting: the producer puts one
``None`` per worker when the paginator is exhausted, and the runner puts ``_END`` when every
worker has returned.

The engine never holds a reference to the Stream that consumes it, so a Stream dropped by a
``break`` out of a bare ``async for`` is collected at once and can cancel the runner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from time import perf_counter
from typing import Any

import aiohttp
import anyio
import msgspec
from yarl import URL

from ._decode import decode_body
from ._errors import DecodeError, HTTPStatusError, PageError, RequestError
from ._page import Page, ResponseInfo
from ._pagination import PaginatorRun
from ._redact import redact_url
from ._stats import StreamStats

#: Payload of the last item on the result queue.
_END: Any = object()

#: (sequence number, page number, payload): payload is a Page, a PageError, None or _END.
Result = tuple[int, int, Any]

_BODY_EXCERPT = 200
_USER_AGENT = "streampage"


class Engine:
    """One run of a stream. Created by Stream on first use, run as a single task."""

    def __init__(
        self,
        *,
        url: URL,
        headers: Mapping[str, str],
        decoder: msgspec.json.Decoder[Any],
        run: PaginatorRun,
        concurrency: int,
        buffer: int,
        window: int | None,
        session: aiohttp.ClientSession | None,
        timeout: aiohttp.ClientTimeout,
        stats: StreamStats,
    ) -> None:
        self.run = run
        self.stats = stats
        self.results: asyncio.Queue[Result] = asyncio.Queue(maxsize=buffer)
        #: next sequence number the ordered consumer needs; the producer stays within window of it
        self.head = 0
        self.window_moved = asyncio.Event()
        self._url = url
        self._headers = dict(headers)
        self._decoder = decoder
        self._concurrency = concurrency
        self._window = window
        self._work: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue(maxsize=concurrency)
        self._user_session = session
        self._session: aiohttp.ClientSession | None = session
        self._timeout = timeout
        self._inflight: dict[int, tuple[int, anyio.CancelScope]] = {}
        self._any_ok = False
        #: a failure of the run itself (not of a page), read by the consumer at _END
        self.error: BaseException | None = None
        run.on_end = self._cancel_past

    # ------------------------------------------------------------------ lifecycle

    async def main(self) -> None:
        """Run producer and workers to completion, then mark the end on the result queue."""
        error: BaseException | None = None
        try:
            async with self._open_session(), anyio.create_task_group() as tg:
                tg.start_soon(self._produce)
                for _ in range(self._concurrency):
                    tg.start_soon(self._worker)
        except Exception as exc:  # a failure of the run itself, not of a page
            error = exc
            while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                error = error.exceptions[0]
        self.error = error
        await self.results.put((-1, -1, _END))

    def _open_session(self) -> aiohttp.ClientSession | _Borrowed:
        if self._user_session is not None:
            return _Borrowed()
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, limit_per_host=0, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": _USER_AGENT},
            raise_for_status=False,
        )
        return self._session

    # ------------------------------------------------------------------ producer

    async def _produce(self) -> None:
        run = self.run
        put = self._work.put
        window = self._window
        seq = 0
        while True:
            if window is not None:
                while seq >= self.head + window:
                    self.window_moved.clear()
                    await self.window_moved.wait()
            number = await run.next()
            if number is None:
                break
            await put((seq, number))
            seq += 1
        for _ in range(self._concurrency):
            await put(None)

    # ------------------------------------------------------------------ workers

    async def _worker(self) -> None:
        get = self._work.get
        put = self.results.put
        run = self.run
        fetch = self._fetch
        inflight = self._inflight
        while True:
            job = await get()
            if job is None:
                return
            seq, number = job
            payload: Page[Any] | PageError | None = None
            if run.past_end(number):
                pass
            elif run.open_ended:
                # The end is unknown, so this fetch may turn out to be past it: make it
                # cancellable by _cancel_past. Known ranges skip the cost of a cancel scope.
                with anyio.CancelScope() as scope:
                    inflight[seq] = (number, scope)
                    try:
                        payload = await fetch(number)
                    finally:
                        del inflight[seq]
            else:
                payload = await fetch(number)
            await put((seq, number, payload))

    def _cancel_past(self, last: int) -> None:
        for number, scope in self._inflight.values():
            if number > last:
                scope.cancel()

    async def _fetch(self, number: int) -> Page[Any] | PageError | None:
        """Fetch and decode one page; every failure comes back as a PageError value."""
        run = self.run
        url = self._url.update_query(run.query(number))
        session = self._session
        assert session is not None
        started = perf_counter()
        try:
            async with session.get(url, headers=self._headers) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            run.failed(number)
            return self._request_error(number, url, exc)
        elapsed = perf_counter() - started
        stats = self.stats
        stats.requests += 1
        stats.bytes += len(body)
        status = resp.status
        if 200 <= status < 300:
            self._any_ok = True
        else:
            if run.ends_at_status(number, status):
                return None
            run.failed(number)
            return self._status_error(number, url, status, resp.reason, body)
        try:
            data = decode_body(self._decoder, body, page=number, url=url)
            page = Page(number, data, ResponseInfo(status, elapsed, url, resp.headers))
            return page if run.accept(page) else None
        except DecodeError as exc:
            run.failed(number)
            return exc

    def _status_error(
        self, number: int, url: URL, status: int, reason: str | None, body: bytes
    ) -> HTTPStatusError:
        shown = redact_url(url)
        excerpt = body[:_BODY_EXCERPT].decode("utf-8", "replace")
        hint = ""
        if status in (401, 403):
            hint = " Check the credentials (headers=) and that they grant access to this URL."
        elif 400 <= status < 500 and not self._any_ok:
            hint = (
                " No page has succeeded yet, so this is likely the request itself, not a"
                " transient fault: check the URL, params= and the paginator's parameter names."
            )
        return HTTPStatusError(
            f"page {number}: HTTP {status} {reason or ''} from {shown}; "
            f"body starts with {excerpt!r}.{hint}",
            page=number,
            url=shown,
            status=status,
            body_excerpt=excerpt,
        )

    def _request_error(self, number: int, url: URL, exc: BaseException) -> RequestError:
        shown = redact_url(url)
        detail = str(exc).replace(str(url), shown) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            detail = f"timed out ({detail})" if str(exc) else "timed out"
        return RequestError(
            f"page {number}: request to {shown} failed: {detail}", page=number, url=shown
        )


class _Borrowed:
    """The user's own session: used, never closed by the stream."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None

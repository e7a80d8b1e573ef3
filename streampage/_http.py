"""One HTTP attempt: origin-bound credentials, redirects followed by hand, the size cap.

Credentials are attached per request, by origin, because aiohttp alone does not keep them
home: it drops an ``Authorization`` header on a cross-origin redirect but keeps ``X-Api-Key``
and friends, and re-applies a session-level ``auth=``. Redirects are therefore followed here,
with ``allow_redirects=False``: a hop to another origin goes on *without* the secret headers
(as curl and browsers do), and is refused outright when the session itself carries
credentials we cannot take off (a user session with ``auth=`` or secret default headers).

Foreign exceptions become ``Transient`` (worth another attempt, with a reason for the stats)
or a final ``PageError`` here, at one boundary.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlencode

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._errors import RequestError, ResponseTooLargeError
from ._redact import is_secret_header, redact_url

if TYPE_CHECKING:
    from .auth import Auth, Credential, Transport

__all__ = ["HttpClient", "Response", "Transient", "is_secret_header"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10
#: the first request and its redirects (a constant: not a range built per request)
_HOPS = range(_MAX_REDIRECTS + 1)
_CHUNK = 1 << 16
#: Bodies with a Content-Length up to this are read in one call; larger ones in chunks,
#: so that Timeout(min_rate=) can watch them.
_WHOLE = 1 << 18


class Response(NamedTuple):
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL
    elapsed: float
    #: the changing credential (auth=OAuth2...) the request carried, if it carried one
    credential: Credential | None = None


class Transient(Exception):
    """An attempt failed in a way worth retrying; ``reason`` feeds the retry counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Deadlines:
    """The attempt and silence deadlines (Timeout.attempt, Timeout.first_byte) of every
    request in flight, watched by one task that wakes a few times per shortest timeout.

    aiohttp's own timers cost a TimerHandle and a copied Context per request, re-armed on
    every chunk read, and their cancelled handles linger in the loop's heap until it
    cleans up: at 200 requests in flight that was ~40 µs a page, most of it garbage
    collection. Here each task that makes requests (a worker, for the whole stream) has
    one slot, and HttpClient.get writes times into it (perf_counter): when the request
    started, when a byte was last heard of (then the body's stream, and its byte count),
    and None when it is over. An overdue request has its task cancelled, and get() turns
    that cancellation into a timeout (``slot[2]`` says which one fired).
    """

    def __init__(self, attempt: float | None, silence: float | None) -> None:
        self.attempt = attempt
        self.silence = silence
        shortest = min((t for t in (attempt, silence) if t is not None), default=None)
        self.enabled = shortest is not None
        self._tick = 1.0 if shortest is None else min(1.0, max(0.005, shortest / 8))
        self._slots: dict[asyncio.Task[Any], list[Any]] = {}
        self._watch: asyncio.Task[None] | None = None

    def slot(self, task: asyncio.Task[Any]) -> list[Any]:
        """The slot of ``task``'s requests, one at a time, until ``drop``."""
        slot = [
            None,  # when the request started (None: no request)
            0.0,  # when a byte was last heard of (the start, the headers, a chunk)
            "",  # which deadline fired
            None,  # the body's stream, once the headers are in: its byte count moves on
            0,  # ... from this many bytes at the last look
            task,
        ]
        self._slots[task] = slot
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._run())
        return slot

    def drop(self, slot: list[Any]) -> None:
        self._slots.pop(slot[5], None)

    async def _run(self) -> None:
        slots = self._slots
        attempt = math.inf if self.attempt is None else self.attempt
        silence = math.inf if self.silence is None else self.silence
        while slots:
            await asyncio.sleep(self._tick)
            now = perf_counter()
            for slot in list(slots.values()):
                started = slot[0]
                if started is None or slot[2]:
                    continue
                late = now - started >= attempt
                if not late and now - slot[1] < silence:
                    continue
                content = slot[3]
                if not late and content is not None and content.total_bytes != slot[4]:
                    slot[4] = content.total_bytes  # not silent: bytes came since
                    slot[1] = now
                    continue
                slot[2] = "attempt" if late else "silence"
                slot[5].cancel()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    def said(self, slot: list[Any]) -> str:
        if slot[2] == "attempt":
            return f"timed out: the attempt took more than {self.attempt:g} s (Timeout.attempt)"
        return (
            f"timed out: no byte came for {self.silence:g} s (Timeout.first_byte, the "
            "silence allowed before the headers and between chunks)"
        )


class HttpClient:
    """Makes GET attempts for one stream."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        secret_headers: Iterable[str],
        max_page_bytes: int,
        timeout: aiohttp.ClientTimeout,
        verify_tls: bool,
        min_rate: float | None = None,
        auth: Auth | None = None,
    ) -> None:
        self.session: aiohttp.ClientSession | None = None
        self._min_rate = min_rate
        #: a body is held to min_rate once it has streamed this long (Timeout.first_byte)
        self._grace = timeout.sock_read if timeout.sock_read is not None else 10.0
        if auth is not None:
            headers = {**headers, **auth.fixed_headers()}
            secret_headers = (*secret_headers, *auth.header_names())
        self._marked = frozenset(name.lower() for name in secret_headers)
        #: auth= whose credential changes (OAuth2): asked for it on every request at home
        self._changing = auth if auth is not None and auth.changes else None
        #: auth= query parameters (an API key): put on every request at home, taken off
        #: every URL anything else sees
        self._query = dict(auth.fixed_params()) if auth is not None else {}
        self._auth = auth
        self._transport: Transport | None = None
        #: the last changing credential and the headers merged with it
        self._merged: tuple[Credential | None, CIMultiDict[str] | None] = (None, None)
        self._all = CIMultiDict(headers)
        self._public = CIMultiDict((k, v) for k, v in headers.items() if not self._is_secret(k))
        #: what a request carries at home and elsewhere (None: nothing beyond the session's)
        self._home_headers = self._all or None
        self._away_headers = self._public or None
        self._max_bytes = max_page_bytes
        #: bodies with a Content-Length up to this are read in one call, uncounted
        self._whole = min(_WHOLE, max_page_bytes)
        self.timeout = timeout
        #: what aiohttp keeps of it: connecting (per new connection, not per request)
        self.session_timeout = aiohttp.ClientTimeout(sock_connect=timeout.sock_connect)
        self._deadlines = _Deadlines(timeout.total, timeout.sock_read)
        self.verify_tls = verify_tls
        self._options: dict[str, Any] = {}

    def attach(self, session: aiohttp.ClientSession, *, owned: bool) -> None:
        """Use ``session``. A session the stream made already carries our timeout and TLS
        settings, so requests need not repeat them (a few µs a page); a borrowed one gets
        them on every request."""
        self.session = session
        self._options = {"allow_redirects": False}
        if not owned:
            self._options |= {"timeout": self.session_timeout, "ssl": self.verify_tls}
        if self._changing is not None:
            from .auth import Transport

            self._transport = Transport(session, ssl=self.verify_tls, timeout=self.timeout)

    def stop(self) -> None:
        """The stream is over: its watchdog goes too."""
        self._deadlines.stop()

    def watch(self) -> list[Any] | None:
        """The calling task's deadline slot, for every get() it makes (None when no
        timeout is set); ``unwatch`` it when the task is done making requests."""
        deadlines = self._deadlines
        task = asyncio.current_task()
        return deadlines.slot(task) if deadlines.enabled and task is not None else None

    def unwatch(self, slot: list[Any] | None) -> None:
        if slot is not None:
            self._deadlines.drop(slot)

    def _is_secret(self, name: str) -> bool:
        return is_secret_header(name) or name.lower() in self._marked

    async def get(
        self, url: URL, number: int, home: URL, may_leave: bool, slot: list[Any] | None
    ) -> Response:
        """One attempt at page ``number`` of a source whose origin is ``home``: raises
        Transient or a final PageError. Secret headers and auth= go to ``home`` only;
        ``may_leave`` says whether the paginator can hand out URLs of other origins at all.
        ``slot`` is the calling task's (``watch``): the attempt's deadlines go there."""
        session = self.session
        assert session is not None
        at_home = not may_leave or url.origin() == home
        headers = self._home_headers if at_home else self._away_headers
        sent: Credential | None = None
        if self._query:
            url = self._keyed(url, at_home)
        if self._changing is not None and at_home:
            sent, headers = await self._credential(number, url)
        options = self._options
        started = perf_counter()
        if slot is not None:  # the watchdog's view of this request (see _Deadlines)
            slot[0] = slot[1] = started
            slot[2] = ""
        try:
            for _hop in _HOPS:
                async with session.get(url, headers=headers, **options) as resp:
                    if slot is not None:  # the headers are in: the silence starts again
                        content = resp.content
                        slot[1] = perf_counter()
                        slot[3], slot[4] = content, content.total_bytes
                    status = resp.status
                    if status in _REDIRECTS and "Location" in resp.headers:
                        url, at_home = self._redirect(url, resp.headers["Location"], number, home)
                        headers = self._home_headers if at_home else self._away_headers
                        sent = None
                        if self._query:
                            url = self._keyed(url, at_home)
                        if self._changing is not None and at_home:
                            sent, headers = await self._credential(number, url)
                        continue  # the attempt's deadline covers every hop
                    if sent is not None and status != 401:
                        sent.accepted = True
                    shown = self._bare(url) if self._query else url
                    length = resp.content_length
                    if (
                        length is not None
                        and length <= self._whole
                        and "Content-Encoding" not in resp.headers
                    ):
                        body = await resp.read()  # exactly `length` bytes: no need to count
                    else:
                        body = await self._read(resp, number, shown, slot, length)
                    return Response(
                        status,
                        resp.reason or "",
                        resp.headers,
                        body,
                        shown,
                        perf_counter() - started,
                        sent,
                    )
        except asyncio.CancelledError:
            # the watchdog's, and no one else's (a stream closing cancels too: that wins)
            if slot is not None and slot[2] and slot[5].uncancel() == 0:
                raise Transient("timeout", self._deadlines.said(slot)) from None
            raise
        except aiohttp.ClientPayloadError as exc:
            raise Transient("truncated", f"the body was cut short ({exc})") from None
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise Transient("timeout", _scrub(_describe_timeout(exc, self.timeout))) from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise Transient("connection", _scrub(str(exc) or type(exc).__name__)) from None
        except aiohttp.ClientError as exc:
            where = self._redacted(url)
            raise RequestError(
                f"page {number}: request to {where} failed: {_scrub(str(exc))}",
                page=number,
                url=where,
            ) from None
        finally:
            if slot is not None:
                slot[0] = slot[3] = None  # over: no deadline, no body to watch
        where = self._redacted(url)
        raise RequestError(
            f"page {number}: more than {_MAX_REDIRECTS} redirects, the last to {where}",
            page=number,
            url=where,
        )

    # ------------------------------------------------------------------ auth=

    async def _credential(
        self, number: int, url: URL
    ) -> tuple[Credential, CIMultiDict[str] | None]:
        """The changing credential for a request to the origin, and the headers with it
        (merged once per credential, not once per request)."""
        from .auth import TokenError

        assert self._changing is not None and self._transport is not None
        try:
            credential = await self._changing.current(self._transport)
        except TokenError as exc:
            if exc.transient:
                raise Transient("token", str(exc)) from None
            shown = self._redacted(url)
            raise RequestError(f"page {number}: {exc}", page=number, url=shown) from None
        last, merged = self._merged
        if credential is not last:
            merged = CIMultiDict(self._all)
            merged.update(credential.headers)
            self._merged = (credential, merged)
        return credential, merged

    async def renewed(self, resp: Response) -> bool:
        """The API answered 401 to a request that carried a changing credential: True
        when auth= renewed it (or another request did) and the request is worth sending
        again, not counted as an attempt; False when the 401 stands."""
        if resp.credential is None or self._changing is None or self._transport is None:
            return False
        return await self._changing.refresh(self._transport, resp.credential)

    def refused_hint(self) -> str | None:
        """What a 401/403 says when auth= sent the credentials (None: headers= did)."""
        return self._auth.refused() if self._auth is not None else None

    def _keyed(self, url: URL, at_home: bool) -> URL:
        """``url`` with auth='s query parameters at home, without them elsewhere."""
        if at_home:
            query = url.query
            if any(name in query for name in self._query):
                return url.update_query(self._query)  # a link that echoes it: replaced
            # appended to the query as it is: a signed next link is not re-encoded
            sep = "&" if url.raw_query_string else "?"
            return URL(f"{url.with_fragment(None)}{sep}{urlencode(self._query)}", encoded=True)
        return self._bare(url)

    def _bare(self, url: URL) -> URL:
        """``url`` without auth='s query parameters: what a response, an error, a log and a
        checkpoint see (a next link that echoes the key loses it too)."""
        query = url.query
        if not any(query.get(name) == value for name, value in self._query.items()):
            return url
        return url.with_query([(k, v) for k, v in query.items() if self._query.get(k) != v])

    def _redacted(self, url: URL) -> str:
        return redact_url(self._bare(url) if self._query else url)

    def _redirect(self, url: URL, location: str, number: int, home: URL) -> tuple[URL, bool]:
        """The redirect's target, and whether it is at home (the credentials go with it)."""
        target = url.join(URL(location))
        if target.scheme not in ("http", "https"):
            raise RequestError(
                f"page {number}: redirected to a non-HTTP URL {self._redacted(target)}",
                page=number,
                url=self._redacted(url),
            )
        if target.origin() == home:
            return target, True
        session = self.session
        assert session is not None
        if session.auth is not None or any(self._is_secret(k) for k in session.headers):
            raise RequestError(
                f"page {number}: {self._redacted(url)} redirects to another origin "
                f"({target.origin()}), and the session given to stream() carries credentials "
                "(auth= or secret default headers) that would follow it there. Pass the "
                "credentials as stream(headers=...) instead, so that they stay home.",
                page=number,
                url=self._redacted(url),
            )
        return target, False

    async def _read(
        self,
        resp: aiohttp.ClientResponse,
        number: int,
        url: URL,
        slot: list[Any] | None,
        length: int | None,
    ) -> bytes:
        """A body that get() does not read whole at once (chunked, compressed, large or
        over the cap), refused as soon as it exceeds the cap: memory never holds more."""
        cap = self._max_bytes
        if length is not None and length > cap:
            raise _too_large(number, url, cap, f"Content-Length is {length}")
        # chunked, compressed (a small Content-Length may inflate past the cap) or large:
        # count the bytes, and time them
        parts: list[bytes] = []
        size = 0
        min_rate = self._min_rate
        started = 0.0
        try:
            async for chunk in resp.content.iter_chunked(_CHUNK):
                if not size:
                    # the rate is timed from the first byte: a silence before it is
                    # first_byte's to judge, not min_rate's
                    started = perf_counter()
                size += len(chunk)
                if slot is not None:
                    slot[1] = perf_counter()  # a byte came: the silence starts again
                if size > cap:
                    raise _too_large(number, url, cap, f"more than {cap} bytes arrived")
                parts.append(chunk)
                if min_rate is not None:
                    elapsed = perf_counter() - started
                    if elapsed > self._grace and size < min_rate * elapsed:
                        raise TimeoutError(
                            f"the body arrives at {size / elapsed:,.0f} bytes/s after "
                            f"{elapsed:.1f} s, under Timeout(min_rate={min_rate:g})"
                        )
            return b"".join(parts)
        finally:
            # An error's traceback keeps this frame alive (in stream.failures, say): it
            # must not keep the refused body's bytes alive with it.
            parts.clear()


def _too_large(number: int, url: URL, cap: int, detail: str) -> ResponseTooLargeError:
    shown = redact_url(url)
    return ResponseTooLargeError(
        f"page {number}: the response from {shown} is larger than max_page_bytes={cap} "
        f"({detail}); raise max_page_bytes if such pages are expected",
        page=number,
        url=shown,
    )


def _describe_timeout(exc: BaseException, timeout: aiohttp.ClientTimeout) -> str:
    text = str(exc)
    if text:
        return f"timed out: {text}"
    return (
        f"timed out (limits: connect {timeout.sock_connect} s, first byte/silence "
        f"{timeout.sock_read} s, whole attempt {timeout.total} s)"
    )


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+")


def _scrub(text: str) -> str:
    """Foreign messages may quote a URL (with or without userinfo): show every one redacted."""
    return _URL_IN_TEXT.sub(lambda m: _redact_or_hide(m.group(0)), text)


def _redact_or_hide(text: str) -> str:
    try:
        return redact_url(text)
    except ValueError:
        return "<url>"

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

import re
from collections.abc import Iterable, Mapping
from time import perf_counter
from typing import Any, NamedTuple

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._errors import RequestError, ResponseTooLargeError
from ._redact import is_secret_header, redact_url

__all__ = ["HttpClient", "Response", "Transient", "is_secret_header"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10
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


class Transient(Exception):
    """An attempt failed in a way worth retrying; ``reason`` feeds the retry counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
    ) -> None:
        self.session: aiohttp.ClientSession | None = None
        self._min_rate = min_rate
        #: a body is held to min_rate once it has streamed this long (Timeout.first_byte)
        self._grace = timeout.sock_read if timeout.sock_read is not None else 10.0
        self._marked = frozenset(name.lower() for name in secret_headers)
        self._all = CIMultiDict(headers)
        self._public = CIMultiDict((k, v) for k, v in headers.items() if not self._is_secret(k))
        self._max_bytes = max_page_bytes
        self.timeout = timeout
        self.verify_tls = verify_tls
        self._options: dict[str, Any] = {}

    def attach(self, session: aiohttp.ClientSession, *, owned: bool) -> None:
        """Use ``session``. A session the stream made already carries our timeout and TLS
        settings, so requests need not repeat them (a few µs a page); a borrowed one gets
        them on every request."""
        self.session = session
        self._options = {"allow_redirects": False}
        if not owned:
            self._options |= {"timeout": self.timeout, "ssl": self.verify_tls}

    def _is_secret(self, name: str) -> bool:
        return is_secret_header(name) or name.lower() in self._marked

    async def get(self, url: URL, number: int, home: URL, may_leave: bool) -> Response:
        """One attempt at page ``number`` of a source whose origin is ``home``: raises
        Transient or a final PageError. Secret headers go to ``home`` only; ``may_leave``
        says whether the paginator can hand out URLs of other origins at all."""
        session = self.session
        assert session is not None
        headers = self._all or None
        if may_leave and url.origin() != home:
            headers = self._public or None
        options = self._options
        started = perf_counter()
        try:
            for _hop in range(_MAX_REDIRECTS + 1):
                async with session.get(url, headers=headers, **options) as resp:
                    status = resp.status
                    if status in _REDIRECTS and "Location" in resp.headers:
                        url, headers = self._redirect(url, resp.headers["Location"], number, home)
                        options = options | {"timeout": self._remaining(started)}
                        continue
                    body = await self._read(resp, number, url)
                    return Response(
                        status, resp.reason or "", resp.headers, body, url, perf_counter() - started
                    )
        except aiohttp.ClientPayloadError as exc:
            raise Transient("truncated", f"the body was cut short ({exc})") from None
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise Transient("timeout", _scrub(_describe_timeout(exc, self.timeout))) from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise Transient("connection", _scrub(str(exc) or type(exc).__name__)) from None
        except aiohttp.ClientError as exc:
            shown = redact_url(url)
            raise RequestError(
                f"page {number}: request to {shown} failed: {_scrub(str(exc))}",
                page=number,
                url=shown,
            ) from None
        shown = redact_url(url)
        raise RequestError(
            f"page {number}: more than {_MAX_REDIRECTS} redirects, the last to {shown}",
            page=number,
            url=shown,
        )

    def _remaining(self, started: float) -> aiohttp.ClientTimeout:
        """The attempt deadline covers every redirect hop, not each hop afresh."""
        total = self.timeout.total
        if total is None:
            return self.timeout
        left = total - (perf_counter() - started)
        if left <= 0:
            raise TimeoutError(f"the attempt's {total} s ran out while following redirects")
        return aiohttp.ClientTimeout(
            total=left, sock_connect=self.timeout.sock_connect, sock_read=self.timeout.sock_read
        )

    def _redirect(
        self, url: URL, location: str, number: int, home: URL
    ) -> tuple[URL, CIMultiDict[str] | None]:
        target = url.join(URL(location))
        if target.scheme not in ("http", "https"):
            raise RequestError(
                f"page {number}: redirected to a non-HTTP URL {redact_url(target)}",
                page=number,
                url=redact_url(url),
            )
        if target.origin() == home:
            return target, self._all or None
        session = self.session
        assert session is not None
        if session.auth is not None or any(self._is_secret(k) for k in session.headers):
            raise RequestError(
                f"page {number}: {redact_url(url)} redirects to another origin "
                f"({target.origin()}), and the session given to stream() carries credentials "
                "(auth= or secret default headers) that would follow it there. Pass the "
                "credentials as stream(headers=...) instead, so that they stay home.",
                page=number,
                url=redact_url(url),
            )
        return target, self._public or None

    async def _read(self, resp: aiohttp.ClientResponse, number: int, url: URL) -> bytes:
        """The body, refused as soon as it exceeds the cap: memory never holds more."""
        cap = self._max_bytes
        length = resp.content_length
        if length is not None:
            if length > cap:
                raise _too_large(number, url, cap, f"Content-Length is {length}")
            if length <= _WHOLE and "Content-Encoding" not in resp.headers:
                return await resp.read()  # exactly `length` bytes: no need to count
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

"""Credentials for ``stream(auth=...)``: Bearer, Basic, an API key, OAuth2 client credentials.

    streampage.stream(url, auth=streampage.auth.Bearer(os.environ["API_TOKEN"]))
    streampage.stream(url, auth=streampage.auth.APIKey("appid", key, where="query"))
    streampage.stream(url, auth=streampage.auth.OAuth2ClientCredentials(
        "https://auth.example.com/oauth/token", client_id="etl", client_secret=secret))

Like ``headers=``, what an ``auth=`` object sends goes to the origin of the stream's URL
only: a redirect or a next link to another origin goes there without it. An API key in the
query is added to each request at the origin and taken off the URL again before anything
else sees it (``page.response.url``, errors, logs, checkpoints); a checkpoint or a
fingerprint never holds anything of ``auth=``, and reprs never show a secret.

Fixed credentials (Bearer, Basic, APIKey) are read once per stream and cost nothing per
page. An OAuth2 token is fetched once for the whole pool of workers: the first request
fetches it and the others wait for the same fetch; it is fetched again ahead of its expiry
(``expires_in - refresh_ahead``, while the workers go on with the old one), and once when
the API answers 401 with it (the requests that got the 401 share one new token, and are
sent again without counting as an attempt). A 401 to a token fetched because of a 401 is
the answer, not a stale token: the page fails with ``HTTPStatusError``.

The methods below the line (``fixed_headers``, ``current``, ``refresh``...) are what the
stream's HTTP client calls; a class of your own can implement them the same way.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import quote_plus

import aiohttp
import msgspec
from yarl import URL

from ._errors import ConfigurationError
from ._redact import REDACTED, redact_url

__all__ = [
    "APIKey",
    "Auth",
    "Basic",
    "Bearer",
    "Credential",
    "OAuth2ClientCredentials",
    "TokenError",
    "Transport",
]

logger = logging.getLogger("streampage")

_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: a token endpoint's answer is small: more than this is not one
_MAX_TOKEN_BODY = 1 << 20
_EXCERPT = 200
#: statuses of a token endpoint worth another try (the page's RetryPolicy decides)
_TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})


class TokenError(Exception):
    """A credential could not be obtained. ``transient``: worth another attempt (the
    token endpoint was unreachable or answered 429/5xx); otherwise final."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Transport:
    """What a credential that changes is fetched with: the stream's session, with the
    stream's TLS verification (``ssl``) and ``timeout``."""

    __slots__ = ("session", "ssl", "timeout")

    def __init__(
        self, session: aiohttp.ClientSession, *, ssl: bool, timeout: aiohttp.ClientTimeout
    ) -> None:
        self.session = session
        self.ssl = ssl
        self.timeout = timeout


class Credential:
    """A credential that changes (an OAuth2 token), as one request carries it: its
    ``headers``. ``accepted`` is set once the API answered a request carrying it with
    anything but 401."""

    __slots__ = ("accepted", "headers")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = dict(headers)
        self.accepted = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(headers={ {k: REDACTED for k in self.headers} })"


class Auth:
    """Base class of the ``auth=`` objects."""

    #: True when the credential changes while a stream runs (``current`` is called for
    #: every request); False when ``fixed_headers``/``fixed_params`` say it all.
    changes: ClassVar[bool] = False

    def header_names(self) -> frozenset[str]:
        """The headers this sends (secret: dropped on a redirect to another origin)."""
        return frozenset(self.fixed_headers())

    def fixed_headers(self) -> Mapping[str, str]:
        """Headers sent with every request to the stream's origin, read once per stream."""
        return {}

    def fixed_params(self) -> Mapping[str, str]:
        """Query parameters added to every request to the stream's origin (and taken off
        every URL shown or stored), read once per stream."""
        return {}

    async def current(self, transport: Transport) -> Credential:
        """The credential for the next request (``changes`` only)."""
        raise NotImplementedError

    async def refresh(self, transport: Transport, failed: Credential) -> bool:
        """The API answered 401 to a request carrying ``failed``: True when the request
        is worth sending again (with ``current()``), False when the 401 stands."""
        return False

    def secrets(self) -> tuple[str, ...]:
        """The secret values this holds now (for a command line to scrub its output)."""
        return tuple(self.fixed_headers().values()) + tuple(self.fixed_params().values())

    def refused(self) -> str:
        """A hint for an HTTPStatusError 401/403 of a request that carried this."""
        return " Check the credentials (auth=) and that they grant access to this URL."


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty string")
    if "\r" in value or "\n" in value:
        raise ConfigurationError(f"{what} holds a line break (a header value cannot)")
    return value


class Bearer(Auth):
    """``Authorization: Bearer <token>`` (RFC 6750)."""

    def __init__(self, token: str) -> None:
        self._header = "Bearer " + _text(token, "Bearer(token=)")
        self._token = token

    def fixed_headers(self) -> Mapping[str, str]:
        return {"Authorization": self._header}

    def secrets(self) -> tuple[str, ...]:
        return (self._token, self._header)

    def __repr__(self) -> str:
        return f"Bearer(token={REDACTED})"


class Basic(Auth):
    """``Authorization: Basic base64(user:password)`` (RFC 7617, UTF-8)."""

    def __init__(self, user: str, password: str) -> None:
        _text(user, "Basic(user=)")
        if ":" in user:
            raise ConfigurationError("Basic(user=) cannot hold ':' (it ends the user name)")
        if not isinstance(password, str):
            raise ConfigurationError("Basic(password=) must be a string")
        self.user = user
        self._password = password
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._header = "Basic " + encoded

    def fixed_headers(self) -> Mapping[str, str]:
        return {"Authorization": self._header}

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._password, self._header.partition(" ")[2]) if s)

    def __repr__(self) -> str:
        return f"Basic(user={self.user!r}, password={REDACTED})"


class APIKey(Auth):
    """An API key in a header (``where="header"``: ``X-Api-Key: <value>``) or in the query
    (``where="query"``: ``?appid=<value>``, added to each request at the origin, its value
    redacted from every URL shown)."""

    def __init__(self, name: str, value: str, where: Literal["header", "query"] = "header") -> None:
        _text(name, "APIKey(name=)")
        _text(value, "APIKey(value=)")
        if where not in ("header", "query"):
            raise ConfigurationError(f"APIKey(where={where!r}) must be 'header' or 'query'")
        if where == "header" and not _TOKEN_CHARS.fullmatch(name):
            raise ConfigurationError(f"APIKey(name={name!r}) is not a header name")
        self.name = name
        self.where = where
        self._value = value

    def fixed_headers(self) -> Mapping[str, str]:
        return {self.name: self._value} if self.where == "header" else {}

    def fixed_params(self) -> Mapping[str, str]:
        return {self.name: self._value} if self.where == "query" else {}

    def __repr__(self) -> str:
        return f"APIKey(name={self.name!r}, value={REDACTED}, where={self.where!r})"


class _Token(Credential):
    """An OAuth2 access token: when to fetch the next one, and why it was fetched."""

    __slots__ = ("expires_at", "refresh_at", "renewal", "value")

    def __init__(self, value: str, *, expires_at: float, refresh_at: float, renewal: bool) -> None:
        super().__init__({"Authorization": "Bearer " + value})
        self.value = value
        self.expires_at = expires_at
        self.refresh_at = refresh_at
        #: fetched because the API answered 401 to the one before
        self.renewal = renewal


class OAuth2ClientCredentials(Auth):
    """OAuth2's client credentials grant (RFC 6749 §4.4): an access token fetched from
    ``token_url`` with the client's id and secret, sent as ``Authorization: Bearer``.

    One token serves the whole pool: it is fetched by the first request that needs it
    while the others wait for that fetch, fetched again ``refresh_ahead`` seconds before
    it expires (at most half its lifetime ahead), and once when the API answers 401 with
    it (the request is sent again, not counted as an attempt). The client authenticates
    with HTTP Basic (``client_auth="basic"``, RFC 6749 §2.3.1) or in the form
    (``client_auth="body"``); ``scope`` (a string, or several joined by spaces) and
    ``audience`` go into the form when given. The token request goes through the stream's
    session, with its TLS verification and timeout, and follows no redirect.
    """

    changes: ClassVar[bool] = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | Iterable[str] | None = None,
        audience: str | None = None,
        refresh_ahead: float = 30.0,
        client_auth: Literal["basic", "body"] = "basic",
    ) -> None:
        try:
            url = URL(token_url)
        except (TypeError, ValueError):
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            shown = redact_url(url) if url is not None else "a non-URL"
            raise ConfigurationError(
                f"OAuth2ClientCredentials(token_url=) must be an http(s) URL, not {shown!r}"
            )
        self.token_url = url
        self.client_id = _text(client_id, "OAuth2ClientCredentials(client_id=)")
        self._secret = _text(client_secret, "OAuth2ClientCredentials(client_secret=)")
        if scope is not None and not isinstance(scope, str):
            scope = " ".join(scope)
        self.scope = scope or None
        self.audience = audience or None
        if isinstance(refresh_ahead, bool) or not refresh_ahead >= 0:
            raise ConfigurationError(
                f"OAuth2ClientCredentials(refresh_ahead={refresh_ahead!r}) must be a number "
                "of seconds >= 0"
            )
        self.refresh_ahead = float(refresh_ahead)
        if client_auth not in ("basic", "body"):
            raise ConfigurationError(
                f"OAuth2ClientCredentials(client_auth={client_auth!r}) must be 'basic' or 'body'"
            )
        self.client_auth = client_auth
        self._basic = "Basic " + base64.b64encode(
            f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}".encode()
        ).decode("ascii")
        self._token: _Token | None = None
        #: the last tokens handed out (a command line scrubs them from what it prints)
        self._recent: deque[str] = deque(maxlen=4)
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: a final failure of the token endpoint, kept for the rest of that stream's run
        #: (its Transport): every page does not ask again for what was refused
        self._failure: tuple[Transport, TokenError] | None = None
        #: fetches current() has finished, and how the last one failed: the requests
        #: that waited for a fetch share its failure as they would have shared its token
        self._tries = 0
        self._failed: TokenError | None = None
        #: tokens fetched, for whoever wants to count them
        self.fetches = 0

    def __repr__(self) -> str:
        scope = f", scope={self.scope!r}" if self.scope else ""
        audience = f", audience={self.audience!r}" if self.audience else ""
        return (
            f"OAuth2ClientCredentials(token_url={redact_url(self.token_url)!r}, "
            f"client_id={self.client_id!r}, client_secret={REDACTED}{scope}{audience})"
        )

    def header_names(self) -> frozenset[str]:
        return frozenset({"Authorization"})

    def secrets(self) -> tuple[str, ...]:
        return (self._secret, quote_plus(self._secret), self._basic[6:], *self._recent)

    def refused(self) -> str:
        return (
            " The API refused the OAuth2 token (a new one too, on a 401): check that the "
            "client (client_id=) may use this API, and its scope= and audience=."
        )

    # ------------------------------------------------------------------ the token

    def _lock_here(self) -> asyncio.Lock:
        """The lock of the running event loop (an object used again under another loop
        gets a new one: asyncio locks belong to one loop)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    async def current(self, transport: Transport) -> Credential:
        token = self._token
        if token is not None and time.monotonic() < token.refresh_at:
            return token  # the common case: no lock, no await
        lock = self._lock_here()
        if token is not None and lock.locked() and time.monotonic() < token.expires_at:
            return token  # another request is fetching the next one: this one still holds
        tries = self._tries
        async with lock:
            failure = self._failure
            if failure is not None and failure[0] is transport:
                raise failure[1]
            token = self._token
            if token is not None and time.monotonic() < token.refresh_at:
                return token  # fetched while this request waited
            if self._tries != tries and self._failed is not None:
                # the fetch this request waited for failed: so does the request, unless
                # the token it was to replace still holds
                if token is not None and time.monotonic() < token.expires_at:
                    return token
                raise self._failed
            try:
                fresh = await self._obtain(transport, renewal=False)
            except TokenError as exc:
                self._failed = exc
                self._tries += 1
                if exc.transient and token is not None and time.monotonic() < token.expires_at:
                    logger.warning("%s; the current token is used until it expires", exc)
                    return token
                if not exc.transient:
                    self._failure = (transport, exc)
                raise
            self._failed = None
            self._tries += 1
            self._token = fresh
            return fresh

    async def refresh(self, transport: Transport, failed: Credential) -> bool:
        async with self._lock_here():
            if self._token is not failed:
                return True  # renewed meanwhile (by the request that got a 401 first)
            if isinstance(failed, _Token) and failed.renewal and not failed.accepted:
                return False  # a token fetched for a 401 was refused at once: that's final
            logger.info(
                "the API answered 401 to the current OAuth2 token (expired or revoked): "
                "fetching a new one"
            )
            try:
                self._token = await self._obtain(transport, renewal=True)
            except TokenError as exc:
                # the request is sent again: fetching a token then says what went wrong,
                # and counts as its attempt
                self._token = None
                if not exc.transient:
                    self._failure = (transport, exc)
            return True

    async def _obtain(self, transport: Transport, *, renewal: bool) -> _Token:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        headers = {"Accept": "application/json"}
        if self.client_auth == "basic":
            headers["Authorization"] = self._basic
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self._secret
        shown = redact_url(self.token_url)
        started = time.monotonic()
        try:
            async with transport.session.post(
                self.token_url,
                data=form,
                headers=headers,
                allow_redirects=False,
                ssl=transport.ssl,
                timeout=transport.timeout,
            ) as resp:
                status, reason = resp.status, resp.reason or ""
                location = resp.headers.get("Location")
                body = await _read_capped(resp)
        except TokenError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            detail = _scrub_urls(str(exc)) or type(exc).__name__
            raise TokenError(
                f"could not reach the OAuth2 token endpoint {shown}: {detail}", transient=True
            ) from None
        if not 200 <= status < 300:
            raise self._refusal(status, reason, location, body, shown)
        token = self._parse(body, shown)
        value, lifetime = token
        self.fetches += 1
        self._recent.append(value)
        if lifetime is None:
            expires_at = refresh_at = float("inf")
        else:
            expires_at = started + lifetime
            refresh_at = expires_at - min(self.refresh_ahead, lifetime / 2)
        logger.debug(
            "fetched an OAuth2 token from %s%s",
            shown,
            "" if lifetime is None else f", valid for {lifetime:g} s",
        )
        return _Token(value, expires_at=expires_at, refresh_at=refresh_at, renewal=renewal)

    def _refusal(
        self, status: int, reason: str, location: str | None, body: bytes, shown: str
    ) -> TokenError:
        if 300 <= status < 400:
            where = f" to {_scrub_urls(location)}" if location else ""
            return TokenError(
                f"the OAuth2 token endpoint {shown} redirects{where} (HTTP {status}): the "
                "client secret is not sent on; give the final URL as token_url=",
                transient=False,
            )
        excerpt = self._excerpt(body)
        if status in _TRANSIENT:
            return TokenError(
                f"the OAuth2 token endpoint {shown} answered HTTP {status} {reason}; body "
                f"starts with {excerpt!r}",
                transient=True,
            )
        return TokenError(
            f"the OAuth2 token endpoint {shown} refused the client: HTTP {status} {reason}; "
            f"body starts with {excerpt!r}. Check client_id= and client_secret= (and "
            "scope=, audience=, or the token endpoint's URL token_url=)",
            transient=False,
        )

    def _parse(self, body: bytes, shown: str) -> tuple[str, float | None]:
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            data = None
        if not isinstance(data, dict):
            raise TokenError(
                f"the OAuth2 token endpoint {shown} answered with something else than a JSON "
                f"object; body starts with {self._excerpt(body)!r}",
                transient=False,
            )
        value = data.get("access_token")
        if not isinstance(value, str) or not value or "\r" in value or "\n" in value:
            # its values may hold a token under another name: show the keys alone
            raise TokenError(
                f"the OAuth2 token endpoint {shown} answered without an access_token (its "
                f"keys: {sorted(map(str, data))})",
                transient=False,
            )
        lifetime = data.get("expires_in")
        if isinstance(lifetime, str):
            try:
                lifetime = float(lifetime)
            except ValueError:
                lifetime = None
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = None  # no (usable) lifetime: the token is fetched again on a 401
        return value, None if lifetime is None else float(lifetime)

    def _excerpt(self, body: bytes) -> str:
        text = body[:_EXCERPT].decode("utf-8", "replace")
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, REDACTED)
        return text


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > _MAX_TOKEN_BODY:
            raise TokenError(
                f"the OAuth2 token endpoint's answer is larger than {_MAX_TOKEN_BODY} bytes",
                transient=False,
            )
        parts.append(chunk)
    return b"".join(parts)


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+")


def _scrub_urls(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        try:
            return redact_url(match[0])
        except ValueError:
            return "<url>"

    return _URL_IN_TEXT.sub(one, text)

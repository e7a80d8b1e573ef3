"""auth=: Bearer, Basic, an API key in a header or the query, OAuth2 client credentials.

Every credential reaches the API's origin and nothing else (a redirect to another server
sees none of it), never appears in an error, a log line, a checkpoint or the command line's
output; an OAuth2 token is fetched once for the whole pool, again before it expires and
once on a 401 (the request sent again, not counted as an attempt)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import web
from conftest import HANG, cli_fetch, item
from faults import collect, collect_error, fast_retry

import streampage
from streampage import NextURL, PageNumber
from streampage.auth import APIKey, Basic, Bearer, OAuth2ClientCredentials

PER_PAGE = 2
CLIENT_ID = "etl-client"
CLIENT_SECRET = "CLIENT-SEKRET-9f1c"
TOKEN = "BEARER-SEKRET-77aa"
PASSWORD = "BASIC-SEKRET-pw"
API_KEY = "APIKEY-SEKRET-3e3e"
BASIC = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


class Hit:
    def __init__(self, request: web.BaseRequest) -> None:
        self.path = request.path
        self.headers = dict(request.headers)
        self.query = dict(request.query)
        self.status = 0


class API:
    """A paginated API (``GET /items?page=N``) that wants credentials, and its OAuth2 token
    endpoint (``POST /token``): tokens live ``life`` seconds (the API refuses them
    ``early`` seconds before, as a server whose clock runs ahead does) unless revoked."""

    def __init__(
        self,
        *,
        pages: int = 6,
        wants: Callable[[web.BaseRequest], bool] | None = None,
        life: float | None = 3600.0,
        early: float = 0.0,
        page_delay: float = 0.0,
        token_delay: float = 0.0,
        token_fail: list[tuple[int, str]] | None = None,
        next_links: bool = False,
    ) -> None:
        self.pages = pages
        self.wants = wants
        self.life = life
        self.early = early
        self.page_delay = page_delay
        self.token_delay = token_delay
        #: (status, body) answered by the token endpoint, first to last, before tokens
        self.token_fail = list(token_fail or [])
        self.next_links = next_links
        self.hits: list[Hit] = []
        self.token_hits: list[Hit] = []
        self.token_forms: list[dict[str, str]] = []
        #: token -> when it dies at the API (monotonic)
        self.tokens: dict[str, float] = {}
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.token_in_flight = self.max_token_in_flight = 0
        #: page number, request -> an answer of the test's own (None: the usual one)
        self.on_page: Callable[[int, web.BaseRequest], web.Response | None] | None = None
        self.url = self.origin = ""
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ the API

    def token_ok(self, request: web.BaseRequest) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        dies = self.tokens.get(token)
        return (
            scheme == "Bearer"
            and dies is not None
            and time.monotonic() < dies
            and token not in self.revoked
        )

    async def items(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(request)
        self.hits.append(hit)
        n = int(request.query.get("page", "1"))
        if self.page_delay:
            await asyncio.sleep(self.page_delay)
        if self.on_page is not None:
            answer = self.on_page(n, request)
            if answer is not None:
                hit.status = answer.status
                return answer
        wants = self.wants or self.token_ok
        if not wants(request):
            hit.status = 401
            return web.Response(status=401, text="bad credentials")
        hit.status = 200
        first = (n - 1) * PER_PAGE + 1
        records = [item(i) for i in range(first, first + PER_PAGE)] if n <= self.pages else []
        body: dict[str, Any] = {"page": n, "items": records}
        if self.next_links:
            # the next link echoes the whole query, the API key with it
            query = {**request.query, "page": str(n + 1)}
            body["next"] = str(request.url.with_query(query)) if n < self.pages else None
        return web.json_response(body)

    async def token(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(request)
        self.token_hits.append(hit)
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_forms.append(form)
        self.token_in_flight += 1
        self.max_token_in_flight = max(self.max_token_in_flight, self.token_in_flight)
        try:
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if self.token_fail:
                status, text = self.token_fail.pop(0)
                hit.status = status
                return web.Response(status=status, text=text, content_type="application/json")
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            client = base64.b64decode(given).decode() if scheme == "Basic" else ""
            if client != f"{CLIENT_ID}:{CLIENT_SECRET}" and (
                form.get("client_id"),
                form.get("client_secret"),
            ) != (CLIENT_ID, CLIENT_SECRET):
                hit.status = 401
                return web.json_response({"error": "invalid_client"}, status=401)
            token = "tok-" + secrets.token_hex(8)
            born = time.monotonic()
            self.tokens[token] = born + (self.life - self.early if self.life else 1e9)
            self.issued.append(token)
            hit.status = 200
            answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
            if self.life is not None:
                answer["expires_in"] = self.life
            return web.json_response(answer)
        finally:
            self.token_in_flight -= 1

    @property
    def unauthorized(self) -> int:
        return sum(1 for h in self.hits if h.status == 401)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/items", self.items)
        app.router.add_post("/token", self.token)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"http://127.0.0.1:{port}"
        self.url = self.origin + "/items"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def api() -> AsyncIterator[Callable[..., Any]]:
    made: list[API] = []

    async def make(**config: Any) -> API:
        server = API(**config)
        await server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        await server.stop()


def oauth2(server: API, **kwargs: Any) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(server.origin + "/token", CLIENT_ID, CLIENT_SECRET, **kwargs)


def numbers(pages: list[streampage.Page[Any]]) -> list[int]:
    return sorted(p.number for p in pages)


SECRET_TEXTS = (CLIENT_SECRET, TOKEN, PASSWORD, API_KEY, BASIC.split()[1], "tok-")


def assert_no_secret(text: str) -> None:
    for secret in SECRET_TEXTS:
        assert secret not in text, f"{secret} shown in: {text}"


# ---------------------------------------------------------------------- each kind, at home only

KINDS: dict[str, tuple[Callable[[API], Any], Callable[[web.BaseRequest], bool] | None]] = {
    "bearer": (
        lambda s: Bearer(TOKEN),
        lambda r: r.headers.get("Authorization") == f"Bearer {TOKEN}",
    ),
    "basic": (
        lambda s: Basic("alice", PASSWORD),
        lambda r: r.headers.get("Authorization") == BASIC,
    ),
    "apikey-header": (
        lambda s: APIKey("X-Api-Key", API_KEY),
        lambda r: r.headers.get("X-Api-Key") == API_KEY,
    ),
    "apikey-query": (
        lambda s: APIKey("appid", API_KEY, where="query"),
        lambda r: r.query.get("appid") == API_KEY,
    ),
    "oauth2": (oauth2, None),
}


def carries_credentials(hit: Hit) -> bool:
    text = repr(hit.headers) + repr(hit.query)
    return any(s in text for s in (TOKEN, PASSWORD, API_KEY, BASIC, "tok-", CLIENT_SECRET))


@pytest.mark.parametrize("kind", list(KINDS))
async def test_each_kind_reaches_the_api_and_no_other_origin(api, kind):
    make, wants = KINDS[kind]
    other = await api(wants=lambda r: True)
    server = await api(wants=wants)
    # page 2 redirects to the other server (another origin: another port)
    server.on_page = lambda n, request: (
        web.Response(status=302, headers={"Location": f"{other.url}?page={n}"}) if n == 2 else None
    )
    auth = make(server)
    s = streampage.stream(server.url, pages=PageNumber(stop=4), auth=auth, concurrency=2)

    pages = await collect(s)

    assert numbers(pages) == [1, 2, 3, 4]
    assert [h.status for h in server.hits if h.status != 302].count(200) == 3
    assert [h.query["page"] for h in other.hits] == ["2"], "the redirect was not followed"
    for hit in other.hits:
        assert not carries_credentials(hit), f"credentials reached another origin: {hit}"
    for page in pages:  # the key never shows in what the stream hands out
        assert API_KEY not in str(page.response.url)
    if kind == "oauth2":
        assert len(server.token_hits) == 1
        assert server.token_forms == [{"grant_type": "client_credentials"}]
        assert server.token_hits[0].headers["Authorization"].startswith("Basic ")
    assert "SEKRET" not in repr(auth)


async def test_oauth2_client_credentials_in_the_body_with_scope_and_audience(api):
    server = await api()
    auth = oauth2(server, scope=["read", "write"], audience="api", client_auth="body")

    pages = await collect(streampage.stream(server.url, pages=PageNumber(stop=2), auth=auth))

    assert numbers(pages) == [1, 2]
    [form] = server.token_forms
    assert form == {
        "grant_type": "client_credentials",
        "scope": "read write",
        "audience": "api",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert "Authorization" not in server.token_hits[0].headers


async def test_a_next_link_to_another_origin_carries_no_query_key(api):
    other = await api(wants=lambda r: True, pages=1)
    server = await api(wants=lambda r: r.query.get("appid") == API_KEY, pages=1)
    # the body's next link leads to another origin and echoes the key
    server.on_page = lambda n, request: web.json_response(
        {"items": [item(1)], "next": f"{other.url}?page=2&appid={API_KEY}"}
    )
    s = streampage.stream(
        server.url,
        pages=NextURL(cross_origin=True),
        auth=APIKey("appid", API_KEY, where="query"),
    )

    pages = await collect(s)

    assert len(pages) == 2
    [hit] = other.hits
    assert "appid" not in hit.query, "the key followed the next link to another origin"


async def test_a_query_key_leaves_a_signed_next_link_as_the_server_wrote_it():
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.rel_url.raw_query_string)
        if "sig=" in request.rel_url.raw_query_string:
            return web.json_response({"items": [item(2)], "next": None})
        # a signed link: its encoding is part of the signature
        return web.json_response({"items": [item(1)], "next": "/items?sig=a%2Fb%3D&n=2"})

    app = web.Application()
    app.router.add_get("/items", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/items"
        assert len(await collect(streampage.stream(url, pages=NextURL()))) == 2
        plain = seen[1]
        s = streampage.stream(url, pages=NextURL(), auth=APIKey("appid", API_KEY, where="query"))
        assert len(await collect(s)) == 2
    finally:
        await runner.cleanup()
    # the key is added to the query the walk sends anyway, which is otherwise left alone
    assert seen[3] == f"{plain}&appid={API_KEY}"
    assert plain.startswith("sig=") and plain.endswith("%3D&n=2")


# ---------------------------------------------------------------------- redaction


async def test_a_query_key_is_redacted_in_errors_and_logs(api, caplog):
    server = await api(wants=lambda r: r.query.get("appid") == API_KEY, next_links=True)

    def close_page_2(n: int, request: web.BaseRequest) -> web.Response | None:
        if n == 2:  # the connection closes before any response: a RequestError
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        return None

    server.on_page = close_page_2
    caplog.set_level(logging.DEBUG, logger="streampage")
    s = streampage.stream(
        server.url,
        pages=NextURL(),
        auth=APIKey("appid", API_KEY, where="query"),
        retry=fast_retry(attempts=2),
    )

    pages, exc = await collect_error(s)

    assert numbers(pages) == [1]
    assert isinstance(exc, streampage.RequestError) and exc.page == 2
    assert "appid=REDACTED" in exc.url  # the next link's echo, redacted by its name
    for text in (str(exc), repr(exc), exc.url, *(r.getMessage() for r in caplog.records)):
        assert API_KEY not in text, text
    assert server.hits[-1].query["appid"] == API_KEY  # sent, never shown


async def test_a_status_error_with_a_query_key_shows_the_url_without_it(api):
    server = await api(wants=lambda r: False)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=1), auth=APIKey("appid", API_KEY, where="query")
    )

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.HTTPStatusError) and exc.status == 401
    assert API_KEY not in str(exc) and "appid" not in exc.url
    assert "(auth=)" in str(exc)  # the hint names what sent the credentials


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
async def test_nothing_of_auth_is_checkpointed(api, tmp_path, sink):
    """A walk whose next links echo the key, and an OAuth2 token besides: the files the
    sink writes (records, checkpoint, journal) hold none of it."""
    server = await api(
        wants=lambda r: r.query.get("appid") == API_KEY and r.headers.get("X-Token") == TOKEN,
        next_links=True,
    )
    target = (
        streampage.sinks.JSONLines(tmp_path / "out.jsonl")
        if sink == "jsonl"
        else streampage.sinks.SQLite(tmp_path / "out.db", table="items")
    )

    class Both(APIKey):  # an API key in the query and a token in a header
        def fixed_headers(self) -> dict[str, str]:
            return {"X-Token": TOKEN}

        def header_names(self) -> frozenset[str]:
            return frozenset({"X-Token"})

    s = streampage.stream(server.url, pages=NextURL(), auth=Both("appid", API_KEY, "query"))
    stats = await s.records("items").into(target, checkpoint="auth")

    assert stats.pages == server.pages
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in (API_KEY, TOKEN):
            assert secret.encode() not in data, f"{secret} in {path.name}"
    assert server.hits[-1].query["appid"] == API_KEY


async def test_oauth2_tokens_are_not_checkpointed(api, tmp_path):
    server = await api()
    auth = oauth2(server)
    target = streampage.sinks.JSONLines(tmp_path / "out.jsonl")
    s = streampage.stream(server.url, pages=PageNumber(stop=4), auth=auth)

    await s.records("items").into(target, checkpoint="auth")

    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in (CLIENT_SECRET, *server.issued):
            assert secret.encode() not in data, f"{secret} in {path.name}"


# ---------------------------------------------------------------------- OAuth2 over a long run


async def test_tokens_that_expire_every_second_during_a_long_run(api):
    """Tokens live 1 s and the API refuses them 0.1 s early (its clock runs ahead): every
    expiry costs the requests in flight a 401 and the pool one new token."""
    pages = 1200  # 8 workers, 20 ms a page: at least 3 s
    server = await api(pages=pages, life=1.0, early=0.1, page_delay=0.02, token_delay=0.02)
    auth = oauth2(server, refresh_ahead=0.0)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=pages), auth=auth, concurrency=8, adaptive=False
    )

    started = time.monotonic()
    got = await collect(s, within=60)
    elapsed = time.monotonic() - started

    assert numbers(got) == list(range(1, pages + 1)), "a page was lost or delivered twice"
    served = Counter(int(h.query["page"]) for h in server.hits if h.status == 200)
    assert set(served.values()) == {1} and len(served) == pages
    assert elapsed > 2.5, f"the run was too short to see tokens expire ({elapsed:.1f} s)"
    # one token per expiry, not one per worker
    assert server.max_token_in_flight == 1
    expiries = elapsed / 0.9
    assert len(server.token_hits) <= expiries + 2, (len(server.token_hits), elapsed)
    assert len(server.token_hits) >= 3
    # the 401s were the token's, sent again and not counted as attempts
    assert server.unauthorized > 0
    assert "status 401" not in s.stats.retries
    assert s.stats.requests == pages + server.unauthorized
    assert s.failures == []


async def test_a_token_is_fetched_again_ahead_of_its_expiry(api):
    server = await api(pages=400, life=1.0, page_delay=0.01, token_delay=0.02)
    auth = oauth2(server, refresh_ahead=0.3)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=400), auth=auth, concurrency=4, adaptive=False
    )

    started = time.monotonic()
    got = await collect(s, within=60)
    elapsed = time.monotonic() - started

    assert len(got) == 400
    assert server.unauthorized == 0, "a token was used past its expiry"
    assert s.stats.requests == 400
    assert 2 <= len(server.token_hits) <= elapsed / 0.7 + 2
    assert server.max_token_in_flight == 1


async def test_a_revoked_token_is_renewed_once_and_the_page_sent_again(api):
    server = await api(pages=12)
    revoked = asyncio.Event()

    def revoke_at_page_5(n: int, request: web.BaseRequest) -> web.Response | None:
        if n == 5 and not revoked.is_set():
            revoked.set()
            server.revoked.update(server.issued)  # every token so far, before its expiry
        return None

    server.on_page = revoke_at_page_5
    s = streampage.stream(server.url, pages=PageNumber(stop=12), auth=oauth2(server), concurrency=4)

    got = await collect(s)

    assert numbers(got) == list(range(1, 13))
    assert len(server.token_hits) == 2, "one new token for the revoked one, not one per worker"
    assert server.unauthorized >= 1
    assert [h.status for h in server.hits if h.query["page"] == "5"] == [401, 200]
    assert s.stats.requests == 12 + server.unauthorized
    assert s.stats.retries == {}


async def test_a_new_token_refused_too_is_a_real_failure(api):
    server = await api(wants=lambda r: False)
    s = streampage.stream(server.url, pages=PageNumber(stop=4), auth=oauth2(server), concurrency=4)

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.HTTPStatusError) and exc.status == 401
    assert "token" in str(exc) and "scope=" in str(exc)
    assert exc.attempts == 1
    assert len(server.token_hits) == 2, "the first token and one renewal, no more"
    assert_no_secret(str(exc))


# ---------------------------------------------------------------------- the token endpoint


async def test_a_token_endpoint_that_refuses_the_client_is_a_clear_error(api, caplog):
    server = await api()
    # the endpoint echoes what it got: the error must not
    body = msgspec.json.encode(
        {"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET}"}
    ).decode()
    server.token_fail = [(401, body)] * 5
    caplog.set_level(logging.DEBUG, logger="streampage")
    s = streampage.stream(
        server.url, pages=PageNumber(stop=6), auth=oauth2(server), concurrency=3, on_error="skip"
    )

    await collect(s)

    assert len(s.failures) == 6 and server.hits == []
    assert len(server.token_hits) == 1, "a refused client is not asked again for every page"
    exc = s.failures[0].error
    assert isinstance(exc, streampage.RequestError)
    message = str(exc)
    assert "token endpoint" in message and "HTTP 401" in message and "invalid_client" in message
    assert "client_secret=" in message  # the hint
    assert CLIENT_SECRET not in message and "REDACTED" in message
    for record in caplog.records:
        assert CLIENT_SECRET not in record.getMessage()


async def test_a_token_endpoint_that_fails_for_a_moment_is_retried(api):
    """The workers that waited for a fetch that failed share its failure (each page
    retries), as they would have shared its token: one fetch each time, not one a worker."""
    server = await api(token_delay=0.05)
    server.token_fail = [(503, '{"error": "busy"}')]
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=4),
        auth=oauth2(server),
        concurrency=4,
        retry=fast_retry(),
    )

    got = await collect(s)

    assert numbers(got) == [1, 2, 3, 4]
    assert len(server.token_hits) == 2
    assert s.stats.retries == {"token": 4}
    assert server.max_token_in_flight == 1


async def test_a_token_answer_without_an_access_token_shows_its_keys_not_its_values(api):
    server = await api()
    server.token_fail = [(200, '{"token": "tok-hidden-value", "expires_in": 60}')]
    s = streampage.stream(server.url, pages=PageNumber(stop=1), auth=oauth2(server))

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.RequestError)
    assert "access_token" in str(exc) and "'token'" in str(exc)
    assert "tok-hidden-value" not in str(exc)


async def test_a_token_endpoint_that_redirects_is_not_followed(api):
    server = await api()
    other = await api()

    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(other.origin + "/token")

    server.token = moved  # type: ignore[method-assign]
    await server.stop()
    await server.start()  # with the redirecting token endpoint
    s = streampage.stream(server.url, pages=PageNumber(stop=1), auth=oauth2(server))

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.RequestError)
    assert "redirects" in str(exc) and "token_url=" in str(exc)
    assert other.token_hits == [], "the client secret followed the redirect"


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"headers": {"authorization": "Bearer x"}}, "headers="),
        ({"url": "http://me:pw@127.0.0.1:1/items"}, "user:password@"),
    ],
)
def test_auth_and_another_authorization_are_refused(kwargs, named):
    url = kwargs.pop("url", "http://127.0.0.1:1/items")
    with pytest.raises(streampage.ConfigurationError) as caught:
        streampage.stream(url, auth=Bearer(TOKEN), **kwargs)
    message = str(caught.value)
    assert "auth=" in message and named in message
    assert TOKEN not in message and "pw@" not in message


def test_a_query_key_and_the_same_parameter_are_refused():
    auth = APIKey("appid", API_KEY, where="query")
    for call in (
        lambda: streampage.stream("http://127.0.0.1:1/items", params={"appid": "x"}, auth=auth),
        lambda: streampage.stream("http://127.0.0.1:1/items?appid=x", auth=auth),
    ):
        with pytest.raises(streampage.ConfigurationError) as caught:
            call()
        assert "appid" in str(caught.value) and API_KEY not in str(caught.value)


def test_reprs_and_bad_arguments():
    for auth in (
        Bearer(TOKEN),
        Basic("alice", PASSWORD),
        APIKey("X-Key", API_KEY),
        OAuth2ClientCredentials("https://a.example/token", CLIENT_ID, CLIENT_SECRET),
    ):
        assert_no_secret(repr(auth))
        assert "REDACTED" in repr(auth)
    with pytest.raises(streampage.ConfigurationError):
        streampage.stream("http://127.0.0.1:1/items", auth=("alice", "pw"))  # type: ignore[arg-type]
    with pytest.raises(streampage.ConfigurationError):
        OAuth2ClientCredentials("ftp://a/token", CLIENT_ID, CLIENT_SECRET)
    with pytest.raises(streampage.ConfigurationError):
        APIKey("X-Key", API_KEY, where="cookie")  # type: ignore[arg-type]
    with pytest.raises(streampage.ConfigurationError):
        Bearer("")


def test_auth_is_a_lazy_public_module():
    assert streampage.auth.Bearer is Bearer
    assert "auth" in streampage.__all__


# ---------------------------------------------------------------------- the command line


async def test_cli_oauth2_end_to_end_never_prints_a_secret(api, monkeypatch, tmp_path):
    server = await api(pages=5, life=1.0, early=0.0, page_delay=0.3)
    monkeypatch.setenv("SP_CLIENT_SECRET", CLIENT_SECRET)
    run = await cli_fetch(
        server.url,
        "--auth",
        "oauth2",
        "--token-url",
        server.origin + "/token",
        "--client-id",
        CLIENT_ID,
        "--client-secret-env",
        "SP_CLIENT_SECRET",
        "--pages",
        "page",
        "--stop",
        "5",
        "-c",
        "1",
        "-vv",
        "-o",
        "-",
        within=HANG * 3,
    )

    assert run.code == 0, run
    records = [msgspec.json.decode(line) for line in run.out.splitlines()]
    assert len(records) == 5 * PER_PAGE
    assert len(server.token_hits) >= 2  # 1.5 s of pages with tokens that live 1 s
    for text in (run.out, run.err):
        assert CLIENT_SECRET not in text
        for token in server.issued:
            assert token not in text


async def test_cli_a_refused_client_is_said_without_the_secret(api, monkeypatch):
    server = await api()
    server.token_fail = [(401, f'{{"error": "invalid_client", "got": "{CLIENT_SECRET}"}}')] * 3
    monkeypatch.setenv("SP_CLIENT_SECRET", CLIENT_SECRET)
    run = await cli_fetch(
        server.url,
        "--token-url",  # --auth oauth2 implied
        server.origin + "/token",
        "--client-id",
        CLIENT_ID,
        "--client-secret-env",
        "SP_CLIENT_SECRET",
        "--pages",
        "page",
        "--stop",
        "2",
        "-o",
        "-",
    )

    assert run.code == 1, run
    assert "token endpoint" in run.err and "invalid_client" in run.err
    assert "--client-secret-env" in run.err  # the hint, spoken as options
    assert CLIENT_SECRET not in run.err + run.out


@pytest.mark.parametrize(
    ("kind", "options", "env"),
    [
        ("bearer", ["--auth", "bearer", "--token-env", "SP_TOKEN"], {"SP_TOKEN": TOKEN}),
        ("basic", ["-u", "alice", "--password-env", "SP_PW"], {"SP_PW": PASSWORD}),
        (
            "apikey-query",
            ["--auth", "apikey", "--api-key-param", "appid", "--api-key-env", "SP_KEY"],
            {"SP_KEY": API_KEY},
        ),
        (
            "apikey-header",
            ["--api-key-header", "X-Api-Key", "--api-key-env", "SP_KEY"],
            {"SP_KEY": API_KEY},
        ),
    ],
)
async def test_cli_fixed_credentials_from_the_environment(api, monkeypatch, kind, options, env):
    server = await api(wants=KINDS[kind][1], pages=3)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    run = await cli_fetch(server.url, *options, "--pages", "page", "--stop", "3", "-v", "-o", "-")

    assert run.code == 0, run
    assert len(run.out.splitlines()) == 3 * PER_PAGE
    assert all(h.status == 200 for h in server.hits)
    for value in env.values():
        assert value not in run.out + run.err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--auth", "bearer"], "--auth bearer needs --token-env"),
        (["--auth", "bearer", "--token-env", "SP_UNSET_VAR"], "SP_UNSET_VAR"),
        (["--token-env", "X", "--client-id", "y"], "different --auth kinds"),
        (["--auth", "oauth2", "--token-env", "X"], "--token-env applies to --auth bearer"),
        (["--auth", "apikey", "--api-key-env", "SP_TOKEN"], "--api-key-header NAME or"),
        (
            ["--auth", "bearer", "--token-env", "SP_TOKEN", "-H", "Authorization: x"],
            "both send credentials",
        ),
        (["-u", "alice"], "written user:password"),
    ],
)
async def test_cli_auth_usage_errors(monkeypatch, args, said):
    monkeypatch.setenv("SP_TOKEN", TOKEN)
    monkeypatch.delenv("SP_UNSET_VAR", raising=False)
    run = await cli_fetch("http://127.0.0.1:9/items", *args)

    assert run.code == 2, run
    assert said in run.err, run.err
    assert TOKEN not in run.err


def test_secrets_never_on_the_command_line():
    # the options that take a secret take the name of a variable, never the value
    from streampage.cli._parser import build_parser

    fetch = build_parser()._subparsers._group_actions[0].choices["fetch"]  # type: ignore[union-attr]
    options = {o for a in fetch._actions for o in a.option_strings}
    assert {"--token-env", "--api-key-env", "--client-secret-env", "--password-env"} <= options
    assert not {"--token", "--api-key", "--client-secret", "--password"} & options
    assert os.environ.get("SP_CLIENT_SECRET") is None

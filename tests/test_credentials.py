"""Credentials stay home: secret headers reach only the stream's origin, secrets in URLs never
appear in errors or logs, and TLS verification is on unless turned off by name."""

from __future__ import annotations

import logging
import time
import warnings

import aiohttp
import pytest
from faults import (
    Fault,
    collect,
    collect_error,
    dead_port_with_hanging_connect,
    fast_retry,
    fault_servers,
    self_signed_server_context,
)

import streampage
from streampage import PageNumber, Timeout


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


SECRETS = {
    "Authorization": "Bearer SEKRET-AUTH",
    "Cookie": "session=SEKRET-COOKIE",
    "X-Api-Key": "SEKRET-APIKEY",
    "X-Auth-Token": "SEKRET-TOKEN",
    "X-Tenant": "SEKRET-MARKED",  # secret only because the user says so
}
PUBLIC = {"X-Trace": "public-trace", "Accept-Language": "en"}


def secrets_in(headers) -> set[str]:
    lowered = {k.lower(): v for k, v in headers.items()}
    return {k for k, v in SECRETS.items() if lowered.get(k.lower()) == v}


def to(other, status: int = 302) -> Fault:
    """A redirect to the same path and query on another server."""
    return Fault.redirect(lambda request: other.origin + str(request.rel_url), status=status)


def make_session(auth: tuple[str, str] | None = None, **kwargs) -> aiohttp.ClientSession:
    """A user's session; ``auth=(user, password)`` (aiohttp 3.14 deprecates BasicAuth, which
    users still pass, so the warning is silenced here only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if auth is not None:
            kwargs["auth"] = aiohttp.BasicAuth(*auth)
        return aiohttp.ClientSession(**kwargs)


async def servers(fault_server, first: Fault, other_host: str = "127.0.0.2"):
    other = await fault_server(host=other_host)
    origin = await fault_server(schedule={1: [first]})
    return origin, other


# ---------------------------------------------------------------------- headers by origin


async def test_secret_headers_reach_the_origin(fault_server):
    server = await fault_server()
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=2),
        headers={**SECRETS, **PUBLIC},
        secret_headers=["X-Tenant"],
    )

    await collect(s)

    for hit in server.hits:
        assert secrets_in(hit.headers) == set(SECRETS)
        assert hit.headers["X-Trace"] == "public-trace"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_origin_is_followed_without_the_secrets(fault_server, status):
    other = await fault_server(host="127.0.0.2")
    origin = await fault_server(schedule={1: [to(other, status)], 2: [to(other, status)]})
    s = streampage.stream(
        origin.url,
        pages=PageNumber(stop=3),
        concurrency=1,
        headers={**SECRETS, **PUBLIC},
        secret_headers=["x-tenant"],  # case does not matter
    )

    pages = await collect(s)

    assert sorted(p.number for p in pages) == [1, 2, 3]
    assert [h.page for h in other.hits] == [1, 2], "the redirect was not followed"
    for hit in other.hits:
        assert "Authorization" not in hit.headers
        assert secrets_in(hit.headers) == set(), f"leaked to {other.origin}: {hit.headers}"
        assert hit.headers.get("X-Trace") == "public-trace"  # public headers still go
    for hit in origin.hits:
        assert secrets_in(hit.headers) == set(SECRETS)
    # the page records where it came from
    assert pages[0].response.url.host == "127.0.0.2"


async def test_another_port_on_the_same_host_is_another_origin(fault_server):
    origin, other = await servers(fault_server, Fault.ok(), other_host="127.0.0.1")
    origin.schedule[1] = [to(other)]
    s = streampage.stream(
        origin.url, pages=PageNumber(stop=1), headers=SECRETS, secret_headers=["X-Tenant"]
    )

    await collect(s)

    [hit] = other.hits
    assert secrets_in(hit.headers) == set()


async def test_a_same_origin_redirect_keeps_the_secrets(fault_server):
    server = await fault_server()
    server.schedule[1] = [Fault.redirect(lambda r: "/elsewhere?" + r.query_string)]
    s = streampage.stream(server.url, pages=PageNumber(stop=1), headers=SECRETS)

    [page] = await collect(s)

    assert page.number == 1
    first, second = server.hits
    assert secrets_in(first.headers) == secrets_in(second.headers) == set(SECRETS)


async def test_userinfo_in_the_url_does_not_follow_a_redirect(fault_server):
    other = await fault_server(host="127.0.0.2")
    origin = await fault_server(schedule={1: [to(other)]})
    url = origin.url.replace("http://", "http://alice:SEKRET-PW@")
    s = streampage.stream(url, pages=PageNumber(stop=1))

    await collect(s)

    assert "Authorization" in origin.hits[0].headers
    assert "Authorization" not in other.hits[0].headers


@pytest.mark.parametrize(
    "session_kwargs",
    [
        pytest.param({"auth": ("alice", "SEKRET-PW")}, id="auth"),
        pytest.param({"headers": {"Authorization": "Bearer SEKRET"}}, id="authorization"),
        pytest.param({"headers": {"X-Api-Key": "SEKRET"}}, id="api-key"),
    ],
)
async def test_a_user_session_with_credentials_refuses_a_cross_origin_redirect(
    fault_server, session_kwargs
):
    other = await fault_server(host="127.0.0.2")
    origin = await fault_server(schedule={1: [to(other)] * 10})
    async with make_session(**session_kwargs) as session:
        s = streampage.stream(
            origin.url, pages=PageNumber(stop=2), session=session, retry=fast_retry()
        )
        _, exc = await collect_error(s)

    assert isinstance(exc, streampage.RequestError)
    assert exc.page == 1 and "page 1" in str(exc)
    assert "another origin" in str(exc)
    assert "SEKRET" not in str(exc)
    assert other.hits == [], "the request went to the other origin with the session's secrets"
    assert origin.attempts[1] == 1, "a refusal is final, not retried"


async def test_a_user_session_header_the_user_marks_secret_is_a_credential_too(fault_server):
    # X-Tenant is secret only because secret_headers= says so; on the session it must count
    other = await fault_server(host="127.0.0.2")
    origin = await fault_server(schedule={1: [to(other)] * 10})
    async with make_session(headers={"X-Tenant": "SEKRET-MARKED"}) as session:
        s = streampage.stream(
            origin.url,
            pages=PageNumber(stop=1),
            session=session,
            secret_headers=["X-Tenant"],
            retry=fast_retry(),
        )
        outcome = await collect_outcome(s)

    assert [h.headers.get("X-Tenant") for h in other.hits] == [], "X-Tenant reached another origin"
    assert isinstance(outcome, streampage.RequestError)


async def collect_outcome(s):
    try:
        return await collect(s)
    except streampage.StreamPageError as exc:
        return exc


async def test_a_user_session_without_credentials_follows_the_redirect(fault_server):
    other = await fault_server(host="127.0.0.2")
    origin = await fault_server(schedule={1: [to(other)]})
    async with make_session(headers={"X-Trace": "t"}) as session:
        s = streampage.stream(
            origin.url,
            pages=PageNumber(stop=1),
            session=session,
            headers=SECRETS,
            secret_headers=["X-Tenant"],
        )
        [page] = await collect(s)

    assert page.number == 1
    assert secrets_in(origin.hits[0].headers) == set(SECRETS)
    assert secrets_in(other.hits[0].headers) == set()
    assert other.hits[0].headers.get("X-Trace") == "t"


async def test_a_user_session_with_credentials_may_still_redirect_within_its_origin(fault_server):
    server = await fault_server()
    server.schedule[1] = [Fault.redirect(lambda r: "/v2/items?" + r.query_string)]
    async with make_session(auth=("alice", "pw")) as session:
        s = streampage.stream(server.url, pages=PageNumber(stop=1), session=session)
        [page] = await collect(s)

    assert page.number == 1
    assert all("Authorization" in h.headers for h in server.hits)


# ---------------------------------------------------------------------- redaction

SECRET_URL_PARTS = ("SEKRET1", "SEKRET2", "SEKRET3", "SEKRET-PW")


def secret_url(base: str) -> str:
    return base.replace("http://", "http://bob:SEKRET-PW@") + "?api_key=SEKRET1&token=SEKRET2"


def assert_no_secret(text: str) -> None:
    for part in SECRET_URL_PARTS:
        assert part not in text, f"{part} shown in: {text}"


def assert_redacted(exc: BaseException, caplog) -> None:
    assert isinstance(exc, streampage.PageError), repr(exc)
    assert_no_secret(str(exc))
    assert_no_secret(repr(exc))
    assert_no_secret(exc.url)
    assert "REDACTED" in exc.url
    for record in caplog.records:
        assert_no_secret(record.getMessage())


SCENARIOS = {
    "http-status": (Fault.status(500), {}),
    "unauthorized": (Fault.status(401), {}),
    "decode": (Fault.invalid_json(), {}),
    "too-large": (Fault.oversized(4096), {"max_page_bytes": 1024}),
    "timeout": (Fault.hang(), {"timeout": Timeout(attempt=0.2)}),
    "reset": (Fault.reset(), {}),
    "truncated": (Fault.truncated(), {}),
    "non-http-redirect": (Fault.redirect("ftp://127.0.0.1/x?token=SEKRET2"), {}),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_secrets_in_the_url_are_redacted_in_every_error(fault_server, caplog, scenario):
    fault, kwargs = SCENARIOS[scenario]
    server = await fault_server(schedule={1: [fault] * 5})
    caplog.set_level(logging.DEBUG, logger="streampage")
    s = streampage.stream(
        secret_url(server.url),
        pages=PageNumber(stop=1),
        params={"access_token": "SEKRET3"},
        retry=fast_retry(attempts=2),
        **kwargs,
    )

    _, exc = await collect_error(s)

    assert server.hits[0].query["api_key"] == "SEKRET1"  # it was sent, just never shown
    assert_redacted(exc, caplog)


async def test_redirect_loops_are_reported_redacted(fault_server, caplog):
    server = await fault_server()
    server.schedule[1] = [Fault.redirect(lambda r: str(r.rel_url))] * 50
    caplog.set_level(logging.DEBUG, logger="streampage")
    s = streampage.stream(secret_url(server.url), pages=PageNumber(stop=1), retry=False)

    _, exc = await collect_error(s)

    assert "redirect" in str(exc)
    assert_redacted(exc, caplog)


async def test_connection_refused_is_reported_redacted(caplog):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    caplog.set_level(logging.DEBUG, logger="streampage")
    s = streampage.stream(
        secret_url(f"http://127.0.0.1:{port}/items"),
        pages=PageNumber(stop=1),
        retry=fast_retry(attempts=2),
    )

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.RequestError)
    assert_redacted(exc, caplog)


async def test_connect_timeout_is_reported_redacted(caplog):
    # aiohttp's own message here quotes the full URL: "Connection timeout to host <url>"
    listener, fillers, port = dead_port_with_hanging_connect()
    caplog.set_level(logging.DEBUG, logger="streampage")
    try:
        s = streampage.stream(
            secret_url(f"http://127.0.0.1:{port}/items"),
            pages=PageNumber(stop=1),
            timeout=Timeout(connect=0.2),
            retry=False,
        )
        _, exc = await collect_error(s)
    finally:
        for sock in [*fillers, listener]:
            sock.close()

    assert isinstance(exc, streampage.RequestError)
    assert_redacted(exc, caplog)


async def test_failures_recorded_with_skip_are_redacted(fault_server):
    server = await fault_server(schedule={1: [Fault.status(503)] * 5, 2: [Fault.hang()] * 5})
    s = streampage.stream(
        secret_url(server.url),
        pages=PageNumber(stop=3),
        timeout=0.2,
        retry=fast_retry(attempts=2),
        on_error="skip",
    )

    await collect(s)

    assert sorted(f.page for f in s.failures) == [1, 2]
    for failure in s.failures:
        assert_no_secret(repr(failure))
        assert_no_secret(str(failure.error))


# ---------------------------------------------------------------------- TLS


@pytest.fixture
async def tls_server(fault_server, tmp_path):
    return await fault_server(ssl_context=self_signed_server_context(tmp_path))


async def test_tls_certificates_are_verified_by_default(tls_server):
    s = streampage.stream(tls_server.url, pages=PageNumber(stop=1), retry=fast_retry(attempts=2))

    started = time.monotonic()
    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.RequestError)
    assert exc.page == 1
    assert "certificate" in str(exc).lower()
    assert tls_server.hits == []
    assert time.monotonic() - started < 2


async def test_verify_tls_false_turns_verification_off(tls_server):
    s = streampage.stream(tls_server.url, pages=PageNumber(stop=2), verify_tls=False)

    pages = await collect(s)

    assert sorted(p.number for p in pages) == [1, 2]


def test_userinfo_and_an_authorization_header_together_are_refused_at_once():
    # aiohttp would raise a raw ValueError at the first request; say which two clash
    with pytest.raises(streampage.ConfigurationError) as caught:
        streampage.stream("http://me:secret@127.0.0.1:1/items", headers={"authorization": "x"})
    assert "user:password@" in str(caught.value) and "Authorization" in str(caught.value)
    assert "secret" not in str(caught.value)

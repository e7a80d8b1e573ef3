"""Defaults that outlast real outages (issue 9), and the checks that go with them.

With no options, a stream rides out 2 s of 503s without losing a page, ends a stalled or
dripping response in seconds rather than a minute, keeps its memory bounded when huge bodies
are refused, and hints at the right cause when the first page fails. ``validate=`` (and the
CLI's ``--expect``) rejects a well-formed body that is not the page asked for, and has it
fetched again. Time-based tests use short explicit values; the defaults themselves are read
from the policy objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections import Counter
from typing import Any

import msgspec
import pytest
from conftest import cli_fetch
from faults import Fault, collect, collect_error, fast_retry, fault_servers, page_body

import streampage
from streampage import PageNumber, RetryPolicy, Timeout


@pytest.fixture
async def fault_server():
    async with fault_servers() as make:
        yield make


MiB = 1024 * 1024


def numbers(pages):
    return Counter(p.number for p in pages)


async def ended(server) -> None:
    """Wait until every handler of the server has finished (its client went away)."""
    async with asyncio.timeout(5):
        while any(h.ended is None for h in server.hits):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# ---------------------------------------------------------------------- the retry policy


def test_retry_policy_defaults():
    policy = RetryPolicy()
    assert policy.attempts == 10
    assert policy.backoff == 0.02
    assert policy.max_wait == 10.0
    assert policy.max_total == 120.0
    assert policy.pool_pause == 5.0
    assert policy.decode_attempts == 2


def test_the_default_backoff_is_equal_jitter():
    # before retry i: uniform in [d/2, d], d = min(max_wait, backoff * 2**i). The floor is
    # what makes the waits add up to enough to outlast a short outage
    policy = RetryPolicy()
    for retry in range(10):
        ceiling = min(policy.max_wait, policy.backoff * 2**retry)
        waits = [policy.backoff_for(retry) for _ in range(400)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (retry, min(waits), max(waits))
        # spread over the whole range, not clustered at either end
        assert min(waits) < 0.55 * ceiling
        assert max(waits) > 0.95 * ceiling


def test_the_default_waits_outlast_two_seconds_and_end_in_bounded_time():
    policy = RetryPolicy()
    ceilings = [min(policy.max_wait, policy.backoff * 2**i) for i in range(policy.attempts - 1)]
    # the shortest the nine retries can wait in all: 0.01 + 0.02 + ... + 2.56
    assert sum(c / 2 for c in ceilings) == pytest.approx(5.11)
    # the longest a page can wait over all its retries: a dead server is given up in ~10 s,
    # well inside max_total
    assert sum(ceilings) == pytest.approx(10.22)
    assert sum(ceilings) <= policy.max_total


async def test_two_seconds_of_503s_lose_no_page_with_the_default_policy(fault_server):
    # a restart or a failover: after 20 requests, every request gets 503 (no Retry-After)
    # for 2 s. Before, 5 attempts 0.1 s apart gave up after ~0.75 s of waiting.
    # on_error="skip" only so that a lost page is listed rather than ending the stream
    total = 60
    server = await fault_server(outage=(20, 2.0), delay=0.02)
    s = streampage.stream(server.url, pages=PageNumber(stop=total), on_error="skip")

    pages = await collect(s, within=20)

    assert [(f.page, f.attempts, str(f.error)) for f in s.failures] == []
    assert s.stats.failed == 0
    assert numbers(pages) == Counter(range(1, total + 1))
    # the outage happened, and pages that met it at its start were delivered after its end
    assert server.outage_window is not None
    start, end = server.outage_window
    early = {h.page for h in server.hits if h.status == 503 and h.arrived < start + 0.1}
    assert early, "no page met the start of the outage"
    for n in early:
        assert server.hits_for(n)[-1].status == 200
        assert server.hits_for(n)[-1].arrived >= end
    assert s.stats.retries.get("status 503", 0) == server.statuses()[503]


# ---------------------------------------------------------------------- timeouts


def test_timeout_defaults():
    timeout = Timeout()
    assert timeout.connect == 10.0
    assert timeout.first_byte == 10.0  # read inactivity: on by default
    assert timeout.attempt == 60.0
    assert timeout.min_rate == 1024.0


async def test_a_response_that_never_starts_times_out_after_first_byte(fault_server):
    # first_byte alone (attempt and min_rate as by default): no status line ever comes
    server = await fault_server(schedule={1: [Fault.hang()] * 5})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=1),
        timeout=Timeout(first_byte=0.3),
        retry=fast_retry(attempts=2),
    )

    _, exc = await collect_error(s)
    await ended(server)

    assert isinstance(exc, streampage.RequestError), repr(exc)
    assert exc.page == 1 and "page 1" in str(exc)
    assert exc.attempts == 2
    assert s.stats.retries == {"timeout": 1}
    # how long each attempt held a connection, as the server saw it
    held = [h.ended - h.arrived for h in server.hits_for(1)]
    assert all(0.25 <= d < 0.8 for d in held), held


async def test_a_dripping_body_is_stopped_by_min_rate(fault_server):
    # a byte every 0.05 s: never silent for first_byte (0.3 s), so only the rate ends it:
    # after 0.3 s of body it has averaged ~90 bytes/s, under min_rate=100
    server = await fault_server(schedule={1: [Fault.drip(0.05)] * 5})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=1),
        timeout=Timeout(first_byte=0.3, min_rate=100),
        retry=fast_retry(attempts=2),
    )

    started = time.monotonic()
    _, exc = await collect_error(s)
    elapsed = time.monotonic() - started
    await ended(server)

    assert isinstance(exc, streampage.RequestError), repr(exc)
    assert exc.page == 1 and "page 1" in str(exc)
    assert exc.attempts == 2
    assert s.stats.retries == {"timeout": 1}
    held = [h.ended - h.arrived for h in server.hits_for(1)]
    assert all(d < 0.8 for d in held), held
    # each attempt really was dripping (so the silence timeout could not have ended it)
    assert all(h.bytes_written >= 4 for h in server.hits_for(1))
    assert elapsed < 2.0


async def test_a_fast_big_body_is_not_stopped_by_min_rate(fault_server):
    # 1 MiB in 16 KiB pieces every 10 ms: ~0.65 s of body, far longer than first_byte, at
    # ~1.6 MB/s, far above min_rate: delivered on the first attempt
    body = b'"' + b"a" * (MiB - 2) + b'"'
    server = await fault_server(schedule={1: [Fault.paced(body, chunk=16 * 1024, interval=0.01)]})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=1),
        timeout=Timeout(first_byte=0.2, min_rate=256 * 1024),
        retry=fast_retry(attempts=2),
    )

    started = time.monotonic()
    [page] = await collect(s)
    elapsed = time.monotonic() - started

    assert len(page.data) == MiB - 2
    assert server.attempts[1] == 1
    assert s.stats.retries == {}
    assert elapsed > 0.4  # the body did stream for longer than first_byte


# ---------------------------------------------------------------------- memory


#: Streams two pages from argv[1] with default settings, then prints its peak RSS in KiB.
#: The peak is the kernel's high-water mark of this process's own memory (VmHWM): on Linux
#: ru_maxrss is carried over exec from the process that forked it (here pytest, which may
#: be far over 64 MiB itself), so it would measure the test runner, not the client.
_TWO_HUGE_PAGES = """
import asyncio, json, re, sys
import streampage

def peak_rss():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))

after_import = peak_rss()

async def main(url):
    s = streampage.stream(url, pages=streampage.PageNumber(stop=2), on_error="skip")
    async with s:
        async for _ in s:
            pass
    return s

s = asyncio.run(main(sys.argv[1]))
failures = [[f.page, type(f.error).__name__] for f in s.failures]
print(json.dumps({"after_import": after_import, "peak": peak_rss(), "failures": failures}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM in /proc (Linux)")
async def test_two_refused_huge_bodies_in_flight_keep_peak_rss_under_64_mib(fault_server):
    # two pages of 100 MiB, chunked (no Content-Length: refused only while streaming in), in
    # flight at once. Before: peak RSS 75 MB with the 32 MiB default cap. Measured in a
    # child process, so that this process (and its server) does not count
    # Each answer waits 0.3 s before streaming, so that the other request is in by then
    # (a busy machine can otherwise send the second after the first was refused).
    huge = dataclasses.replace(Fault.oversized(100 * MiB), delay=0.3)
    server = await fault_server(schedule={n: [huge] for n in (1, 2)})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _TWO_HUGE_PAGES,
        server.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out)
    await ended(server)

    assert result["failures"] == [[1, "ResponseTooLargeError"], [2, "ResponseTooLargeError"]]
    first, second = server.hits_for(1)[0], server.hits_for(2)[0]
    assert first.arrived < second.ended and second.arrived < first.ended, "not both in flight"
    assert result["peak"] < 64 * 1024, (
        f"peak RSS {result['peak'] / 1024:.0f} MiB "
        f"({result['after_import'] / 1024:.0f} MiB after the imports)"
    )


# ---------------------------------------------------------------------- hints


RETRIED_STATUSES = [408, 425, 429, 500, 502, 503, 504]


@pytest.mark.parametrize("status", RETRIED_STATUSES)
async def test_a_retryable_status_on_the_first_page_never_says_check_the_url(fault_server, status):
    # the server is overloaded or throttling, not telling us the request is wrong
    server = await fault_server(schedule={1: [Fault.status(status)] * 5})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=fast_retry(attempts=2))

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.HTTPStatusError)
    assert (exc.page, exc.status) == (1, status)
    assert "No page has succeeded yet" not in str(exc)
    assert "check the URL" not in str(exc)


async def test_a_404_on_the_first_page_still_says_check_the_url(fault_server):
    server = await fault_server(schedule={1: [Fault.status(404)]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=fast_retry())

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.HTTPStatusError)
    assert "No page has succeeded yet" in str(exc)
    assert "check the URL" in str(exc)


async def test_a_429_on_the_first_page_without_retries_says_the_server_throttles(fault_server):
    server = await fault_server(schedule={1: [Fault.status(429)]})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), retry=False)

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.HTTPStatusError)
    assert exc.status == 429
    assert "throttl" in str(exc).lower(), str(exc)
    assert "check the URL" not in str(exc)


# ---------------------------------------------------------------------- validate=


def right_page(page) -> bool:
    """The body echoes the page number it was asked for."""
    return page.data["page"] == page.number


async def test_another_pages_body_is_rejected_by_validate_and_fetched_again(fault_server):
    # page 3 is first answered with page 5's body: valid JSON, status 200, wrong page
    server = await fault_server(schedule={3: [Fault.other_page(5)]})
    s = streampage.stream(
        server.url, pages=PageNumber(stop=6), concurrency=2, validate=right_page, retry=fast_retry()
    )

    pages = await collect(s)

    assert numbers(pages) == Counter(range(1, 7))
    assert all(p.data == page_body(p.number) for p in pages)
    assert server.attempts[3] == 2
    assert s.stats.retries == {"invalid": 1}
    assert s.stats.failed == 0


async def test_a_page_validate_keeps_rejecting_fails_with_a_validation_error(fault_server):
    assert issubclass(streampage.ValidationError, streampage.DecodeError)
    server = await fault_server(schedule={2: [Fault.other_page(99)] * 5})
    s = streampage.stream(
        server.url, pages=PageNumber(stop=3), concurrency=1, validate=right_page, retry=fast_retry()
    )

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.ValidationError), repr(exc)
    assert exc.page == 2
    assert exc.attempts == 2  # RetryPolicy().decode_attempts, as for a body that did not decode
    assert "page 2" in str(exc)
    assert "validate= returned False" in str(exc)
    assert server.attempts[2] == 2
    assert s.stats.retries == {"invalid": 1}


async def test_an_exception_in_validate_rejects_the_page_and_names_the_reason(fault_server):
    def has_items(page) -> bool:
        if not page.data["items"]:
            raise ValueError("no items on this page")
        return True

    empty = Fault.raw_body(msgspec.json.encode({"page": 2, "items": []}))
    server = await fault_server(schedule={2: [empty] * 5})
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=3),
        concurrency=1,
        validate=has_items,
        retry=fast_retry(decode_attempts=3),
        on_error="skip",
    )

    pages = await collect(s)

    assert sorted(p.number for p in pages) == [1, 3]
    [failure] = s.failures
    assert failure.page == 2 and failure.attempts == 3
    assert isinstance(failure.error, streampage.ValidationError)
    assert "page 2" in str(failure.error)
    assert "no items on this page" in str(failure.error)
    assert server.attempts[2] == 3
    assert s.stats.retries == {"invalid": 2}
    assert s.stats.failed == 1


async def test_retry_false_rejects_at_once(fault_server):
    server = await fault_server(schedule={1: [Fault.other_page(7)] * 5})
    s = streampage.stream(server.url, pages=PageNumber(stop=1), validate=right_page, retry=False)

    _, exc = await collect_error(s)

    assert isinstance(exc, streampage.ValidationError)
    assert server.attempts[1] == 1


# ---------------------------------------------------------------------- the CLI: --expect


async def cli_run(*args: str) -> tuple[int, str]:
    run = await cli_fetch(*args)
    return run.code, run.err


async def test_cli_expect_retries_a_wrong_body_and_delivers_the_page(fault_server, tmp_path):
    out, stats = tmp_path / "items.jsonl", tmp_path / "stats.json"
    server = await fault_server(schedule={2: [Fault.other_page(3)]})

    code, err = await cli_run(
        server.url,
        "--pages",
        "page",
        "--stop",
        "4",
        "--expect",
        "page=page",
        "-o",
        str(out),
        "--stats-json",
        str(stats),
    )

    assert code == 0, err
    # each page's records are its items, [n]
    assert sorted(json.loads(line) for line in out.read_text().splitlines()) == [1, 2, 3, 4]
    assert server.attempts[2] == 2
    document = json.loads(stats.read_text())
    assert document["failures"] == [] and document["retries"] == {"invalid": 1}


async def test_cli_expect_fails_a_page_that_never_matches(fault_server, tmp_path):
    out, stats = tmp_path / "items.jsonl", tmp_path / "stats.json"
    server = await fault_server(schedule={3: [Fault.other_page(99)] * 5})

    code, err = await cli_run(
        server.url,
        "--pages",
        "page",
        "--stop",
        "4",
        "--expect",
        "page=page",
        "--on-error",
        "skip",
        "-o",
        str(out),
        "--stats-json",
        str(stats),
    )

    assert code == 1, err
    assert "1 page failed:" in err
    assert "  page 3: " in err
    assert sorted(json.loads(line) for line in out.read_text().splitlines()) == [1, 2, 4]
    assert server.attempts[3] == 2  # retried like a body that did not decode, then failed
    document = json.loads(stats.read_text())
    [failure] = document["failures"]
    assert (failure["page"], failure["attempts"], failure["error"]) == (3, 2, "ValidationError")


# ---------------------------------------------------------------------- second reading


async def test_a_malformed_retry_after_is_no_header_not_a_crash(fault_server):
    # "²" is a digit to str.isdigit(), and no number to float(): the page is retried as if
    # no Retry-After were given, and the stream goes on
    server = await fault_server(schedule={1: [Fault.status(503, {"Retry-After": "²"})]})
    s = streampage.stream(server.url, pages=PageNumber(stop=3), retry=fast_retry())

    pages = await collect(s)

    assert sorted(p.number for p in pages) == [1, 2, 3]
    assert server.attempts[1] == 2


async def test_validate_does_not_reject_the_repeat_that_ends_the_data(page_server):
    # pages past the end repeat the last one (json-server 1.x): that is the end, found
    # before validate= could call the repeat another page's body and fetch it forever
    server = await page_server(pages=5, extra=lambda n: {"at": min(n, 5)})
    server.items = lambda n: [{"id": min(n, 5)}] if n >= 1 else []  # type: ignore[method-assign]
    server.body = lambda n: {"at": min(n, 5), "items": server.items(n)}  # type: ignore[method-assign]
    s = streampage.stream(
        server.url,
        pages=PageNumber(),
        validate=lambda p: p.data["at"] == p.number,
        on_error="skip",
        concurrency=4,
    )

    pages = await collect(s)

    assert [p.number for p in pages] == [1, 2, 3, 4, 5]
    assert s.failures == []


def test_an_async_validate_is_refused_at_once():
    async def check(page: Any) -> bool:
        return False

    with pytest.raises(streampage.ConfigurationError, match="plain function"):
        streampage.stream("http://127.0.0.1:1/items", validate=check)


async def test_min_rate_is_timed_from_the_first_byte_of_the_body(fault_server):
    # headers, then a silence shorter than first_byte, then a body at ~2 MB/s: the silence
    # is first_byte's to judge, and the rate is timed from the first body byte (timed from
    # the headers, it would read ~400 KB/s at 0.3 s, under the 500 KB/s asked)
    body = b'{"page": 1, "items": [1]}' + b" " * 200_000
    server = await fault_server(
        schedule={1: [Fault.paced(body, chunk=20_000, interval=0.01, after_headers=0.25)]}
    )
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=1),
        timeout=Timeout(first_byte=0.3, min_rate=500_000),
        retry=False,
    )

    pages = await collect(s)

    assert [p.number for p in pages] == [1]

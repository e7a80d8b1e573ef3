"""`streampage fetch` end to end: a real subprocess against the demo API (in this process, or
`streampage serve-demo` in another), checking outputs, exit codes, secrets and resume."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import cli_fetch as fetch

import streampage
from streampage.cli import main
from streampage.cli._parser import build_parser
from streampage.cli._plan import make_plan
from streampage.demo import serve

HANG = 30.0


@contextlib.asynccontextmanager
async def demo_api(**options: Any) -> AsyncIterator[str]:
    """The demo API in this process (its event loop is the test's); yields its URL."""
    options.setdefault("items", 300)
    options.setdefault("latency", 0)
    options.setdefault("per_page", 10)
    runner, url = await serve(**options)
    try:
        yield url
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def serve_demo(*flags: str) -> Iterator[str]:
    """`streampage serve-demo` in its own process; yields its URL (its first line)."""
    with subprocess.Popen(
        [sys.executable, "-m", "streampage", "serve-demo", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), proc.poll()
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def jsonl_ids(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def sqlite_ids(path: Path, table: str = "items") -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(f"SELECT json_extract(data, '$.id') FROM {table}").fetchall()
    return [row[0] for row in rows]


# ---------------------------------------------------------------------- outputs


async def test_jsonl_output_is_complete_exactly_once_with_stats_json(tmp_path: Path) -> None:
    out, stats = tmp_path / "items.jsonl", tmp_path / "stats.json"
    async with demo_api() as url:
        run = await fetch(url, "-o", str(out), "--stats-json", str(stats), "--batch", "25")
    assert run.code == 0, run
    assert sorted(jsonl_ids(out)) == list(range(1, 301))
    assert run.out == ""  # records went to the file; progress and summary go to stderr
    assert "records: the items of 'items'" in run.err  # --records auto says what it chose
    assert "result               complete" in run.err
    doc = json.loads(stats.read_text())
    assert doc["exit_code"] == 0 and doc["complete"] is True and doc["error"] is None
    assert (doc["pages"], doc["records"], doc["committed_pages"]) == (30, 300, 30)
    assert doc["failures"] == [] and doc["failed"] == 0 and doc["requests"] == 30
    assert doc["output"] == f"{out} (JSON Lines)"


@pytest.mark.parametrize(
    ("style", "says"),
    [
        ("page", "result               complete, verified: 300 records as header X-Total-Count"),
        ("cursor", "result               complete as far as can be told (not verifiable"),
    ],
)
async def test_the_result_says_what_complete_was_checked_against(
    tmp_path: Path, style: str, says: str
) -> None:
    # a total in the responses verifies the run; a cursor walk with none cannot be verified,
    # and the summary says so rather than claim more than it knows
    out, stats = tmp_path / "items.jsonl", tmp_path / "stats.json"
    async with demo_api(style=style) as url:
        run = await fetch(url, "-o", str(out), "--stats-json", str(stats))
    assert run.code == 0, run
    assert says in run.err
    document = json.loads(stats.read_text())
    assert document["completeness"]["status"] == (
        "verified" if style == "page" else "not verifiable"
    )


async def test_a_run_short_of_its_total_exits_1_and_says_expected_against_delivered(
    tmp_path: Path,
) -> None:
    # --pages link on a page-number API: no Link header, one page; X-Total-Count says 300
    out = tmp_path / "items.jsonl"
    async with demo_api() as url:
        run = await fetch(url, "--pages", "link", "-o", str(out))
    assert run.code == 1, run
    assert "delivered 10 records, but the server reported 300 (header X-Total-Count)" in run.err
    assert "result               incomplete" in run.err
    assert run.err.count("delivered 10 records") == 1  # said once, not logged and raised


async def test_sqlite_output_with_a_table_and_stats_json_on_stdout(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    async with demo_api(style="offset") as url:
        run = await fetch(
            url,
            "--pages",
            "offset",
            "--size",
            "20",
            "--total-items",
            "header:X-Total-Count",
            "-o",
            f"sqlite:///{db}?table=things",
            "--stats-json",
            "-",
        )
    assert run.code == 0, run
    assert sorted(sqlite_ids(db, "things")) == list(range(1, 301))
    doc = json.loads(run.out)
    assert (doc["pages"], doc["records"], doc["committed_pages"]) == (15, 300, 15)


async def test_stdout_output_is_json_lines_and_nothing_else() -> None:
    async with demo_api(style="link") as url:
        run = await fetch(url, "-c", "4")
    assert run.code == 0, run
    ids = [json.loads(line)["id"] for line in run.out.splitlines()]
    assert sorted(ids) == list(range(1, 301))
    assert "--pages auto chose --pages link" in run.err  # the auto choice, as options
    assert "output               stdout" in run.err


async def test_whole_pages_as_records_and_plain_progress_lines() -> None:
    async with demo_api() as url:
        run = await fetch(
            url, "--pages", "page", "--stop", "5", "--size", "20", "--records", ".", "-c", "2"
        )
    assert run.code == 0, run
    pages = [json.loads(line) for line in run.out.splitlines()]
    assert sorted(p["page"] for p in pages) == [1, 2, 3, 4, 5]
    assert all(len(p["items"]) == 20 for p in pages)
    assert "5/5 pages, 5 records" in run.err  # the total is known: plain lines show it


async def test_a_total_named_in_the_body_gives_the_progress_its_total() -> None:
    async with demo_api() as url:
        run = await fetch(url, "--pages", "page", "--size", "20", "--total-pages", "total_pages")
    assert run.code == 0, run
    assert "15/15 pages, 300 records" in run.err


async def test_an_option_of_one_style_implies_it() -> None:
    async with demo_api(items=300, per_page=10) as url:
        run = await fetch(url, "--total-pages", "total_pages", "--records", "items", "-o", "-")
    assert run.code == 0, run
    assert len(run.out.splitlines()) == 300
    assert "30/30 pages" in run.err
    assert "--pages auto" not in run.err  # nothing was guessed


async def test_user_sends_basic_credentials_and_never_shows_them() -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Basic YWxpY2U6czNjcjN0LXB3":
            return web.Response(status=401, text="who are you?")
        return web.json_response({"items": [{"id": 1}, {"id": 2}]})

    app = web.Application()
    app.router.add_get("/items", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/items"
    try:
        good = await fetch(url, "-u", "alice:s3cr3t-pw", "-v", "-o", "-")
        bad = await fetch(url, "-u", "alice:wrong-pw", "-v", "-o", "-")
    finally:
        await runner.cleanup()
    assert good.code == 0, good
    assert [json.loads(line)["id"] for line in good.out.splitlines()] == [1, 2]
    assert bad.code == 1 and "401" in bad.err
    for run in (good, bad):
        for secret in ("s3cr3t-pw", "YWxpY2U6czNjcjN0LXB3", "wrong-pw", "YWxpY2U6d3JvbmctcHc="):
            assert secret not in run.err + run.out


async def test_the_total_pages_auto_found_gives_the_progress_its_total() -> None:
    async with demo_api(items=8000, per_page=10) as url:  # 800 pages, total_pages in the body
        run = await fetch(url, "--records", "items", "-o", "-")
    assert run.code == 0, run
    assert "--pages auto chose --pages page --total-pages total_pages" in run.err
    assert "800/800 pages, 8,000 records" in run.err


@pytest.mark.parametrize(
    ("style", "options"),
    [
        ("page", []),
        ("page", ["--pages", "page", "--size", "7", "--total-items", "total_items"]),
        ("page", ["--pages", "page", "--page-param", "page", "--size-param", "per_page"]),
        ("offset", ["--pages", "offset", "--limit", "30"]),  # ends at the short/empty page
        ("cursor", []),
        ("cursor", ["--pages", "cursor", "--cursor-field", "next_cursor"]),
        ("next-url", ["--pages", "next-url", "--next-field", "next", "--ordered"]),
        ("link", ["--pages", "link", "--no-fan-out"]),
    ],
)
async def test_every_demo_style_with_auto_or_a_named_paginator(
    tmp_path: Path, style: str, options: list[str]
) -> None:
    out = tmp_path / "items.jsonl.gz"
    records = "auto" if style == "link" else "items"  # link: the body is the list
    async with demo_api(style=style, items=95) as url:
        run = await fetch(url, *options, "--records", records, "-o", str(out))
    assert run.code == 0, run
    ids = [json.loads(line)["id"] for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert sorted(ids) == list(range(1, 96))


async def test_rate_limits_the_requests(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    async with demo_api() as url:
        run = await fetch(
            url, "--pages", "page", "--stop", "10", "--rate", "20/s", "--stats-json", str(stats)
        )
    assert run.code == 0, run
    doc = json.loads(stats.read_text())
    assert doc["pages"] == 10
    assert doc["elapsed_seconds"] >= 0.4  # 10 requests at 20/s, no burst: >= 9 intervals


# ---------------------------------------------------------------------- option wiring


def plan_of(*args: str) -> Any:
    parsed = build_parser().parse_args(["fetch", "https://api.example.com/items", *args])
    return make_plan(parsed, print)


def test_options_become_the_stream_arguments(tmp_path: Path) -> None:
    plan = plan_of(
        *("-c", "7", "--rate", "600/min", "--burst", "3", "--retries", "2", "--adaptive"),
        *("--timeout", "5", "--connect-timeout", "2", "--read-timeout", "1.5", "--insecure"),
        *("--max-page-bytes", "512k", "--on-error", "skip", "--ordered", "--max-pages", "9"),
        *("-H", "Authorization: Bearer x", "-H", "X-Trace: 1", "--secret-header", "X-Trace"),
        *("-p", "state=all", "-p", "per_page=100", "-o", str(tmp_path / "x.ndjson")),
    )
    o = plan.options
    assert (o["concurrency"], o["ordered"], o["adaptive"], o["max_pages"]) == (7, True, True, 9)
    assert o["rate"] == streampage.RateLimit(10.0, burst=3)
    assert o["retry"].attempts == 2
    assert o["timeout"] == streampage.Timeout(connect=2, first_byte=1.5, attempt=5)
    assert (o["verify_tls"], o["max_page_bytes"], o["on_error"]) == (False, 512 * 1024, "skip")
    assert o["headers"] == {"Authorization": "Bearer x", "X-Trace": "1"}
    assert o["secret_headers"] == ("X-Trace",)
    assert o["params"] == {"state": "all", "per_page": "100"}
    assert isinstance(plan.target.sink, streampage.sinks.JSONLines)
    assert plan.total == 9  # --max-pages: the bar has a total
    assert plan.paginator is None  # --pages auto


def test_paginator_options_build_the_named_paginator() -> None:
    page = plan_of("--pages", "page", "--start", "0", "--stop", "9", "--page-param", "p")
    assert page.paginator == streampage.PageNumber(start=0, stop=9, param="p")
    assert page.total is None  # the stream tells it (TotalDiscovered) with its first page
    sized = plan_of(
        *("--pages", "page", "--size", "50", "--size-param", "limit", "--records", "data.items"),
        *("--total-items", "header:X-Total-Count", "--has-more", "more"),
    )
    assert sized.paginator == streampage.PageNumber(
        size=50,
        size_param="limit",
        total_items=streampage.Header("X-Total-Count"),
        has_more="more",
        items="data.items",  # --records also tells the paginator what an empty page is
    )
    offset = plan_of("--pages", "offset", "--limit", "20", "--start", "40", "--stop", "100")
    assert offset.paginator == streampage.Offset(limit=20, start=40, stop=100)
    cursor = plan_of(
        *("--pages", "cursor", "--cursor-field", "meta.next", "--cursor-param", "c"),
        *("--initial-cursor", "abc"),
    )
    assert cursor.paginator == streampage.Cursor(field="meta.next", param="c", initial="abc")
    nxt = plan_of("--pages", "next-url", "--next-field", "links.next", "--cross-origin")
    assert nxt.paginator == streampage.NextURL(field="links.next", cross_origin=True)
    link = plan_of("--pages", "link", "--no-fan-out")
    assert link.paginator == streampage.LinkHeader(fan_out=False)


def test_output_targets_pick_their_sink(tmp_path: Path) -> None:
    sinks = streampage.sinks
    sqlite = plan_of("-o", f"sqlite:///{tmp_path}/a.db?table=things").target.sink
    assert isinstance(sqlite, sinks.SQLite) and sqlite.table == "things"
    assert sqlite.path == tmp_path / "a.db"
    relative = plan_of("-o", "sqlite:///a.db").target.sink
    assert str(relative.path) == "a.db" and relative.table == "items"
    assert isinstance(plan_of("-o", str(tmp_path / "a.jsonl.gz")).target.sink, sinks.JSONLines)
    assert plan_of("-o", "-").target.sink is None
    pg = plan_of("-o", "postgresql://u:pw@db.example/x?sslmode=require&table=s.t").target
    assert (pg.sink.dsn, pg.sink.schema, pg.sink.table) == (
        "postgresql://u:pw@db.example/x?sslmode=require",
        "s",
        "t",
    )
    assert "pw" not in pg.shown
    pytest.importorskip("pyarrow")
    assert isinstance(plan_of("-o", str(tmp_path / "a.parquet")).target.sink, sinks.Parquet)


# ---------------------------------------------------------------------- secrets


async def test_header_and_url_secrets_never_appear_in_any_output(tmp_path: Path) -> None:
    token, key = "s3cr3t-t0ken-value", "k3y-in-the-url"
    stats = tmp_path / "stats.json"
    async with demo_api(token=token) as url:
        ok = await fetch(
            f"{url}?api_key={key}",
            "-H",
            f"Authorization: Bearer {token}",
            "-v",
            "--stats-json",
            str(stats),
            "-o",
            str(tmp_path / "ok.jsonl"),
        )
        assert ok.code == 0, ok
        denied = await fetch(
            url, "-H", "Authorization: Bearer wr0ng-t0ken-value", "-p", f"api_key={key}"
        )
    assert denied.code == 1
    assert "HTTP 401" in denied.err and "streampage: error:" in denied.err
    for text in (ok.out, ok.err, stats.read_text(), denied.out, denied.err):
        assert token not in text and key not in text and "wr0ng-t0ken-value" not in text
    assert "api_key=REDACTED" in ok.err


async def test_a_secret_echoed_by_the_server_is_scrubbed_from_errors(tmp_path: Path) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=403, text=f"bad credentials: {request.headers['X-Api-Key']}")

    app = web.Application()
    app.router.add_get("/items", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stats = tmp_path / "stats.json"
    try:
        run = await fetch(
            f"http://127.0.0.1:{port}/items",
            "-H",
            "X-Api-Key: echoed-secret-42",
            "--on-error",
            "skip",
            "--stats-json",
            str(stats),
        )
    finally:
        await runner.cleanup()
    assert run.code == 1
    assert "page 1: HTTP 403" in run.err
    assert "echoed-secret-42" not in run.err + stats.read_text()
    assert "bad credentials: REDACTED" in stats.read_text()


# ---------------------------------------------------------------------- exit codes


def usage(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `fetch ARGS` in this process; assert exit code 2 and one line on stderr."""
    try:
        code = main(["fetch", *args])
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["not-a-url"], "not an http(s) URL"),
        (["ftp://example.com/items"], "not an http(s) URL"),
        (["http://127.0.0.1:9/x", "-o", "items.csv"], "cannot tell what output"),
        (["http://127.0.0.1:9/x", "-o", "mysql://u:pw0rd@h/db"], "u:REDACTED@h"),
        (["http://127.0.0.1:9/x", "-o", "sqlite:///x.db?table=no-dash"], "plain identifier"),
        (["http://127.0.0.1:9/x", "-o", "sqlite:///x.db?tabel=t"], "table is the only"),
        (["http://127.0.0.1:9/x", "--resume"], "--resume needs an output target"),
        (["http://127.0.0.1:9/x", "--pages", "page", "--cursor-field", "c"], "--pages cursor"),
        (["http://127.0.0.1:9/x", "--total-items", "n"], "fits --pages offset or --pages page"),
        (["http://127.0.0.1:9/x", "--total-pages", "n", "--cursor-field", "c"], "different"),
        (["http://127.0.0.1:9/x", "-u", "alice"], "written user:password"),
        (["http://127.0.0.1:9/x", "-u", "a:b", "-H", "Authorization: x"], "-u sends one"),
        (["http://127.0.0.1:9/x", "--pages", "link", "--stop", "3"], "applies to --pages"),
        (["http://127.0.0.1:9/x", "--pages", "page", "--start", "5", "--stop", "2"], "before"),
        (["http://127.0.0.1:9/x", "--burst", "3"], "--burst needs --rate"),
        (["http://127.0.0.1:9/x", "--records", "a..b"], "not a dotted path"),
        (["http://127.0.0.1:9/x", "-c", "0"], "must be >= 1"),
        (["http://127.0.0.1:9/x", "--rate", "fast"], "is not a rate"),
        (["http://127.0.0.1:9/x", "-H", "no colon here"], "'Name: value'"),
        (["http://127.0.0.1:9/x", "--on-error", "ignore"], "invalid choice"),
        (["http://127.0.0.1:9/x", "--bogus"], "unrecognized arguments"),
        ([], "required: url"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with contextlib.chdir(tmp_path):
        assert says in usage(args, capsys)


def test_output_into_a_directory_is_bad_usage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert "is a directory" in usage(["http://127.0.0.1:9/x", "-o", str(tmp_path)], capsys)
    folder = tmp_path / "x.jsonl"
    folder.mkdir()
    assert "is a directory" in usage(["http://127.0.0.1:9/x", "-o", str(folder)], capsys)


def test_a_missing_output_folder_is_bad_usage_unless_asked_to_create_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "no" / "such" / "x.jsonl"
    said = usage(["http://127.0.0.1:9/x", "-o", str(target)], capsys)
    assert f"the folder {target.parent} does not exist" in said and "--create-dirs" in said
    assert not target.parent.exists()  # nothing was created behind the user's back


async def test_create_dirs_makes_the_output_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "items.jsonl"
    async with demo_api() as url:
        run = await fetch(url, "-o", str(target), "--create-dirs", "-q")
    assert run.code == 0, run
    assert sorted(jsonl_ids(target)) == list(range(1, 301))


def test_credentials_in_the_url_and_an_authorization_header_is_bad_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    said = usage(
        ["http://me:pw@127.0.0.1:9/x", "-H", "Authorization: Bearer t0ken", "-o", "-"], capsys
    )
    assert "user:password@" in said and "Authorization" in said
    assert "t0ken" not in said and ":pw@" not in said


def test_an_unreachable_host_is_one_line_and_exit_1(
    dead_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fetch", dead_url, "--retries", "2", "-q"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("streampage: error: page 1: request to http://127.0.0.1:")
    assert "Cannot connect" in err


async def test_an_existing_output_without_resume_is_bad_usage(tmp_path: Path) -> None:
    out = tmp_path / "items.jsonl"
    async with demo_api() as url:
        first = await fetch(url, "-o", str(out), "-q")
        again = await fetch(url, "-o", str(out), "-q")
        resumed = await fetch(url, "-o", str(out), "--resume", "--stats-json", "-")
    assert first.code == 0, first
    assert again.code == 2 and "pass --resume" in again.err
    assert resumed.code == 0, resumed
    # all committed: only the last page again (for records added to it), none of it new
    doc = json.loads(resumed.out)
    assert doc["pages"] <= 1 and doc["records"] == 0
    assert sorted(jsonl_ids(out)) == list(range(1, 301))


def test_failed_pages_are_listed_and_exit_1(tmp_path: Path) -> None:
    out, stats = tmp_path / "items.jsonl", tmp_path / "stats.json"
    flags = ["--items", "200", "--per-page", "10", "--fail-page", "3", "--fail-page", "7"]
    with serve_demo(*flags, "--latency", "0") as url:
        run = subprocess.run(
            [sys.executable, "-m", "streampage", "fetch", f"{url}?token=hidden-value"]
            + ["--on-error", "skip", "--retries", "2", "-o", str(out), "--stats-json", str(stats)],
            capture_output=True,
            text=True,
            timeout=HANG,
        )
    assert run.returncode == 1, run.stderr
    assert "streampage: 2 pages failed:" in run.stderr
    assert "page 3: HTTP 500 after 2 attempt(s)" in run.stderr
    assert "page 7: HTTP 500 after 2 attempt(s)" in run.stderr
    assert "token=REDACTED&page=7" in run.stderr and "hidden-value" not in run.stderr
    assert "result               incomplete" in run.stderr
    assert "--resume to fetch the rest" in run.stderr
    failed = set(range(21, 31)) | set(range(61, 71))
    assert sorted(jsonl_ids(out)) == sorted(set(range(1, 201)) - failed)
    doc = json.loads(stats.read_text())
    assert doc["exit_code"] == 1 and doc["failed"] == 2
    assert [(f["page"], f["status"], f["attempts"]) for f in doc["failures"]] == [
        (3, 500, 2),
        (7, 500, 2),
    ]
    assert doc["retries"] == {"status 500": 2}


async def test_skipped_pages_are_fetched_by_resume_once_the_server_recovers(
    tmp_path: Path,
) -> None:
    failing = {4}
    requested: list[int] = []

    async def pages(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        requested.append(page)
        if page in failing:
            return web.json_response({"error": "down"}, status=500)
        items = [{"id": i} for i in range((page - 1) * 10 + 1, page * 10 + 1)] if page <= 6 else []
        return web.json_response({"total_pages": 6, "items": items})

    app = web.Application()
    app.router.add_get("/items", pages)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/items"
    out = tmp_path / "items.jsonl"
    try:
        first = await fetch(url, "--on-error", "skip", "--retries", "1", "-o", str(out))
        assert first.code == 1 and "page 4: HTTP 500" in first.err
        failing.clear()
        requested.clear()
        second = await fetch(url, "--resume", "-o", str(out))
    finally:
        await runner.cleanup()
    assert second.code == 0, second
    assert sorted(requested) == [1, 4]  # page 1 again for the total, then the skipped page
    assert sorted(jsonl_ids(out)) == list(range(1, 61))


# ---------------------------------------------------------------------- resume after a crash


@pytest.mark.parametrize("target", ["jsonl", "sqlite"])
async def test_resume_after_sigkill_delivers_every_record_exactly_once(
    tmp_path: Path, target: str
) -> None:
    path = tmp_path / ("items.jsonl" if target == "jsonl" else "items.db")
    output = str(path) if target == "jsonl" else f"sqlite:///{path}"

    def committed() -> int:
        """Records the first run has committed so far (read as another process would)."""
        if target == "jsonl":
            journal = path.with_name(f".{path.name}.streampage") / "journal"
            return len(journal.read_bytes().splitlines()) if journal.exists() else 0
        if not path.exists():
            return 0
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=1)) as db:
                return int(db.execute("SELECT count(*) FROM streampage_checkpoints").fetchone()[0])
        except sqlite3.OperationalError:  # the tables are not created yet
            return 0

    # 200 pages at 20 ms, 4 at a time: a run takes a second; it is killed a few commits in
    async with demo_api(items=2000, latency=0.02) as url:
        args = [url, "-o", output, "-c", "4", "--batch", "30", "--records", "items"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streampage",
            "fetch",
            *args,
            "-q",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(int(HANG / 0.005)):  # poll: another process writes the output
            if committed() >= (3 if target == "jsonl" else 1):
                break
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), HANG) == -signal.SIGKILL  # died mid-way
        before = jsonl_ids(path) if target == "jsonl" else sqlite_ids(path)
        assert 0 < len(before) < 2000

        resumed = await fetch(*args, "-c", "16", "--resume", "--stats-json", "-")
    assert resumed.code == 0, resumed
    ids = jsonl_ids(path) if target == "jsonl" else sqlite_ids(path)
    assert len(ids) == 2000 and set(ids) == set(range(1, 2001))  # each record exactly once
    assert json.loads(resumed.out)["pages"] < 200  # committed pages were not delivered again


async def test_an_interrupted_run_exits_130_and_says_how_to_go_on(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    journal = path.with_name(f".{path.name}.streampage") / "journal"
    async with demo_api(items=2000, latency=0.02) as url:
        args = [url, "-o", str(path), "-c", "4", "--batch", "30"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            # SIGINT as in a terminal, even when the test run was started in the background
            # (a shell starts background jobs with SIGINT ignored, and children inherit it)
            "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
            " runpy.run_module('streampage', run_name='__main__')",
            "fetch",
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(int(HANG / 0.005)):  # poll: another process writes the journal
            if journal.exists() and journal.stat().st_size:
                break
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), HANG)
        assert proc.returncode == 130, err
        assert b"streampage: interrupted" in err and b"Traceback" not in err
        assert b"result               interrupted" in err
        assert b"run the command again with --resume" in err
        resumed = await fetch(*args, "--resume", "-c", "16")
    assert resumed.code == 0, resumed
    assert sorted(jsonl_ids(path)) == list(range(1, 2001))


# ---------------------------------------------------------------------- progress bar


def read_all(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(OSError):  # EIO once every writer has closed the terminal
        while data := os.read(fd, 65536):
            chunks.append(data)
    return b"".join(chunks)


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
async def test_a_terminal_gets_a_live_bar_with_retries_and_failures(tmp_path: Path) -> None:
    pytest.importorskip("rich")
    master, slave = pty.openpty()
    out = tmp_path / "items.jsonl"
    async with demo_api(items=400, latency=0.01, fault_rate=0.1, seed=7) as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streampage",
            "fetch",
            url,
            "--pages",
            "page",
            "--stop",
            "40",
            "-c",
            "4",
            "-o",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=slave,
            env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
        )
        os.close(slave)
        # read while the child writes, so that it never blocks on a full terminal buffer
        reading = asyncio.create_task(asyncio.to_thread(read_all, master))
        code = await asyncio.wait_for(proc.wait(), HANG)
        screen = (await asyncio.wait_for(reading, HANG)).decode(errors="replace")
    os.close(master)
    assert code == 0, screen
    assert "40/40" in screen and "records" in screen and "pages/s" in screen
    assert "retries" in screen and "failed" in screen
    assert "━" in screen  # the bar itself
    assert "┃" in screen or "│" in screen  # the summary table

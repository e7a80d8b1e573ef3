"""The command line: `streampage demo` end to end, and `serve-demo` as a real server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest

from streampage.cli import main


def test_demo_streams_every_record_exactly_once() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streampage", "demo", "--items", "3000", "--per-page", "20"]
        + ["--latency", "0.001", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3,000 (0 missing, 0 duplicated)" in proc.stdout
    assert "150/150 pages" in proc.stdout  # plain progress lines when not a terminal
    assert "time to first page" in proc.stdout and "peak memory" in proc.stdout


def test_ordered_demo_also_complete() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streampage", "demo", "--items", "500", "--ordered"]
        + ["--latency", "0", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "500 (0 missing, 0 duplicated)" in proc.stdout


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve-demo" in capsys.readouterr().out


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--concurrency", "many"])
    assert exc.value.code == 2


@pytest.fixture
def demo_server() -> Iterator[str]:
    with subprocess.Popen(
        [sys.executable, "-m", "streampage", "serve-demo", "--port", "0", "--items", "30"]
        + ["--latency", "0"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM is a clean shutdown


async def test_serve_demo_answers_pages_and_empty_past_the_end(demo_server: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(demo_server, params={"page": "2", "per_page": "10"}) as resp:
            body = await resp.json()
            assert resp.headers["X-Total-Count"] == "30"
        assert [item["id"] for item in body["items"]] == list(range(11, 21))
        assert body["total_pages"] == 3
        async with session.get(demo_server, params={"page": "4", "per_page": "10"}) as resp:
            assert (await resp.json())["items"] == []
        async with session.get(demo_server, params={"page": "x"}) as resp:
            assert resp.status == 400


def test_demo_with_faults_retries_and_still_completes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streampage", "demo", "--items", "1000", "--fault-rate", "0.1"]
        + ["--seed", "1", "--latency", "0", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1,000 (0 missing, 0 duplicated)" in proc.stdout
    assert "status 503" in proc.stdout  # the retries row names the injected faults
    assert "streampage fetch --help" in proc.stdout  # where to go next


@pytest.fixture
def flagged_server() -> Iterator[str]:
    with subprocess.Popen(
        [sys.executable, "-m", "streampage", "serve-demo", "--port", "0", "--items", "30"]
        + ["--latency", "0", "--style", "link", "--per-page", "10", "--token", "t0k3n"]
        + ["--fail-page", "2", "--rate-limit", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
        proc.terminate()
        assert proc.wait(timeout=10) == 0


async def test_serve_demo_flags_style_token_and_failing_pages(flagged_server: str) -> None:
    auth = {"Authorization": "Bearer t0k3n"}
    async with aiohttp.ClientSession() as session:
        async with session.get(flagged_server) as resp:
            assert resp.status == 401  # --token
        async with session.get(flagged_server, headers=auth) as resp:
            assert resp.status == 200
            assert [item["id"] for item in await resp.json()] == list(range(1, 11))  # --style link
            links = resp.headers["Link"]
            assert 'page=2&per_page=10>; rel="next"' in links
            assert 'page=3&per_page=10>; rel="last"' in links
            assert resp.headers["RateLimit-Limit"] == "1000"  # --rate-limit
        async with session.get(flagged_server, params={"page": "2"}, headers=auth) as resp:
            assert resp.status == 500  # --fail-page 2


def test_serve_demo_bad_flags_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streampage", "serve-demo", "--per-page", "500"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("streampage: error: --per-page 500")

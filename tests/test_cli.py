"""The command line: `streampage demo` end to end, `serve-demo` as a real server, and what
each command imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest

import streampage
from streampage._demo_styles import DEFAULT_ITEMS, DEFAULT_PER_PAGE, STYLES
from streampage.cli import main
from streampage.cli._parser import build_parser


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


# ---------------------------------------------------------------------- what a command imports

#: modules `--version` and `--help` have no use for (aiohttp and asyncio alone are ~0.2 s)
HEAVY = (
    "aiohttp",
    "aiohttp.web",
    "asyncio",
    "yarl",
    "msgspec",
    "rich",
    "streampage.demo",
    "streampage._stream",
    "streampage._http",
    "streampage._engine",
)


def loaded_after(*argv: str) -> set[str]:
    """The modules of HEAVY in sys.modules after main(argv) in a fresh interpreter."""
    code = (
        "import sys\n"
        "from streampage.cli import main\n"
        "try:\n"
        f"    main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(proc.stdout.splitlines()[-1].split())


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["--help"], ["fetch", "--help"], ["demo", "--help"], ["fetch"]],
)
def test_version_and_help_import_neither_aiohttp_nor_the_demo(argv: list[str]) -> None:
    assert loaded_after(*argv) == set()


def test_version_prints_the_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streampage", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"streampage {streampage.__version__}"


def test_fetch_loads_no_demo_server() -> None:
    # a run that stops at once (nothing listens on port 9), past the imports of a fetch
    loaded = loaded_after("fetch", "http://127.0.0.1:9/items", "--retries", "1", "-q")
    assert "aiohttp" in loaded and "streampage._stream" in loaded
    assert not {"aiohttp.web", "streampage.demo", "rich"} & loaded


def test_the_parser_shows_the_library_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """The parser writes the library's defaults out (importing them would load asyncio and
    aiohttp for --help): they must stay the library's."""
    from streampage import demo
    from streampage._stream import DEFAULT_MAX_PAGE_BYTES

    retry, timeout = streampage.RetryPolicy(), streampage.Timeout()
    args = build_parser().parse_args(["fetch", "https://api.example.com/items"])
    assert args.attempts == retry.attempts
    assert args.read_timeout == timeout.first_byte
    assert args.min_rate == int(timeout.min_rate or 0)
    assert args.max_page_bytes == DEFAULT_MAX_PAGE_BYTES
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fetch", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"(default {retry.attempts}, waits from {retry.backoff:g} s doubling;" in shown
    assert (demo.DEFAULT_ITEMS, demo.DEFAULT_PER_PAGE, demo.STYLES) == (
        DEFAULT_ITEMS,
        DEFAULT_PER_PAGE,
        STYLES,
    )

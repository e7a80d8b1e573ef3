"""The argument parser of ``streampage`` and its option types. It imports nothing of the
library but its version and the demo API's styles: ``--version`` and ``--help`` stay fast."""

from __future__ import annotations

import argparse
import base64
import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from .. import __version__
from .._demo_styles import DEFAULT_ITEMS, DEFAULT_PER_PAGE, STYLES
from . import PROG

__all__ = ["build_parser"]

# The library's defaults the options show, written out so that the parser does not import
# the library (asyncio, aiohttp); tests/test_cli.py holds them equal to the library's.
#: RetryPolicy().attempts and RetryPolicy().backoff
ATTEMPTS, BACKOFF = 10, 0.02
#: Timeout().first_byte and Timeout().min_rate
READ_TIMEOUT, MIN_RATE = 10.0, 1024
#: streampage._stream.DEFAULT_MAX_PAGE_BYTES
MAX_PAGE_BYTES = 8 * 1024 * 1024


# ---------------------------------------------------------------------- argument types


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be >= {minimum}")
        return value

    parse.__name__ = "whole number"
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds > 0")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def _fraction(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_PER |= {"h": 3600.0, "hour": 3600.0}


def _rate(text: str) -> float:
    """``20``, ``20/s``, ``600/min``, ``1000/h``: requests a second."""
    count, _, unit = text.partition("/")
    per = _PER.get(unit.strip().lower() or "s")
    try:
        value = float(count)
    except ValueError:
        value = -1.0
    if per is None or not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate: write requests a second (20 or 20/s), a minute "
            "(600/min) or an hour (1000/h), > 0"
        )
    return value / per


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def _bytes(text: str) -> int:
    """``1048576``, ``512k``, ``32M``, ``1GiB`` (binary multiples)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write 1048576, 512k or 32M")
    return int(float(match[1]) * 1024 ** " kmgt".index(match[2].lower() or " "))


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _expectation(text: str) -> tuple[str, str]:
    field, sep, param = text.partition("=")
    if not sep or not field.strip() or not param.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: write FIELD=PARAM, e.g. page=page (the body's page field equals "
            "the request's ?page=)"
        )
    return field.strip(), param.strip()


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _TOKEN.fullmatch(name):
        # never echo the text: it may hold a credential
        raise argparse.ArgumentTypeError("a header is written 'Name: value'")
    return name, value.strip()


def _user(text: str) -> str:
    """``-u user:password`` (or ``-u user`` with ``--password-env``)."""
    user, _, _ = text.partition(":")
    if not user:
        # never echo the text: it holds a password
        raise argparse.ArgumentTypeError("credentials are written user:password")
    return text


class _UserAction(argparse.Action):
    """``-u user:password``: the Authorization header of HTTP Basic (RFC 7617), among the
    -H headers; ``-u user`` alone waits for ``--password-env`` (checked by the plan)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        namespace.user = values
        user, sep, password = str(values).partition(":")
        if sep:
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            namespace.headers = [*namespace.headers, ("Authorization", f"Basic {token}")]


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("a query parameter is written key=value")
    return key, value


# ---------------------------------------------------------------------- the parser

_FETCH_EXAMPLES = """\
output targets (-o):
  items.jsonl, items.jsonl.gz, items.ndjson    JSON Lines, one record a line (gzip for .gz)
  sqlite:///items.db?table=items                SQLite (sqlite:////abs/path.db for an absolute
                                                path; the table defaults to "items")
  postgresql://user:pw@host/db?table=items      PostgreSQL (needs streampage[postgres])
  items.parquet                                 Parquet (needs streampage[parquet])
  - (or no -o)                                  JSON Lines on stdout (no checkpoint, no --resume)
  Files and databases are written exactly once: each batch is committed with a checkpoint,
  and --resume after a crash or an interruption goes on where the last run stopped.

paginators (--pages):
  auto      the default: look at the first response and pick (Link header, next URL or
            cursor field, total_pages, has_more, or page numbers until an empty page)
  page      ?page=N           --page-param --start --stop --size --size-param --total-pages
                              --total-items --has-more
  offset    ?offset=O&limit=L --page-param --start --stop --size/--limit --size-param
                              --total-items --has-more
  cursor    cursor in the body, sent back as a parameter: --cursor-field --cursor-param
                              --initial-cursor
  next-url  next URL in the body: --next-field --cross-origin
  link      Link: <...>; rel="next" headers: --no-fan-out --cross-origin
  --max-pages caps every style. FIELD is a dotted path into the body (meta.total).

exit codes: 0 every page fetched; 1 some pages failed (listed) or the run stopped on an
error; 2 bad usage; 130 interrupted (committed pages stay: run again with --resume).

examples:
  streampage serve-demo --port 8080 &
  streampage fetch http://127.0.0.1:8080/items -o items.jsonl
  streampage fetch http://127.0.0.1:8080/items --pages page --size 100 \\
      --total-pages total_pages --records items -o 'sqlite:///demo.db?table=items'
  streampage fetch https://api.github.com/repos/python/cpython/issues --pages link \\
      -H "Authorization: Bearer $GITHUB_TOKEN" -p state=all -p per_page=100 --rate 10
  streampage fetch https://api.example.com/orders --incremental updated_at \\
      --since-param updated_since -o 'sqlite:///orders.db?table=orders'   # nightly: what changed
"""

_PAGINATORS = ("auto", "page", "offset", "cursor", "next-url", "link")


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors (not the whole usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Fetch paginated HTTP APIs concurrently, as a stream.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _fetch_parser(sub)

    demo = sub.add_parser(
        "demo",
        help="run the demo API and stream every page of it (what `make demo` runs)",
        description="Start the demo API in a subprocess and stream every page of it, "
        "checking that each record arrives exactly once.",
    )
    demo.add_argument(
        "--items", type=_whole(0), default=DEFAULT_ITEMS, metavar="N", help="records in the API"
    )
    demo.add_argument(
        "--per-page", type=_whole(1), default=DEFAULT_PER_PAGE, metavar="N", help="records a page"
    )
    demo.add_argument(
        "--latency", type=_non_negative, default=0.005, metavar="S", help="server delay (s)"
    )
    demo.add_argument(
        "--fault-rate",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction of requests the server answers with 503 (retried)",
    )
    demo.add_argument("--seed", type=int, default=None, metavar="N", help="seed of the faults")
    demo.add_argument("-c", "--concurrency", type=_whole(1), default=50, metavar="N")
    demo.add_argument("--ordered", action="store_true", help="yield pages in page order")
    demo.add_argument("--no-progress", action="store_true", help="plain lines, no bar")

    serve_demo = sub.add_parser(
        "serve-demo",
        help="run the demo API until interrupted",
        description="Run the demo API until interrupted; the first line of output is its "
        "URL. Every paginator and option of `streampage fetch` can be tried against it.",
    )
    serve_demo.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    serve_demo.add_argument(
        "--port",
        type=_whole(0),
        default=8080,
        metavar="N",
        help="default 8080; 0 picks a free port",
    )
    serve_demo.add_argument(
        "--style",
        choices=STYLES,
        default="page",
        help="pagination: page (?page=N, total_pages in the body), offset (?offset=&limit=, "
        "total in the body), cursor (next_cursor in the body), next-url (next in the "
        "body), link (GitHub-style Link headers, list bodies); default: page",
    )
    serve_demo.add_argument(
        "--items",
        type=_whole(0),
        default=DEFAULT_ITEMS,
        metavar="N",
        help=f"records (default {DEFAULT_ITEMS:,})",
    )
    serve_demo.add_argument(
        "--per-page",
        type=_whole(1),
        default=DEFAULT_PER_PAGE,
        metavar="N",
        help=f"records a page when the request does not say (default {DEFAULT_PER_PAGE})",
    )
    serve_demo.add_argument(
        "--max-per-page", type=_whole(1), default=100, metavar="N", help="largest page size (100)"
    )
    serve_demo.add_argument(
        "--latency",
        type=_non_negative,
        default=0.005,
        metavar="S",
        help="delay of every response (s)",
    )
    serve_demo.add_argument(
        "--fault-rate",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction of requests answered 503 at random (0.05: 5%%)",
    )
    serve_demo.add_argument(
        "--seed", type=int, default=None, metavar="N", help="seed of --fault-rate"
    )
    serve_demo.add_argument(
        "--fail-page",
        type=_whole(1),
        action="append",
        default=[],
        metavar="N",
        help="always answer page N with 500 (repeatable; pages count from 1 in every style)",
    )
    serve_demo.add_argument(
        "--rate-limit",
        type=_whole(1),
        default=None,
        metavar="N",
        help="answer 429 with Retry-After beyond N requests a second (RateLimit-* headers)",
    )
    serve_demo.add_argument(
        "--token", default=None, help="require the header 'Authorization: Bearer TOKEN'"
    )
    return parser


def _fetch_parser(sub: Any) -> None:
    fetch = sub.add_parser(
        "fetch",
        help="stream every page of an API into a file, a database or stdout",
        description="Fetch every page of a paginated JSON API concurrently and write its\n"
        "records to a file, a database or stdout (JSON Lines), with a progress bar on a\n"
        "terminal (periodic lines otherwise) and a summary at the end, on stderr.",
        epilog=_FETCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("url", help="the API's URL, e.g. https://api.example.com/items")

    p = fetch.add_argument_group("pagination")
    p.add_argument(
        "--pages",
        choices=_PAGINATORS,
        default=None,
        help="how the API paginates (default: auto, decided from the first response; an "
        "option of one style alone, like --total-pages, implies that style)",
    )
    p.add_argument(
        "--page-param",
        metavar="NAME",
        help="query parameter of the page number (page: 'page') or offset (offset: 'offset')",
    )
    p.add_argument(
        "--start",
        type=_whole(0),
        metavar="N",
        help="first page number (page: 1) or first offset (offset: 0)",
    )
    p.add_argument(
        "--stop",
        type=_whole(0),
        metavar="N",
        help="page: the last page number (inclusive); offset: the item count",
    )
    p.add_argument(
        "--size",
        "--limit",
        dest="size",
        type=_whole(1),
        metavar="N",
        help="records a page, sent as --size-param (page: not sent unless given; offset: 100)",
    )
    p.add_argument(
        "--size-param",
        metavar="NAME",
        help="query parameter of --size (page: 'per_page'; offset: 'limit')",
    )
    p.add_argument(
        "--total-pages",
        metavar="FIELD|header:NAME",
        help="page: the page count in the first response (a dotted path, or a header)",
    )
    p.add_argument(
        "--total-items",
        metavar="FIELD|header:NAME",
        help="page (with --size), offset: the item count in the first response, e.g. "
        "meta.total or header:X-Total-Count",
    )
    p.add_argument(
        "--has-more", metavar="FIELD", help="page, offset: a flag that is false on the last page"
    )
    p.add_argument(
        "--cursor-field",
        metavar="FIELD",
        help="cursor: the field of the next cursor (default: next_cursor)",
    )
    p.add_argument(
        "--cursor-param",
        metavar="NAME",
        help="cursor: the query parameter it is sent back in (default: cursor)",
    )
    p.add_argument("--initial-cursor", metavar="VALUE", help="cursor: sent with the first page")
    p.add_argument(
        "--next-field", metavar="FIELD", help="next-url: the field of the next URL (default: next)"
    )
    p.add_argument(
        "--no-fan-out",
        action="store_true",
        default=None,
        help='link: walk next links one by one even when rel="last" allows parallel pages',
    )
    p.add_argument(
        "--cross-origin",
        action="store_true",
        default=None,
        help="next-url, link: follow links to another origin (without the secret headers)",
    )
    p.add_argument("--max-pages", type=_whole(1), metavar="N", help="fetch at most N pages")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="do not hold the run against totals found by their usual names (total, count, "
        "X-Total-Count, ...); totals named with --total-pages/--total-items are still checked",
    )

    c = fetch.add_argument_group("speed and resilience")
    c.add_argument(
        "-c",
        "--concurrency",
        type=_whole(1),
        default=16,
        metavar="N",
        help="requests at once (default 16)",
    )
    c.add_argument(
        "--rate",
        type=_rate,
        metavar="N[/s|/min|/h]",
        help="at most N requests a second (or a minute, an hour), shared by all workers",
    )
    c.add_argument(
        "--burst", type=_whole(1), metavar="N", help="requests --rate lets through at once"
    )
    c.add_argument(
        "--adaptive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lower the requests in flight to what the server accepts when it answers "
        "429/503, and probe upward slowly (default: on; --no-adaptive keeps -c fixed)",
    )
    c.add_argument(
        "--ordered", action="store_true", help="handle pages in page order (default: as they come)"
    )
    c.add_argument(
        "--retries",
        "--attempts",
        dest="attempts",
        type=_whole(1),
        default=ATTEMPTS,
        metavar="N",
        help=f"attempts a page gets in all, counting the first (default "
        f"{ATTEMPTS}, waits from {BACKOFF:g} s doubling; "
        "1: no retries)",
    )
    c.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds for one attempt, body included (default 60)",
    )
    c.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds to open a connection (default 10)",
    )
    c.add_argument(
        "--read-timeout",
        type=_seconds,
        default=READ_TIMEOUT,
        metavar="S",
        help="seconds of silence while waiting for a response or its body (default 10)",
    )
    c.add_argument(
        "--min-rate",
        type=_bytes,
        default=MIN_RATE,
        metavar="SIZE",
        help="bytes a second a body must average once it has streamed --read-timeout "
        "seconds: a drip is stopped (default 1k; 0: no minimum)",
    )
    c.add_argument(
        "--expect",
        type=_expectation,
        action="append",
        default=[],
        metavar="FIELD=PARAM",
        help="each page's body field FIELD must equal the request's query parameter PARAM "
        "(e.g. page=page); a page that does not is fetched again, then fails (repeatable)",
    )
    c.add_argument(
        "--max-page-bytes",
        type=_bytes,
        default=MAX_PAGE_BYTES,
        metavar="SIZE",
        help="refuse larger bodies (default 8M; 512k, 1G...)",
    )
    c.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="a page that fails after its retries stops the run (raise, the default) or "
        "is skipped and listed at the end (skip); either way the exit code is 1",
    )

    r = fetch.add_argument_group("request")
    r.add_argument(
        "-H",
        "--header",
        dest="headers",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable); values are never printed",
    )
    r.add_argument(
        "-u",
        "--user",
        dest="user",
        type=_user,
        action=_UserAction,
        default=None,
        metavar="USER:PASSWORD",
        help="Basic credentials (as curl's -u): an Authorization header, sent to the URL's "
        "origin only, like -H; never printed. -u USER --password-env VAR keeps the password "
        "off the command line",
    )
    r.add_argument(
        "--auth",
        choices=("bearer", "basic", "apikey", "oauth2"),
        default=None,
        help="how to authenticate, secrets read from the environment (never from the "
        "command line, where ps shows them): bearer --token-env VAR; basic -u USER "
        "--password-env VAR; apikey --api-key-header NAME or --api-key-param NAME, with "
        "--api-key-env VAR; oauth2 --token-url URL --client-id ID --client-secret-env VAR "
        "[--scope S] (client credentials: one token for every request, fetched again before "
        "it expires and on a 401). Sent to the URL's origin only; implied by its options",
    )
    r.add_argument(
        "--token-env", metavar="VAR", default=None, help="bearer: the variable holding the token"
    )
    r.add_argument(
        "--password-env",
        metavar="VAR",
        default=None,
        help="basic: the variable holding the password of -u USER",
    )
    r.add_argument(
        "--api-key-header", metavar="NAME", default=None, help="apikey: send it in header NAME"
    )
    r.add_argument(
        "--api-key-param",
        metavar="NAME",
        default=None,
        help="apikey: send it as query parameter NAME (its value is redacted everywhere)",
    )
    r.add_argument(
        "--api-key-env", metavar="VAR", default=None, help="apikey: the variable holding the key"
    )
    r.add_argument("--token-url", metavar="URL", default=None, help="oauth2: the token endpoint")
    r.add_argument("--client-id", metavar="ID", default=None, help="oauth2: the client's id")
    r.add_argument(
        "--client-secret-env",
        metavar="VAR",
        default=None,
        help="oauth2: the variable holding the client's secret",
    )
    r.add_argument(
        "--scope", metavar="S", default=None, help="oauth2: the scope to ask for (space-separated)"
    )
    r.add_argument("--audience", metavar="A", default=None, help="oauth2: the audience to ask for")
    r.add_argument(
        "--secret-header",
        action="append",
        default=[],
        metavar="NAME",
        help="a header to drop on redirects to another origin, like Authorization, Cookie "
        "and names with key/token/secret/auth/session (repeatable)",
    )
    r.add_argument(
        "-p",
        "--param",
        dest="params",
        type=_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a query parameter added to every request (repeatable)",
    )
    r.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")

    o = fetch.add_argument_group("output")
    o.add_argument(
        "-o",
        "--output",
        metavar="TARGET",
        default="-",
        help="where the records go (see below; default: stdout)",
    )
    o.add_argument(
        "--create-dirs",
        action="store_true",
        help="create the folders of -o (and --stats-json) that do not exist yet",
    )
    o.add_argument(
        "--records",
        metavar="PATH",
        default="auto",
        help="where a page's records are: a dotted path into its body (data.items); '.' "
        "for the whole body as one record; auto (default): decided on the first page "
        "(a list body: its elements; else the one list field, at the top or one level "
        "down; else the whole body), then kept for every page",
    )
    o.add_argument(
        "--batch",
        type=_whole(1),
        default=None,
        metavar="N",
        help="records a commit, at page boundaries (default 1000)",
    )
    o.add_argument(
        "--checkpoint",
        metavar="NAME",
        default=None,
        help="name of the checkpoint stored with the records (default: 'default')",
    )
    again = o.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="go on from the target's checkpoint: committed pages are not fetched again "
        "(after a finished run: fetch only what is new)",
    )
    again.add_argument(
        "--replace",
        action="store_true",
        help="start the target over: its old records go when the first batch commits "
        "(databases) or when the new output is complete (files)",
    )
    o.add_argument(
        "--incremental",
        metavar="FIELD",
        default=None,
        help="fetch only what changed since the last run: the highest FIELD (a dotted path "
        "into each record, e.g. updated_at) among the committed records is kept in the "
        "checkpoint, and the next run fetches from it (it goes on from the target's "
        "checkpoint without --resume; --replace starts over)",
    )
    o.add_argument(
        "--since-param",
        metavar="NAME",
        default=None,
        help="--incremental: the query parameter the API takes that value in (e.g. "
        "updated_since); without it, every page is fetched and the records are filtered here",
    )
    o.add_argument(
        "--primary-key",
        metavar="KEY",
        default=None,
        help="sqlite:// and postgresql:// targets: the record field that identifies a row; a "
        "record whose key is there already replaces its row (an upsert)",
    )
    o.add_argument(
        "--format",
        choices=("parquet", "jsonl", "jsonl.gz"),
        default=None,
        help="the part files of a folder target (-o out/items/): parquet (default) or jsonl",
    )
    o.add_argument(
        "--stats-json",
        metavar="FILE",
        help="write the run's statistics and failures as JSON to FILE ('-': stdout)",
    )
    o.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    o.add_argument(
        "-q", "--quiet", action="store_true", help="errors only: no progress, no summary"
    )
    o.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log the library's decisions and retries (-vv: debug)",
    )
    d = fetch.add_argument_group(
        "past one machine (the dask extra: pip install 'streampage[dask]')"
    )
    d.add_argument(
        "--shards",
        type=_whole(1),
        metavar="N",
        help="split the pages into shards of N pages, each run by a worker of a Dask cluster "
        "into its own part of -o out/items/ (or PostgreSQL), with its own checkpoint; the "
        "same command again goes on with the job",
    )
    d.add_argument(
        "--cluster",
        metavar="SPEC",
        default=None,
        help="local (default: a worker per core), local:N (N workers), or a scheduler's "
        "address, tcp://host:8786",
    )
    d.add_argument(
        "--job",
        metavar="NAME",
        default=None,
        help="names the job's checkpoint and its part files (default: --checkpoint, or 'default')",
    )

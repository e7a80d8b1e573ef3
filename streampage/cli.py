"""The ``streampage`` command line (also ``python -m streampage``). The library never imports it.

streampage fetch URL    stream every page of a paginated API into a file, a database or stdout
streampage demo         start the demo API in a subprocess and stream every page of it
streampage serve-demo   run the demo API alone, to try every option of ``fetch`` by hand

Exit codes: 0 every page was fetched (and committed); 1 some pages failed (they are listed)
or the run stopped on an error; 2 bad usage (options, URL, output target); 130 interrupted.
Errors are one line, ``streampage: error: ...``; credentials given with ``-H`` or in the URL
never appear in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from . import __version__, _runner
from ._decode import get_path
from ._errors import (
    CheckpointInUseError,
    ConfigurationError,
    IncompleteError,
    PageError,
    StreamPageError,
)
from ._http import is_secret_header
from ._into import as_records, path_records
from ._pagination import Header, Offset, PageNumber, Paginator
from ._policy import RateLimit, RetryPolicy, Timeout
from ._redact import REDACTED, SECRET_PARAMS, redact_url
from ._stats import StreamStats
from ._stream import DEFAULT_MAX_PAGE_BYTES, Stream, stream
from ._walks import Cursor, LinkHeader, NextURL
from .demo import DEFAULT_ITEMS, DEFAULT_PER_PAGE, STYLES, ItemsPage, serve

__all__ = ["main"]

PROG = "streampage"


class UsageError(Exception):
    """Bad usage found after argument parsing: one line on stderr, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (UsageError, ConfigurationError) as exc:
        _error(str(exc))
        return 2
    except StreamPageError as exc:
        _error(str(exc))
        return 1


def _error(message: str) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr, flush=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


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


def _expectations(pairs: list[tuple[str, str]]) -> Callable[[Any], bool] | None:
    """``--expect FIELD=PARAM``: a page whose body does not echo its own request is another
    page's body (a cache, a proxy): validate= rejects it, and it is fetched again."""
    if not pairs:
        return None

    def check(page: Any) -> bool:
        query = page.response.url.query
        for field, param in pairs:
            sent, echoed = query.get(param), get_path(page.data, field)
            if sent is None or not _echoes(echoed, sent):
                raise ValueError(
                    f"--expect {field}={param}: the body's {field} is {echoed!r}, "
                    f"the request's {param} is {sent!r}"
                )
        return True

    return check


def _echoes(echoed: Any, sent: str) -> bool:
    """Does a body's value echo a query value? Numbers as numbers (``1.0``, ``"01"`` echo
    ``?page=1``), anything else as text."""
    if str(echoed) == sent:
        return True
    try:
        return float(echoed) == float(sent)
    except (TypeError, ValueError):
        return False


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _TOKEN.fullmatch(name):
        # never echo the text: it may hold a credential
        raise argparse.ArgumentTypeError("a header is written 'Name: value'")
    return name, value.strip()


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
"""

_PAGINATORS = ("auto", "page", "offset", "cursor", "next-url", "link")


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors (not the whole usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
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
    demo.set_defaults(func=_demo)

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
    serve_demo.set_defaults(func=_serve_demo)
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
        default="auto",
        help="how the API paginates (default: auto, decided from the first response)",
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
        default=RetryPolicy().attempts,
        metavar="N",
        help=f"attempts a page gets in all, counting the first (default "
        f"{RetryPolicy().attempts}, waits from {RetryPolicy().backoff:g} s doubling; "
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
        default=Timeout().first_byte,
        metavar="S",
        help="seconds of silence while waiting for a response or its body (default 10)",
    )
    c.add_argument(
        "--min-rate",
        type=_bytes,
        default=int(Timeout().min_rate or 0),
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
        default=DEFAULT_MAX_PAGE_BYTES,
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
    r.add_argument(
        "--insecure", action="store_true", help="do not verify TLS certificates (verify_tls=False)"
    )

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
    fetch.set_defaults(func=_fetch)


# ---------------------------------------------------------------------- secrets


#: Header names whose values are shown as they are (never credentials).
_PLAIN_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "content-type", "user-agent", "cache-control"}
)


class _Scrubber:
    """Replaces every credential the user gave (header values, secret parameters, URL
    passwords) by REDACTED in text about to be printed: defence in depth, since the library
    redacts URLs itself and never prints headers, but a server may echo them in a body."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    @classmethod
    def of(cls, args: argparse.Namespace) -> _Scrubber:
        found: list[str] = []
        for name, value in args.headers:
            if name.lower() not in _PLAIN_HEADERS:
                found.append(value)
                scheme, _, credential = value.partition(" ")
                if credential and scheme.isalpha():
                    found.append(credential.strip())  # "Bearer <token>": the token alone too
        for key, value in args.params:
            if key.lower() in SECRET_PARAMS or is_secret_header(key):
                found.append(value)
        for target in (args.url, args.output or ""):
            with contextlib.suppress(ValueError):
                parts = urlsplit(target)
                if parts.password:
                    found.append(parts.password)
                found += [v for k, v in parse_qsl(parts.query) if k.lower() in SECRET_PARAMS]
        return cls(found)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


class _LogHandler(logging.Handler):
    """The library's log records on stderr (looked up at each record, so that a progress
    bar that wraps stderr keeps them above it), scrubbed."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        super().__init__()
        self._scrub = scrub

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._scrub(_one_line(record.getMessage()))
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def _setup_logging(verbose: int, quiet: bool, scrub: Callable[[str], str]) -> Callable[[], None]:
    logger = logging.getLogger("streampage")
    handler = _LogHandler(scrub)
    if quiet:
        level = logging.ERROR
    elif verbose:
        level = logging.INFO if verbose == 1 else logging.DEBUG
    else:
        # warnings, and which paginator pages=auto chose (an INFO record worth seeing);
        # not "page N failed after...": failed pages are listed at the end, or the error
        level = logging.INFO
        handler.addFilter(
            lambda r: (
                str(r.msg).startswith("pages=auto")
                if r.levelno < logging.WARNING
                else not str(r.msg).startswith("page %d failed after")
            )
        )
    handler.setLevel(level)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate

    return undo


# ---------------------------------------------------------------------- the plan of a fetch

_APPLIES = {
    "page_param": ("page", "offset"),
    "start": ("page", "offset"),
    "stop": ("page", "offset"),
    "size": ("page", "offset"),
    "size_param": ("page", "offset"),
    "total_pages": ("page",),
    "total_items": ("page", "offset"),
    "has_more": ("page", "offset"),
    "cursor_field": ("cursor",),
    "cursor_param": ("cursor",),
    "initial_cursor": ("cursor",),
    "next_field": ("next-url",),
    "no_fan_out": ("link",),
    "cross_origin": ("next-url", "link"),
}


def _option(dest: str) -> str:
    return "--size/--limit" if dest == "size" else "--" + dest.replace("_", "-")


def _value_source(text: str) -> str | Header:
    if text.lower().startswith("header:"):
        name = text[len("header:") :].strip()
        if not name:
            raise UsageError(f"{text!r}: write header:NAME, e.g. header:X-Total-Count")
        return Header(name)
    return text


def _paginator(args: argparse.Namespace, items: str | None) -> Paginator | None:
    """The paginator the options describe (None: pages=auto); options that do not apply
    to the chosen style are an error rather than silently ignored."""
    style = args.pages
    for dest, styles in _APPLIES.items():
        if getattr(args, dest) is not None and style not in styles:
            need = " or ".join(f"--pages {s}" for s in styles)
            raise UsageError(f"{_option(dest)} applies to {need}, not --pages {style}")
    if style == "auto":
        return None
    if style == "page":
        return PageNumber(
            start=1 if args.start is None else args.start,
            stop=args.stop,
            param=args.page_param or "page",
            size=args.size,
            size_param=args.size_param or "per_page",
            total_pages=None if args.total_pages is None else _value_source(args.total_pages),
            total_items=None if args.total_items is None else _value_source(args.total_items),
            has_more=args.has_more,
            items=items,
        )
    if style == "offset":
        return Offset(
            limit=100 if args.size is None else args.size,
            start=0 if args.start is None else args.start,
            stop=args.stop,
            param=args.page_param or "offset",
            limit_param=args.size_param or "limit",
            total_items=None if args.total_items is None else _value_source(args.total_items),
            has_more=args.has_more,
            items=items,
        )
    if style == "cursor":
        return Cursor(
            field=args.cursor_field or "next_cursor",
            param=args.cursor_param or "cursor",
            initial=args.initial_cursor,
        )
    if style == "next-url":
        return NextURL(field=args.next_field or "next", cross_origin=bool(args.cross_origin))
    return LinkHeader(fan_out=not args.no_fan_out, cross_origin=bool(args.cross_origin))


def _known_total(args: argparse.Namespace) -> int | None:
    """The page count when the options fix it (for the bar and its ETA); None otherwise
    (see also _total_reader). A resumed run skips an unknown number of committed pages."""
    if args.resume:
        return None
    total: int | None = None
    if args.pages == "page" and args.stop is not None:
        total = max(0, args.stop - (1 if args.start is None else args.start) + 1)
    elif args.pages == "offset" and args.stop is not None:
        limit = 100 if args.size is None else args.size
        total = math.ceil(max(0, args.stop - (args.start or 0)) / limit)
    if args.max_pages is not None:
        total = args.max_pages if total is None else min(total, args.max_pages)
    return total


def _total_reader(args: argparse.Namespace) -> Callable[[Any], int | None] | None:
    """For a total the options name in the body (``--total-pages FIELD``, ``--total-items
    FIELD``) and no ``--stop``: the page count read from the first page's body, as the
    paginator reads it. (A total in a header, or one that ``--pages auto`` finds, is not
    visible here: the engine does not expose the total it discovered.)"""
    if args.resume or args.stop is not None:
        return None

    def field(text: str | None) -> str | None:
        return None if text is None or text.lower().startswith("header:") else text

    def count(data: Any, path: str) -> int | None:
        value = get_path(data, path)
        if isinstance(value, bool) or not isinstance(value, int | str):
            return None
        try:
            number = int(value)
        except ValueError:
            return None
        return number if number >= 0 else None

    pages_field, items_field = field(args.total_pages), field(args.total_items)
    if args.pages == "page" and pages_field is not None:
        return lambda data: count(data, pages_field)
    if args.pages == "page" and items_field is not None and args.size is not None:
        size = args.size

        def page_count(data: Any) -> int | None:
            items = count(data, items_field)
            return None if items is None else math.ceil(items / size)

        return page_count
    if args.pages == "offset" and items_field is not None:
        limit, start = args.size or 100, args.start or 0

        def offset_count(data: Any) -> int | None:
            items = count(data, items_field)
            return None if items is None else math.ceil(max(0, items - start) / limit)

        return offset_count
    return None


class _Spec:
    """Records of a page, with the ``--records`` text they came from: a checkpoint's
    fingerprint names it, so that a resume with another records path is refused."""

    def __init__(self, records: Callable[[Any], list[Any]], spec: str) -> None:
        self._records = records
        self.spec = spec

    def __call__(self, data: Any) -> list[Any]:
        return self._records(data)


class _WatchTotal:
    """Records of a page, reading the page count from the first page on the way (for the
    progress bar's total and ETA)."""

    def __init__(
        self, records: Callable[[Any], list[Any]], reader: Callable[[Any], int | None], plan: _Plan
    ) -> None:
        self._records = records
        self._reader: Callable[[Any], int | None] | None = reader
        self._plan = plan
        self.spec = getattr(records, "spec", None)

    def __call__(self, data: Any) -> list[Any]:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            total = reader(data)
            if total is not None:
                cap = self._plan.total
                self._plan.total = total if cap is None else min(total, cap)
        return self._records(data)


class _AutoRecords:
    """``--records auto``: where the records are is decided on the first page, then kept,
    so that every page of a run is split the same way."""

    def __init__(self, announce: Callable[[str], None] | None) -> None:
        # None: a shard's, sent to a worker (it pickles while undecided); logged there
        self._announce = announce or logging.getLogger("streampage").info
        self._sent = announce is None
        self._split: Callable[[Any], list[Any]] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        if not self._sent:
            raise TypeError("--records auto pickles only as a shard's, before it decides")
        return (_AutoRecords, (None,))

    def __call__(self, data: Any) -> list[Any]:
        if self._split is None:
            self._split = self._decide(data)
        return self._split(data)

    def _decide(self, data: Any) -> Callable[[Any], list[Any]]:
        if isinstance(data, list):
            self._announce("records: the elements of each page's list body (--records auto)")
            return as_records
        path = _record_path(data)
        if path is None:
            self._announce(
                "records: each page's whole body is one record (--records auto found no "
                "single list field; name one with --records PATH)"
            )
            return lambda body: [body]
        self._announce(f"records: the items of {path!r} in each page (--records auto)")
        return lambda body: as_records(get_path(body, path))


def _record_path(data: Any) -> str | None:
    """The path of the only list field of an object, at the top or one level down."""
    if not isinstance(data, dict):
        return None
    top = [k for k, v in data.items() if isinstance(v, list)]
    if top:
        return str(top[0]) if len(top) == 1 else None
    nested = [
        f"{k}.{k2}"
        for k, v in data.items()
        if isinstance(v, dict)
        for k2, v2 in v.items()
        if isinstance(v2, list)
    ]
    return nested[0] if len(nested) == 1 else None


def _records_of(spec: str, announce: Callable[[str], None]) -> Callable[[Any], list[Any]]:
    """The records of a page's body, per ``--records``."""
    if spec == "auto":
        return _AutoRecords(announce)
    if spec == ".":
        return lambda body: [body]
    if not spec or spec.startswith(".") or spec.endswith(".") or ".." in spec:
        raise UsageError(f"--records {spec!r} is not a dotted path like data.items (or . or auto)")
    return path_records(spec)  # a path absent from the first page is an error, not 0 records


@dataclass
class _Target:
    """Where the records go: a sink, or stdout (sink None)."""

    sink: Any
    shown: str
    checkpointed: bool = True
    #: one Parquet file: written when a run completes, committed batches wait hidden
    merged_at_end: bool = False


_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")


def _target(text: str, create_dirs: bool = False, form: str | None = None) -> _Target:
    """The sink an ``-o`` target names; a one-line UsageError for anything else."""
    from . import sinks

    if form is not None and not text.endswith(("/", os.sep)):
        raise UsageError(
            f"--format applies to a folder target (-o out/items/), not {text!r}, whose "
            "name says its format"
        )
    if text == "-":
        return _Target(None, "stdout", checkpointed=False)
    lowered = text.lower()
    if lowered.startswith("sqlite:"):
        parts = urlsplit(text)
        path = parts.netloc + (parts.path[1:] if parts.path.startswith("/") else parts.path)
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        table = options.pop("table", "items")
        if not path or options:
            raise UsageError(
                f"output {text!r}: write sqlite:///relative/path.db?table=NAME or "
                "sqlite:////absolute/path.db?table=NAME (table is the only option)"
            )
        _check_file(path, text, create_dirs)
        return _Target(sinks.SQLite(path, table=table), f"{path} (SQLite, table {table})")
    if lowered.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(text)
        query = parse_qsl(parts.query, keep_blank_values=True)
        tables = [v for k, v in query if k == "table"]
        dsn = urlunsplit(
            parts._replace(query=urlencode([(k, v) for k, v in query if k != "table"]))
        )
        table = tables[-1] if tables else "items"
        try:
            sink = sinks.Postgres(dsn, table)
        except ImportError as exc:
            raise UsageError(f"PostgreSQL output is not available here: {exc}") from None
        return _Target(sink, f"{redact_url(dsn)} (PostgreSQL, table {table})")
    if "://" in text:
        raise UsageError(_unknown_target(text, redact_url(text)))
    if text.endswith(("/", os.sep)):
        return _folder(text, form or "parquet", create_dirs)
    if Path(text).is_dir():
        raise UsageError(
            f"output {text!r} is a directory: end it with / to write a folder of part files "
            f"(-o {text.rstrip('/')}/), or name a file in it"
        )
    if lowered.endswith(_JSONL_SUFFIXES):
        _check_file(text, text, create_dirs)
        return _Target(sinks.JSONLines(text), f"{text} (JSON Lines)")
    if lowered.endswith(".parquet"):
        _check_file(text, text, create_dirs)
        try:
            sink = sinks.Parquet(text)
        except ImportError as exc:
            raise UsageError(f"Parquet output is not available here: {exc}") from None
        return _Target(sink, f"{text} (Parquet)", merged_at_end=True)
    raise UsageError(_unknown_target(text, text))


def _folder(text: str, form: str, create_dirs: bool) -> _Target:
    """A dataset folder: one part file per run, added without rewriting the others."""
    from . import sinks

    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"output {text!r} is a file, not a folder: drop the trailing /")
    _check_file(str(folder), text, create_dirs, folder=True)
    if form == "parquet":
        try:
            return _Target(sinks.Parquet(text), f"{text} (folder of Parquet parts)")
        except ImportError as exc:
            raise UsageError(f"Parquet output is not available here: {exc}") from None
    sink = sinks.JSONLines(text, gzip=form == "jsonl.gz")
    return _Target(sink, f"{text} (folder of JSON Lines parts)")


def _unknown_target(text: str, shown: str) -> str:
    return (
        f"cannot tell what output {shown!r} is: write a .jsonl, .jsonl.gz, .ndjson or .parquet "
        "file, sqlite:///file.db?table=NAME, postgresql://user@host/db?table=NAME, or - for "
        "stdout"
    )


def _check_file(path: str, text: str, create_dirs: bool = False, folder: bool = False) -> None:
    p = Path(path)
    if p.is_dir() and not folder:
        raise UsageError(f"output {text!r} is a directory; name a file in it")
    parent = p.parent
    if not parent.exists() and not create_dirs:
        raise UsageError(
            f"output {text!r}: the folder {parent} does not exist; create it, or pass --create-dirs"
        )
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"output {text!r}: {parent} is not a writable directory")


@dataclass
class _Plan:
    url: str
    paginator: Paginator | None
    options: dict[str, Any]
    target: _Target
    records: Callable[[Any], list[Any]]
    total: int | None
    stats_json: str | None


def _plan(args: argparse.Namespace, announce: Callable[[str], None]) -> _Plan:
    target = _target(args.output, args.create_dirs, args.format)
    if target.sink is None:
        for given, option in (
            (args.resume, "--resume"),
            (args.replace, "--replace"),
            (args.checkpoint is not None, "--checkpoint"),
            (args.batch is not None, "--batch"),
        ):
            if given:
                raise UsageError(
                    f"{option} needs an output target with a checkpoint (-o items.jsonl, "
                    "sqlite:///..., postgresql://..., x.parquet), not stdout"
                )
    if args.stats_json == "-" and target.sink is None:
        raise UsageError("--stats-json - would mix with the records on stdout: name a file")
    if args.stats_json not in (None, "-"):
        _check_file(args.stats_json, args.stats_json, args.create_dirs)
    if args.burst is not None and args.rate is None:
        raise UsageError("--burst needs --rate")
    headers: dict[str, str] = {}
    for name, value in args.headers:
        if name.lower() in (h.lower() for h in headers):
            raise UsageError(f"-H {name} is given twice")
        headers[name] = value
    params: dict[str, str] = {}
    for key, value in args.params:
        if key in params:
            raise UsageError(f"-p {key} is given twice; put repeated parameters in the URL")
        params[key] = value
    record_path = args.records if args.records not in ("auto", ".") else None
    records = _Spec(_records_of(args.records, announce), args.records)
    options: dict[str, Any] = {
        "concurrency": args.concurrency,
        "ordered": args.ordered,
        "params": params,
        "headers": headers,
        "secret_headers": tuple(args.secret_header),
        "timeout": Timeout(
            connect=args.connect_timeout,
            first_byte=args.read_timeout,
            attempt=args.timeout,
            min_rate=args.min_rate or None,
        ),
        "validate": _expectations(args.expect),
        "retry": RetryPolicy(attempts=args.attempts),
        "rate": None if args.rate is None else RateLimit(args.rate, burst=args.burst or 1),
        "adaptive": args.adaptive,
        "max_page_bytes": args.max_page_bytes,
        "on_error": args.on_error,
        "verify_tls": not args.insecure,
        "max_pages": args.max_pages,
        "verify": not args.no_verify,
    }
    plan = _Plan(
        url=args.url,
        paginator=_paginator(args, record_path),
        options=options,
        target=target,
        records=records,
        total=_known_total(args),
        stats_json=args.stats_json,
    )
    reader = _total_reader(args)
    if reader is not None:
        plan.records = _WatchTotal(records, reader, plan)
    return plan


# ---------------------------------------------------------------------- fetch


@dataclass
class _Outcome:
    error: BaseException | None = None
    interrupted: bool = False
    broken_pipe: bool = False


def _fetch(args: argparse.Namespace) -> int:
    scrub = _Scrubber.of(args)
    undo_logging = _setup_logging(args.verbose, args.quiet, scrub)
    try:
        return _fetch_run(args, scrub)
    finally:
        undo_logging()


def _fetch_run(args: argparse.Namespace, scrub: _Scrubber) -> int:
    def say(text: str) -> None:
        print(f"{PROG}: error: {scrub(_one_line(text))}", file=sys.stderr, flush=True)

    def announce(text: str) -> None:
        if not args.quiet:
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    try:
        if args.shards is None and (args.cluster is not None or args.job is not None):
            given = "--cluster" if args.cluster is not None else "--job"
            raise UsageError(f"{given} applies to a sharded run: add --shards N")
        plan = _plan(args, announce)
        if args.shards is not None:
            from ._cli_shards import fetch_sharded

            return fetch_sharded(args, plan, scrub, say)
        s: Stream[Any] = stream(plan.url, pages=plan.paginator, **plan.options)
    except (UsageError, ConfigurationError) as exc:
        say(str(exc))
        return 2
    to_terminal = plan.target.sink is None and sys.stdout.isatty()
    quiet_progress = args.quiet or args.no_progress or to_terminal
    outcome = _Outcome()
    try:
        _runner.run(_drive(s, plan, args, outcome, quiet_progress))
    except KeyboardInterrupt:
        outcome.interrupted = True
    if outcome.broken_pipe:
        # the reader of stdout went away (`| head`): stop quietly, as other tools do
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    error = outcome.error
    failures = s.failures
    if isinstance(error, ConfigurationError | UsageError):
        code = 2
    elif outcome.interrupted:
        code = 130
    elif error is not None or failures:
        code = 1
    else:
        code = 0
    busy = isinstance(error, CheckpointInUseError)  # nothing was started: no summary
    if not args.quiet and code != 2 and not busy:
        _print_fetch_summary(s, plan, scrub, code)
    if failures:
        _print_failures(s, scrub)
    if error is not None:
        say(str(error))
    if outcome.interrupted:
        print(f"{PROG}: interrupted", file=sys.stderr)
    committed = s.stats.committed_pages
    if plan.target.sink is not None and (code == 130 or (code == 1 and committed)):
        # Interrupted, a commit may have landed after the count was last taken: the hint
        # is given whatever the count says (a resume with nothing committed starts over).
        again = "with --resume in place of --replace" if args.replace else "with --resume"
        kept = (
            " (kept in its hidden state folder until a complete run writes the file)"
            if plan.target.merged_at_end
            else ""
        )
        where = plan.target.shown + kept
        done = (
            f"{committed:,} pages are committed to {where}"
            if committed
            else f"{where} keeps what was committed"
        )
        print(
            f"{PROG}: {done}; run the command again {again} to fetch the rest",
            file=sys.stderr,
        )
    if plan.stats_json is not None:
        try:
            _write_stats_json(plan, s, error, code, scrub)
        except OSError as exc:
            say(f"--stats-json {plan.stats_json}: {exc.strerror or exc}")
            return code or 1
    return code


async def _drive(
    s: Stream[Any], plan: _Plan, args: argparse.Namespace, outcome: _Outcome, quiet: bool
) -> None:
    progress: _Progress = _NoProgress() if quiet else _make_progress(args.no_progress, True)
    ticker = asyncio.create_task(_tick(progress, s.stats, plan))
    try:
        if plan.target.sink is None:
            if not await _to_stdout(s, plan.records):
                outcome.broken_pipe = True
        else:
            await s.records(plan.records).into(
                plan.target.sink,
                batch=args.batch or 1000,
                checkpoint=args.checkpoint or "default",
                mode="resume" if args.resume else "replace" if args.replace else "new",
            )
    except StreamPageError as exc:
        outcome.error = exc
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        progress.update(_snapshot(s.stats, plan.total))
        progress.close()


async def _tick(progress: _Progress, stats: StreamStats, plan: _Plan) -> None:
    while True:
        await asyncio.sleep(progress.interval)
        progress.update(_snapshot(stats, plan.total))  # the total may be learnt on the way


async def _to_stdout(s: Stream[Any], records: Callable[[Any], list[Any]]) -> bool:
    """Every record as a JSON line on stdout; False if the reader went away."""
    out = sys.stdout.buffer
    encode = msgspec.json.Encoder().encode
    stats = s.stats
    async with s:
        async for page in s:
            found = records(page.data)
            stats.records += len(found)
            if not found:
                continue
            try:
                out.write(b"".join(encode(r) + b"\n" for r in found))
                out.flush()
            except BrokenPipeError:
                return False
    return True


def _failure_rows(s: Stream[Any], scrub: Callable[[str], str]) -> list[dict[str, Any]]:
    rows = []
    for f in sorted(s.failures, key=lambda f: f.page):
        error: PageError = f.error
        rows.append(
            {
                "page": f.page,
                "status": f.status,
                "attempts": f.attempts,
                "error": type(error).__name__,
                "message": scrub(_one_line(str(error))),
                "url": scrub(error.url),
            }
        )
    return rows


_LISTED = 20


def _print_failures(s: Stream[Any], scrub: Callable[[str], str]) -> None:
    rows = _failure_rows(s, scrub)
    incomplete = [f.error for f in s.failures if isinstance(f.error, IncompleteError)]
    for error in incomplete:
        print(f"{PROG}: incomplete: {scrub(_one_line(str(error)))}", file=sys.stderr)
    rows = [row for row in rows if row["error"] != "IncompleteError"]
    if not rows:
        return
    print(f"{PROG}: {len(rows)} page{'s' * (len(rows) != 1)} failed:", file=sys.stderr)
    for row in rows[:_LISTED]:
        what = f"HTTP {row['status']}" if row["status"] else row["error"]
        print(
            f"  page {row['page']}: {what} after {row['attempts']} attempt(s)  {row['url']}",
            file=sys.stderr,
        )
    if len(rows) > _LISTED:
        print(
            f"  ... and {len(rows) - _LISTED} more (--stats-json lists them all)", file=sys.stderr
        )


def _write_stats_json(
    plan: _Plan, s: Stream[Any], error: BaseException | None, code: int, scrub: _Scrubber
) -> None:
    stats = s.stats
    document = {
        "url": scrub(redact_url(plan.url)),
        "output": scrub(plan.target.shown),
        "exit_code": code,
        "complete": code == 0,
        "error": None if error is None else scrub(_one_line(str(error))),
        "pages": stats.pages,
        "records": stats.records,
        "committed_pages": stats.committed_pages,
        "completeness": {
            "status": s.completeness.status,
            "verified_sources": s.completeness.verified,
            "unverifiable_sources": s.completeness.unverifiable,
            "incomplete_sources": s.completeness.incomplete,
            "notes": [scrub(note) for note in s.completeness.notes],
        },
        "requests": stats.requests,
        "requests_past_end": stats.past_end,
        "bytes": stats.bytes,
        "retries": dict(stats.retries),
        "total_retries": stats.total_retries,
        "failed": stats.failed,
        "failures": _failure_rows(s, scrub),
        "elapsed_seconds": round(stats.elapsed, 6),
        "pages_per_second": round(stats.pages_per_second, 3),
        "time_to_first_page_seconds": stats.time_to_first_page,
        "throttled_seconds": round(stats.throttled_seconds, 6),
        "backoff_seconds": round(stats.backoff_seconds, 6),
        "network_seconds": round(stats.network_seconds, 6),
        "consumer_wait_seconds": round(stats.consumer_wait_seconds, 6),
    }
    text = msgspec.json.format(msgspec.json.encode(document), indent=2).decode() + "\n"
    if plan.stats_json == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        assert plan.stats_json is not None
        Path(plan.stats_json).write_text(text)


def _print_fetch_summary(
    s: Stream[Any], plan: _Plan, scrub: Callable[[str], str], code: int
) -> None:
    stats = s.stats
    pages = f"{stats.pages:,}"
    if plan.target.checkpointed:
        pages += f" ({stats.committed_pages:,} committed)"
    waits = [
        f"{name} {value:.1f} s"
        for name, value in (
            ("throttled", stats.throttled_seconds),
            ("backing off", stats.backoff_seconds),
            ("slow consumer", stats.consumer_wait_seconds),
        )
        if value >= 0.05
    ]
    first = stats.time_to_first_page
    rows = [
        ("url", scrub(redact_url(plan.url))),
        ("output", scrub(plan.target.shown)),
        *_resumed(stats),
        ("pages", pages),
        ("records", f"{stats.records:,}"),
        ("failed pages", f"{stats.failed:,}"),
        ("time", f"{stats.elapsed:.2f} s"),
        ("pages/s", f"{stats.pages_per_second:,.1f}"),
        ("time to first page", "-" if first is None else f"{first * 1000:.1f} ms"),
        ("requests", _requests(stats)),
        ("retries", ", ".join(f"{n} {why}" for why, n in stats.retries.items()) or "0"),
        ("waits (all workers)", ", ".join(waits) or "-"),
        ("result", _result(s, code, scrub)),
    ]
    _print_table("streampage fetch", rows, sys.stderr)


def _resumed(stats: StreamStats) -> list[tuple[str, str]]:
    """What --resume went on from: an interrupted run, or one that had finished."""
    if stats.resumed_finished:
        new = "nothing new" if not stats.records else f"{stats.records:,} new records"
        return [
            (
                "resumed",
                f"a finished run ({stats.resumed_pages:,} pages); looked for new pages: {new}",
            )
        ]
    if stats.resumed_pages:
        return [("resumed", f"{stats.resumed_pages:,} pages committed by earlier runs")]
    return []


def _requests(stats: StreamStats) -> str:
    text = f"{stats.requests:,} ({stats.bytes / 1e6:,.1f} MB received"
    if stats.past_end:
        text += f"; {stats.past_end:,} for pages past the end"
    return text + ")"


def _result(s: Stream[Any], code: int, scrub: Callable[[str], str]) -> str:
    """The result line: "complete" says what it was checked against, or that nothing
    could be checked; never more than the run knows."""
    if code != 0:
        return _RESULTS.get(code, "failed")
    checked = _checked(s, scrub)
    if s.stats.resumed_finished and not s.stats.records:
        already = "complete already (the last run finished, and nothing is new: 0 records added)"
        return already + checked.removeprefix("complete")
    return checked


def _checked(s: Stream[Any], scrub: Callable[[str], str]) -> str:
    """ "complete", and what it was checked against."""
    done = s.completeness
    if done.status == "verified":
        if len(done.notes) == 1:
            checks = done.notes[0].split("; ")
            n = len(checks) - 1
            more = f" (and {n} more total{'s agree' if n > 1 else ' agrees'})" if n else ""
            return f"complete, verified: {scrub(checks[0])}{more}"
        return f"complete, verified: {done.verified:,} sources, each against its total"
    if done.status == "partly verified":
        return (
            f"complete; {done.verified:,} sources verified against their totals, "
            f"{done.unverifiable:,} not verifiable (no total reported)"
        )
    reason = done.notes[0] if len(done.notes) == 1 else "no response reported a total"
    reason = reason.removeprefix("not verifiable: ")
    return f"complete as far as can be told (not verifiable: {scrub(reason)})"


_RESULTS = {
    0: "complete",
    1: "incomplete: see the errors below",
    2: "not started",
    130: "interrupted",
}


# ---------------------------------------------------------------------- progress


@dataclass
class _Snapshot:
    pages: int
    records: int
    total: int | None
    retries: int = 0
    failed: int = 0
    #: what else to say (a sharded job: its shards done)
    note: str = ""


def _snapshot(stats: StreamStats, total: int | None) -> _Snapshot:
    return _Snapshot(stats.pages, stats.records, total, stats.total_retries, stats.failed)


class _Progress(Protocol):
    interval: float

    def update(self, snap: _Snapshot) -> None: ...
    def close(self) -> None: ...


def _make_progress(plain: bool, stderr: bool) -> _Progress:
    """A rich bar on a terminal (the ``cli`` extra), else plain periodic lines."""
    out = sys.stderr if stderr else sys.stdout
    if not plain and out.isatty():
        try:
            return _RichProgress(stderr)
        except ImportError:
            pass
    return _PlainProgress(out)


class _NoProgress:
    interval = 1.0

    def update(self, snap: _Snapshot) -> None:
        pass

    def close(self) -> None:
        pass


class _PlainProgress:
    """Periodic lines, for logs and pipes."""

    interval = 1.0

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._start = self._last = time.perf_counter()
        self._shown_total = False

    def update(self, snap: _Snapshot) -> None:
        now = time.perf_counter()
        at_total = snap.total is not None and snap.pages >= snap.total
        if now - self._last < self.interval and not (at_total and not self._shown_total):
            return
        self._last = now
        self._shown_total = self._shown_total or at_total
        rate = snap.pages / max(now - self._start, 1e-9)
        total = f"/{snap.total:,}" if snap.total else ""
        eta = ""
        if snap.total and rate > 0 and snap.pages < snap.total:
            eta = f", ETA {(snap.total - snap.pages) / rate:,.0f} s"
        note = f"{snap.note}, " if snap.note else ""
        print(
            f"  {note}{snap.pages:,}{total} pages, {snap.records:,} records, "
            f"{rate:,.0f} pages/s, {snap.retries:,} retries, {snap.failed:,} failed{eta}",
            file=self._out,
            flush=True,
        )

    def close(self) -> None:
        pass


class _RichProgress:
    """A live bar on a terminal (the ``cli`` extra installs rich): pages (of the total when
    it is known, with an ETA), records, pages/s, retries, failures."""

    interval = 0.1

    def __init__(self, stderr: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.fields[note]}"),
            TextColumn("pages"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[records]} records"),
            TextColumn("{task.fields[rate]} pages/s"),
            TextColumn("{task.fields[retries]}"),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=stderr),
        )
        self._task = self._progress.add_task(
            "fetch",
            total=None,
            note="",
            records="0",
            rate="0",
            retries="0 retries",
            failed="0 failed",
        )
        self._start = time.perf_counter()
        self._progress.start()

    def update(self, snap: _Snapshot) -> None:
        rate = snap.pages / max(time.perf_counter() - self._start, 1e-9)
        failed = f"{snap.failed:,} failed"
        self._progress.update(
            self._task,
            completed=snap.pages,
            total=snap.total,
            note=snap.note,
            records=f"{snap.records:,}",
            rate=f"{rate:,.0f}",
            retries=f"[yellow]{snap.retries:,} retries" if snap.retries else "0 retries",
            failed=f"[red]{failed}" if snap.failed else failed,
        )

    def close(self) -> None:
        self._progress.stop()


def _print_table(title: str, rows: list[tuple[str, str]], out: TextIO) -> None:
    """A rich table on a terminal; plain aligned lines in logs and pipes (easy to grep)."""
    if out.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title, show_header=False)
            for name, value in rows:
                table.add_row(name, value)
            Console(file=out).print(table)
            return
    print(title, file=out)
    for name, value in rows:
        print(f"  {name:<20} {value}", file=out)
    out.flush()


# ---------------------------------------------------------------------- serve-demo


def _serve_demo(args: argparse.Namespace) -> int:
    options = {
        "per_page": args.per_page,
        "max_per_page": args.max_per_page,
        "style": args.style,
        "fault_rate": args.fault_rate,
        "seed": args.seed,
        "fail_pages": tuple(args.fail_page),
        "rate_limit": args.rate_limit,
        "token": args.token,
    }
    if not 1 <= args.per_page <= args.max_per_page:
        raise UsageError(f"--per-page {args.per_page} must be at most --max-per-page")

    async def run() -> None:
        runner, url = await serve(
            host=args.host, port=args.port, items=args.items, latency=args.latency, **options
        )
        print(url, flush=True)  # the first line of output is the URL: `demo` reads it
        print(
            f"demo API ({args.style} style, {args.items:,} records, {args.per_page} a page, "
            f"{args.latency * 1000:g} ms latency); try: {PROG} fetch {url} -o items.jsonl",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        _runner.run(run())
    except OSError as exc:  # the port is taken, the host is not ours
        raise UsageError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return 0


# ---------------------------------------------------------------------- demo


@contextlib.contextmanager
def _demo_server(args: argparse.Namespace) -> Iterator[str]:
    """The demo API in its own process, so that it does not share the client's core."""
    command = [sys.executable, "-m", "streampage", "serve-demo", "--port", "0"]
    command += ["--items", str(args.items), "--latency", str(args.latency)]
    command += ["--per-page", str(min(args.per_page, 100))]
    if args.fault_rate:
        command += ["--fault-rate", str(args.fault_rate)]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            if not url.startswith("http"):
                raise StreamPageError(f"the demo server did not start (exit code {proc.poll()})")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _demo(args: argparse.Namespace) -> int:
    if args.per_page > 100:
        raise UsageError("--per-page must be at most 100 (the demo API's limit)")
    with _demo_server(args) as url:
        faults = f", {args.fault_rate:.0%} faults" if args.fault_rate else ""
        print(
            f"demo API on {url}: {args.items} records, {args.per_page} a page, "
            f"{args.latency * 1000:g} ms latency{faults}; concurrency {args.concurrency}"
        )
        result = _runner.run(_stream_demo(url, args))
    _print_demo_summary(result)
    missing, duplicates = result["missing"], result["duplicates"]
    if missing or duplicates:
        print(f"FAILED: {missing} records missing, {duplicates} duplicated", file=sys.stderr)
        return 1
    print(
        "\nnext, try the command line against the demo API:\n"
        f"  {PROG} serve-demo --port 8080 --fault-rate 0.05   # also --style offset|cursor|"
        "next-url|link, --latency, --fail-page N, --token T\n"
        f"  {PROG} fetch http://127.0.0.1:8080/items -o items.jsonl\n"
        f"  {PROG} fetch --help                                # every option"
    )
    return 0


async def _stream_demo(url: str, args: argparse.Namespace) -> dict[str, Any]:
    seen = bytearray(args.items + 1)  # one byte a record id: proves each arrived exactly once
    duplicates = records = 0
    progress = _make_progress(args.no_progress, stderr=False)
    pages = stream(
        url,
        pages=PageNumber(start=1, size=args.per_page, total_pages="total_pages"),
        decode=ItemsPage,
        concurrency=args.concurrency,
        ordered=args.ordered,
    )
    try:
        async with pages:
            async for page in pages:
                for item in page.data.items:
                    if seen[item.id]:
                        duplicates += 1
                    seen[item.id] = 1
                records += len(page.data.items)
                stats = pages.stats
                progress.update(
                    _Snapshot(
                        stats.pages,
                        records,
                        page.data.total_pages,
                        stats.total_retries,
                        stats.failed,
                    )
                )
    finally:
        progress.close()
    stats = pages.stats
    return {
        "pages": stats.pages,
        "records": records,
        "seconds": stats.elapsed,
        "pages_per_second": stats.pages_per_second,
        "first_page_ms": (stats.time_to_first_page or 0.0) * 1000,
        "megabytes": stats.bytes / 1e6,
        "retries": stats.retries,
        "failed": stats.failed,
        "missing": args.items - sum(seen),
        "duplicates": duplicates,
    }


def _print_demo_summary(result: dict[str, Any]) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("pages", f"{result['pages']:,}"),
        (
            "records",
            f"{result['records']:,} ({result['missing']} missing, "
            f"{result['duplicates']} duplicated)",
        ),
        ("time", f"{result['seconds']:.2f} s"),
        ("pages/s", f"{result['pages_per_second']:,.0f}"),
        ("time to first page", f"{result['first_page_ms']:.1f} ms"),
        ("received", f"{result['megabytes']:.1f} MB"),
        ("retries", ", ".join(f"{n} {why}" for why, n in result["retries"].items()) or "0"),
        ("failed pages", str(result["failed"])),
        ("peak memory (RSS)", f"{peak_mb:.1f} MB"),
        ("event loop", "uvloop" if _runner.loop_factory() else "asyncio"),
    ]
    _print_table("streampage demo", rows, sys.stdout)

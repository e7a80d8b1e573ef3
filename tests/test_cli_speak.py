"""The command line speaks CLI: the library's messages reach the shell user naming options
(``--resume``, ``--pages``, ``-H``), never keyword arguments (``resume=True``, ``pages=...``,
``headers=``). speak() on the library's real messages (raised where that is practical, else
quoted from the source), then every error path of ``streampage fetch`` that can be reached,
end to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from conftest import PageServer
from conftest import cli_fetch as fetch
from yarl import URL

import streampage
from streampage import Cursor, Header, NextURL, Offset, PageNumber, RateLimit, RetryPolicy
from streampage import Timeout as TimeoutPolicy
from streampage._auto import describe
from streampage._checkpoint import Checkpoint, IncrementalState
from streampage._fingerprint import chosen_differs, numbering
from streampage._http import _too_large
from streampage._incremental import Incremental, check_stored
from streampage.cli import main
from streampage.cli._speak import speak
from streampage.demo import serve
from streampage.sinks._layout import check_format, check_names

# ---------------------------------------------------------------------- the check

#: The server's text in a line: its URLs and body excerpts may say anything.
_SERVERS = re.compile(
    r"""https?://[^\s'"]+|body starts with (?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
)
#: Python where a shell user should read options: a keyword argument with a Python value
#: or none (``verify=False``, ``checkpoint='a'``, ``pages=...``, ``(headers=)``), a
#: constructor with keyword arguments or none (``PageNumber(size=3)``, ``Cursor()``), the
#: library's classes and calls (``RetryPolicy``, ``stream()``).
_PYTHON = re.compile(
    r"(?<![\w?&./:='\"-])[a-z_]+=(?:True|False|None|\.\.\.|'|\"|\d|(?=[\s),;.]|$))"
    r"|\b[A-Z]\w*\((?:[a-z_]+=|\))"
    r"|\b(?:PageNumber|Offset|Cursor|NextURL|LinkHeader|JSONLines|Parquet|SQLite|Postgres)\("
    r"|\b(?:RetryPolicy|RateLimit|Timeout)\b|\b(?:stream|into)\(\)"
)


def python_forms(text: str) -> list[str]:
    """The Python forms in ``text``, outside the server's text."""
    return [m[0] for m in _PYTHON.finditer(_SERVERS.sub(" ", text))]


def assert_speaks_cli(stderr: str, *options: str) -> None:
    """``stderr`` names each of ``options`` and no keyword argument or Python call."""
    assert "Traceback" not in stderr, stderr
    found = python_forms(stderr)
    assert not found, f"Python {found} in: {stderr}"
    for option in options:
        assert option in stderr, f"{option!r} not in: {stderr}"


def test_the_check_finds_python_and_lets_options_and_server_text_be() -> None:
    for python in (
        "pass resume=True",
        "Name one with pages=...",
        "check the credentials (headers=)",
        "mode='replace'",
        "verify=False",
        "PageNumber(size=3, ...)",
        "looks paginated as Cursor()",
        "more time (RetryPolicy)",
        "Pass cross_origin=True",
    ):
        assert python_forms(python), python
    for cli in (
        "pass --resume, or --replace (-o items.jsonl)",
        "--expect page=page: the body's page is 1",
        "-p state=all",
        "page 3 (http://h/items?page=3&per_page=10&verify=False)",
        "HTTP 400 from http://h/x; body starts with 'mode=\\'replace\\' pages=...'",
        "sqlite:///x.db?table=items",
    ):
        assert not python_forms(cli), cli


# ---------------------------------------------------------------------- speak() itself


def logged(message: str, *args: object) -> str:
    """A log record's message, as logging makes it (the CLI's handler prints getMessage())."""
    record = logging.LogRecord("streampage", logging.INFO, __file__, 0, message, args, None)
    return record.getMessage()


def raised(make: Callable[[], object]) -> str:
    """The message of the library error ``make()`` raises."""
    with pytest.raises(streampage.ConfigurationError) as caught:
        make()
    return str(caught.value)


_JSONL = streampage.sinks.JSONLines("out/items.jsonl")
_SQLITE = streampage.sinks.SQLite("data/x.db", table="items")

# (the library's message, what the shell user reads)
_SPOKEN: list[tuple[Callable[[], str], str]] = [
    # _pagination.py, paginator arguments (the parser cannot catch these)
    (
        lambda: raised(lambda: PageNumber(start=5, stop=2)),
        "--stop 2 is before --start 5; --stop is the last page number to fetch (inclusive)",
    ),
    (
        lambda: raised(lambda: Offset(start=5, stop=2)),
        "--stop 2 is before --start 5; --stop is the offset past the last item (the item count)",
    ),
    (
        lambda: raised(lambda: PageNumber(total_items="meta.total")),
        "--total-items needs --size to turn an item count into a page count, e.g. "
        "--total-items meta.total --size 100",
    ),
    (
        lambda: raised(lambda: Offset(param="")),
        "--page-param and --size-param must name parameters",
    ),
    (lambda: raised(lambda: Cursor(param="")), "--cursor-param must name a query parameter"),
    (
        lambda: raised(lambda: RetryPolicy(attempts=0)),
        "--retries 0 must be >= 1 (1 disables retries)",
    ),
    (lambda: raised(lambda: RateLimit(20, burst=0)), "--burst 0 must be >= 1"),
    (lambda: raised(lambda: TimeoutPolicy(connect=0)), "--connect-timeout 0 must be > 0 or None"),
    # _stream.py, stream() arguments
    (
        lambda: raised(lambda: streampage.stream("http://h/x", concurrency=0)),
        "-c/--concurrency 0 must be a whole number >= 1",
    ),
    (
        lambda: raised(lambda: streampage.stream("http://h/x", max_pages=0)),
        "--max-pages 0 must be a whole number >= 1 or None",
    ),
    # _sources.py, credentials twice
    (
        lambda: raised(
            lambda: streampage.stream("http://u:p@h/x", headers={"Authorization": "Basic x"})
        ),
        "http://u:REDACTED@h/x carries credentials (user:password@) and -H gives an "
        "Authorization header too: send one or the other (-H 'Authorization: ...' or the "
        "URL's user:password@, not both)",
    ),
    # _auto.py, what pages=auto chose (logged), as the options that pin it
    (
        lambda: logged(
            "pages=auto chose %s for %s",
            describe(PageNumber(total_pages="total_pages")),
            "http://h/items",
        ),
        "--pages auto chose --pages page --total-pages total_pages for http://h/items",
    ),
    (
        lambda: logged(
            "pages=auto chose %s for %s",
            describe(
                PageNumber(
                    start=0,
                    param="p",
                    total_items=Header("X-Total-Count"),
                    size=30,
                    size_param=None,
                )
            ),
            "http://h/items?p=0",
        ),
        "--pages auto chose --pages page --start 0 --page-param p --size 30 "
        "--total-items header:X-Total-Count for http://h/items?p=0",
    ),
    (
        lambda: logged(
            "pages=auto chose %s for %s",
            describe(Offset(limit=10, param="skip", limit_param="take", total_items="total")),
            "http://h/items",
        ),
        "--pages auto chose --pages offset --size 10 --page-param skip --size-param take "
        "--total-items total for http://h/items",
    ),
    (
        lambda: logged(
            "pages=auto chose %s for %s", describe(NextURL(field="links.next")), "http://h"
        ),
        "--pages auto chose --pages next-url --next-field links.next for http://h",
    ),
    # _auto.py:428, two ways at once
    (
        lambda: (
            "pages=auto cannot tell how http://h/x paginates: the first response fits "
            f"{describe(NextURL(field='links.next'))} and {describe(Cursor())}. Name one with "
            "pages=..."
        ),
        "--pages auto cannot tell how http://h/x paginates: the first response fits --pages "
        "next-url --next-field links.next and --pages cursor. Name one with --pages",
    ),
    # _auto.py:485, a guessed page parameter the server does not take
    (
        lambda: (
            "pages=auto guessed that the query parameter 'page' selects pages, but page 2 "
            "(http://h/x?page=2) is empty although the first page says there is more: the server "
            "does not take 'page' as its page parameter. Name the paginator with pages=... (or "
            "put the API's own page parameter in the URL, e.g. ?_page=1)."
        ),
        "--pages auto guessed that the query parameter 'page' selects pages, but page 2 "
        "(http://h/x?page=2) is empty although the first page says there is more: the server "
        "does not take 'page' as its page parameter. Name the paginator with --pages (or "
        "put the API's own page parameter in the URL, e.g. ?_page=1).",
    ),
    # _auto.py:437 and :504 (logged)
    (
        lambda: (
            "pages=auto: no sign of pagination in the first response of http://h/x; it "
            "is the only page (name a paginator with pages=... if there are more)"
        ),
        "--pages auto: no sign of pagination in the first response of http://h/x; it is the "
        "only page (name a paginator with --pages if there are more)",
    ),
    # _into.py _check_choice, with _fingerprint's numbering
    (
        lambda: (
            f"{_JSONL!r} holds checkpoint 'default' of another source: "
            f"{chosen_differs({'pages': 'Auto()', 'chose': numbering(PageNumber())}, numbering(Offset(limit=10)))}"  # noqa: E501
            ". Name the paginator the earlier run used (pages=...), or start the target over "
            "with mode='replace' (--replace)"
        ),
        "out/items.jsonl holds checkpoint 'default' of another source: paginator was --pages "
        "page, now --pages auto chose --pages offset --size 10. Name the paginator the "
        "earlier run used (--pages), or start the target over with --replace",
    ),
    (
        lambda: (
            f"{_SQLITE!r} holds checkpoint 'default' of another source: paginator was "
            f"{numbering(PageNumber(start=0, param='p', size=50))!r}, now "
            f"{numbering(Cursor(param='after'))!r}. Resume with the same source, start the target "
            "over with mode='replace' (--replace), or write to a new target"
        ),
        "sqlite:///data/x.db?table=items holds checkpoint 'default' of another source: "
        "paginator was --pages page --page-param p --size 50, now --pages cursor "
        "--cursor-param after. Resume with the same source, start the target over with "
        "--replace, or write to a new target",
    ),
    (
        lambda: (
            f"{_JSONL!r} holds checkpoint 'default' of another source: "
            f"{chosen_differs({'pages': numbering(PageNumber())}, numbering(PageNumber(), -1))}"
            ". Name the paginator the earlier run used (pages=...), or start the target over "
            "with mode='replace' (--replace)"
        ),
        "out/items.jsonl holds checkpoint 'default' of another source: paginator was --pages "
        "page, now --pages auto chose --pages page --start 0. Name the paginator the earlier "
        "run used (--pages), or start the target over with --replace",
    ),
    # _into.py _check_resume
    (
        lambda: (
            f"{_SQLITE!r} holds checkpoint 'default' from a finished run (1,200 pages): "
            "pass mode='resume' (streampage fetch --resume) to go on from it, mode='replace' "
            "(--replace) to start the target over, or write to a new target"
        ),
        "sqlite:///data/x.db?table=items holds checkpoint 'default' from a finished run "
        "(1,200 pages): pass --resume to go on from it, --replace to start the target over, "
        "or write to a new target",
    ),
    # _into.py new_in_tail
    (
        lambda: (
            "page 12 (http://h/x?page=12), the last page of the finished run, no longer "
            "starts with the 7 records written of it (records were inserted before them, "
            "reordered or removed), so the new ones cannot be told apart. Start the target over "
            "with mode='replace' (streampage fetch --replace)"
        ),
        "page 12 (http://h/x?page=12), the last page of the finished run, no longer starts "
        "with the 7 records written of it (records were inserted before them, reordered or "
        "removed), so the new ones cannot be told apart. Start the target over with "
        "--replace",
    ),
    # _into.py _sink_error, a sink that failed (the Postgres repr has its password redacted)
    (
        lambda: (
            "Postgres('postgresql://u:REDACTED@db/x?sslmode=require', table='s.items') "
            "failed to commit: OSError: [Errno 28] No space left on device. 41 pages are "
            "committed; fix the cause and run again with resume=True (streampage fetch "
            "--resume): committed pages are not fetched again."
        ),
        "postgresql://u:REDACTED@db/x?sslmode=require&table=s.items failed to commit: "
        "OSError: [Errno 28] No space left on device. 41 pages are committed; fix the cause "
        "and run again with --resume: committed pages are not fetched again.",
    ),
    # sinks/_layout.py check_names
    (
        lambda: raised(
            lambda: check_names(SimpleNamespace(folder=False, path=Path("out/x.jsonl")), {"a"}, "b")
        ),
        "out/x.jsonl holds checkpoint 'a', not 'b': a file holds one output, so one "
        "checkpoint. Pass --checkpoint a to go on with it, or --replace to start it over",
    ),
    (
        lambda: raised(
            lambda: check_names(
                SimpleNamespace(folder=False, path=Path("x.jsonl")), {"a b", "c"}, "d"
            )
        ),
        "x.jsonl holds checkpoints 'a b' and 'c', not 'd': a file holds one output, so one "
        "checkpoint. Pass --replace to start it over",
    ),
    # sinks/_layout.py check_format: a folder (options exist), a file (its name says)
    (
        lambda: raised(
            lambda: check_format(
                SimpleNamespace(format="parquet", folder=True, path=Path("out"), state="s"),
                "",
                {"jsonl": "part-1.jsonl", "jsonl.gz": "part-2.jsonl.gz"},
            )
        ),
        "out/ holds JSON Lines (part-1.jsonl) and gzip JSON Lines (part-2.jsonl.gz), not "
        "Parquet: a folder holds one format. Go on with it as --format jsonl or --format "
        "jsonl.gz, or write Parquet to another folder (or remove the folder to start it over)",
    ),
    (
        lambda: raised(
            lambda: check_format(
                SimpleNamespace(format="jsonl", folder=False, path=Path("x.jsonl"), state="s"),
                "",
                {"parquet": "x.jsonl"},
            )
        ),
        "x.jsonl holds Parquet (x.jsonl), not JSON Lines: a file holds one format. Write "
        "JSON Lines to another file (or remove it and s to start it over)",
    ),
    # _http.py _too_large, and a body that drips (Timeout(min_rate=))
    (
        lambda: str(_too_large(3, URL("http://h/x?page=3"), 100, "Content-Length is 709")),
        "page 3: the response from http://h/x?page=3 is larger than --max-page-bytes 100 "
        "(Content-Length is 709); raise --max-page-bytes if such pages are expected",
    ),
    (
        lambda: (
            "page 2: request to http://h/x?page=2 failed: the body arrives at 312 "
            "bytes/s after 10.5 s, under Timeout(min_rate=1024)"
        ),
        "page 2: request to http://h/x?page=2 failed: the body arrives at 312 bytes/s after "
        "10.5 s, under --min-rate 1024",
    ),
    # _engine.py _status_error hints
    (
        lambda: (
            "page 1: HTTP 403 Forbidden from http://h/x; body starts with 'no'. Check the "
            "credentials (headers=) and that they grant access to this URL."
        ),
        "page 1: HTTP 403 Forbidden from http://h/x; body starts with 'no'. Check the "
        "credentials (-H) and that they grant access to this URL.",
    ),
    (
        lambda: (
            "page 9: HTTP 429 Too Many Requests from http://h/x?page=9; body starts with "
            "''. The server throttles: lower concurrency= or set rate=, and give retries more "
            "time (RetryPolicy)."
        ),
        "page 9: HTTP 429 Too Many Requests from http://h/x?page=9; body starts with ''. The "
        "server throttles: lower -c/--concurrency or set --rate, and allow more attempts "
        "(--retries).",
    ),
    (
        lambda: (
            "page 9: HTTP 429 Too Many Requests from http://h/x; body starts with ''. "
            "The server asks to wait 3600 s, more than RetryPolicy(max_retry_after=120); raise "
            "that bound to wait it out, or try again later."
        ),
        "page 9: HTTP 429 Too Many Requests from http://h/x; body starts with ''. The server "
        "asks to wait 3600 s, more than the longest wait allowed (120 s); try again later.",
    ),
    (
        lambda: (
            "page 1: HTTP 400 Bad Request from http://h/x?per_page=500; body starts with "
            "'per_page=500 is too many'. No page has succeeded yet, so this is likely the "
            "request itself, not a transient fault: check the URL, params= and the paginator's "
            "parameter names."
        ),
        "page 1: HTTP 400 Bad Request from http://h/x?per_page=500; body starts with "
        "'per_page=500 is too many'. No page has succeeded yet, so this is likely the "
        "request itself, not a transient fault: check the URL, -p and the paginator's "
        "parameter names (--page-param, --size-param, --cursor-param).",
    ),
    # _engine.py _validated, a page --expect rejected
    (
        lambda: (
            "page 4 was rejected: validate= raised ValueError: --expect page=page: the "
            "body's page is 1, the request's page is '4' (url: http://h/x?page=4)"
        ),
        "page 4 was rejected: --expect page=page: the body's page is 1, the request's page "
        "is '4' (url: http://h/x?page=4)",
    ),
    # _evidence.py _error
    (
        lambda: (
            "http://h/x: delivered 10 records, but the server reported 300 (header "
            "X-Total-Count). Likely causes: the paginator stopped early or skipped pages, or the "
            "records are counted from the wrong list (name it with items= or records). If header "
            "X-Total-Count does not count the records (a sum, say), pass verify=False "
            "(streampage fetch --no-verify)."
        ),
        "http://h/x: delivered 10 records, but the server reported 300 (header "
        "X-Total-Count). Likely causes: the paginator stopped early or skipped pages, or the "
        "records are counted from the wrong list (name it with --records PATH). If header "
        "X-Total-Count does not count the records (a sum, say), pass --no-verify.",
    ),
    # _pagination.py _check_cap and _check_fields
    (
        lambda: (
            "page 1 (http://h/x?per_page=10&page=1) holds 3 records where size=10 was "
            "asked, and the total says 30: the server caps the page size at 3, so a page count "
            "based on 10 would skip records. Ask for PageNumber(size=3, ...) (streampage fetch "
            "--size 3)."
        ),
        "page 1 (http://h/x?per_page=10&page=1) holds 3 records where --size 10 was asked, "
        "and the total says 30: the server caps the page size at 3, so a page count based on "
        "10 would skip records. Ask for --size 3.",
    ),
    (
        lambda: (
            "PageNumber(total_items=Header('X-Total')): the first response (http://h/x) "
            "has no X-Total header; it has: Content-Type, Link"
        ),
        "--total-items header:X-Total: the first response (http://h/x) has no X-Total "
        "header; it has: Content-Type, Link",
    ),
    (
        lambda: (
            "PageNumber(items='data.rows'): the first page (http://h/x) has no field "
            "'data.rows'; its keys are: data, meta. Name the field that holds it."
        ),
        "--records data.rows: the first page (http://h/x) has no field 'data.rows'; its keys "
        "are: data, meta. Name the field that holds it.",
    ),
    (
        lambda: (
            "Offset(has_more='more'): the first page (http://h/x) has no field 'more'; "
            "its keys are: items. Name the field that holds it."
        ),
        "--has-more more: the first page (http://h/x) has no field 'more'; its keys are: "
        "items. Name the field that holds it.",
    ),
    # _walks.py: a named field absent, a cursor that is a URL, a loop, another origin
    (
        lambda: (
            "NextURL(field='next'): the first page (http://h/x) has no field 'next'; its "
            f"keys are: items, next_cursor, and it looks paginated as {describe(Cursor())}. Name "
            "the field that holds the next page's URL (or leave pages= out to let streampage "
            "pick the paginator)."
        ),
        "--next-field next: the first page (http://h/x) has no field 'next'; its keys are: "
        "items, next_cursor, and it looks paginated as --pages cursor. Name the field that "
        "holds the next page's URL (or leave --pages out to let streampage pick the "
        "paginator).",
    ),
    (
        lambda: (
            "Cursor(field='links.n') holds a whole URL (http://h/x?after=3), not a "
            "cursor: it is a next link. Use NextURL(field='links.n') (streampage fetch --pages "
            "next-url), which follows it as it is."
        ),
        "--cursor-field links.n holds a whole URL (http://h/x?after=3), not a cursor: it is "
        "a next link. Use --pages next-url --next-field links.n, which follows it as it is.",
    ),
    (
        lambda: (
            "page 5 (http://h/x?c=abc): cursor 'abc' came up before: the pagination "
            "loops. Check that Cursor(field='meta.next') names the field of the *next* cursor."
        ),
        "page 5 (http://h/x?c=abc): cursor 'abc' came up before: the pagination loops. Check "
        "that --cursor-field meta.next names the field of the *next* cursor.",
    ),
    (
        lambda: (
            "page 3 (http://h/x): the next URL points to another origin "
            "(http://cdn.example), where the stream's credentials must not go. Pass "
            "cross_origin=True to the paginator to follow it anyway (secret headers are then "
            "not sent there)."
        ),
        "page 3 (http://h/x): the next URL points to another origin (http://cdn.example), "
        "where the stream's credentials must not go. Pass --cross-origin to follow it anyway "
        "(secret headers are then not sent there).",
    ),
    # sinks/parquet.py in a SinkError (no option gives a schema)
    (
        lambda: (
            "Parquet('out.parquet') failed to write: ValueError: the records do not fit "
            "one Parquet schema (int64 vs string); pass Parquet(schema=...), a pyarrow.Schema or "
            "a msgspec.Struct type. 0 pages are committed; fix the cause and run again with "
            "resume=True (streampage fetch --resume): committed pages are not fetched again."
        ),
        "out.parquet failed to write: ValueError: the records do not fit one Parquet schema "
        "(int64 vs string); write JSON Lines instead (-o FILE.jsonl), or give the library's "
        "Parquet sink a schema (a pyarrow.Schema or a msgspec.Struct type). 0 pages are "
        "committed; fix the cause and run again with --resume: committed pages are not "
        "fetched again.",
    ),
    # sinks/sqlite.py, sinks/postgres.py, a checkpoint of an earlier version
    (
        lambda: (
            "x.db holds a checkpoint 'default' of an earlier streampage version, kept for "
            "the whole database, and table items holds rows: if they are that checkpoint's, "
            "claim it for the table with UPDATE streampage_checkpoints SET name = 'items/default' "
            "WHERE name = 'default'; or start the table over (mode='replace', --replace)"
        ),
        "x.db holds a checkpoint 'default' of an earlier streampage version, kept for the "
        "whole database, and table items holds rows: if they are that checkpoint's, claim it "
        "for the table with UPDATE streampage_checkpoints SET name = 'items/default' WHERE "
        "name = 'default'; or start the table over (--replace)",
    ),
    # distributed/_dask.py
    (
        lambda: (
            "job 'j' in Parquet('out/') is another job: pages per shard (shard_size=, "
            "--shards) was 30, now 50. Run it as it was to go on with it, or give this one "
            "another job name (job=, --job)"
        ),
        "job 'j' in out/ is another job: pages per shard (--shards) was 30, now 50. Run it "
        "as it was to go on with it, or give this one another job name (--job)",
    ),
    (
        lambda: "cluster='local:x': say 'local:N' for a local cluster of N workers",
        "--cluster local:x: write local:N for a local cluster of N workers",
    ),
    (
        lambda: (
            "cluster='x': pass None (a local cluster), 'local:N', a scheduler address "
            "('tcp://host:8786') or a distributed.Client"
        ),
        "--cluster x: write local, local:N or a scheduler's address (tcp://host:8786)",
    ),
    (
        lambda: (
            "job='a b' must be a name of letters, digits, '.', '_' and '-' (it names the "
            "job's checkpoint and its part files)"
        ),
        "--job 'a b' must be a name of letters, digits, '.', '_' and '-' (it names the job's "
        "checkpoint and its part files)",
    ),
    # _incremental.py: a checkpoint of incremental runs, and one that is not
    (
        lambda: raised(lambda: check_stored(_JSONL, "default", None, _incremental_checkpoint())),
        "out/items.jsonl holds checkpoint 'default' of incremental runs on 'updated_at': go on "
        "with them with --incremental updated_at --since-param updated_since, or start the "
        "target over with --replace",
    ),
    (
        lambda: raised(
            lambda: check_stored(_SQLITE, "orders", Incremental("updated_at"), Checkpoint())
        ),
        "sqlite:///data/x.db?table=items holds checkpoint 'orders' of a run that was not "
        "incremental: the highest 'updated_at' of its records is unknown, so nothing tells what "
        "is new. Start the target over with --replace, or write to a new target",
    ),
    (
        lambda: raised(
            lambda: check_stored(
                _JSONL, "default", Incremental("updated_at"), _incremental_checkpoint(False)
            )
        ),
        "out/items.jsonl holds checkpoint 'default' of an incremental run cut short, which sent "
        "its since value as the parameter 'updated_since', and this run in none; its committed "
        "pages are pages of that query. End it with --incremental updated_at --since-param "
        "updated_since, or start the target over with --replace",
    ),
    (
        lambda: raised(lambda: Incremental("a", param="")),
        "--since-param '' must name a query parameter (leave it out when the API has none)",
    ),
    (
        lambda: logged(
            "incremental: no parameter sends the server the value of %r to fetch from "
            "(param=, --since-param): every page is fetched, and records before %r are left "
            "out here",
            "updated_at",
            "2024-05-01T00:00:18Z",
        ),
        "incremental: no parameter sends the server the value of 'updated_at' to fetch from "
        "(--since-param): every page is fetched, and records before '2024-05-01T00:00:18Z' are "
        "left out here",
    ),
    (
        lambda: (
            "page 3 (http://h/x?page=3): the incremental field 'updatedAt' of a record is "
            "missing; the record's keys are: id, name. Name the field that says when a record "
            "changed with Incremental(field=...)"
        ),
        "page 3 (http://h/x?page=3): the incremental field 'updatedAt' of a record is missing; "
        "the record's keys are: id, name. Name the field that says when a record changed with "
        "--incremental",
    ),
    (
        lambda: (
            "the query parameter 'updated_since' is given (params= or the URL) and "
            "Incremental(field='updated_at', param='updated_since') (streampage fetch "
            "--incremental updated_at --since-param updated_since) sends it too: give it one way"
        ),
        "the query parameter 'updated_since' is given (-p or the URL) and --incremental "
        "updated_at --since-param updated_since sends it too: give it one way",
    ),
]


def _incremental_checkpoint(finished: bool = True) -> Checkpoint:
    """A checkpoint of incremental runs on updated_at, sent as updated_since."""
    checkpoint = Checkpoint(fingerprint={"url": "http://h/x"}, finished=finished)
    checkpoint.incremental = IncrementalState("updated_at", "updated_since", since="2024")
    return checkpoint


@pytest.mark.parametrize(("message", "spoken"), _SPOKEN)
def test_library_messages_are_spoken_as_options(message: Callable[[], str], spoken: str) -> None:
    said = message()
    assert python_forms(said), f"not a message with Python in it: {said}"
    assert speak(said) == spoken
    assert_speaks_cli(speak(said))
    assert speak(spoken) == spoken  # spoken once is spoken


@pytest.mark.parametrize(("message", "spoken"), _SPOKEN)
def test_no_information_is_lost(message: Callable[[], str], spoken: str) -> None:
    # page numbers, counts, URLs and the names the user gave are all still there
    said = message()
    kept = re.findall(r"https?://[^\s'\"]+|(?<![\w+-])\d[\d,.]*\d|(?<![\w+-])\d", said)
    kept += re.findall(r"'([^'\s]*)'", _SERVERS.sub(" ", said))
    for piece in kept:
        if piece not in ("None", "...") and not piece.startswith("n+"):
            assert piece.rstrip(".") in speak(said), (piece, speak(said))


@pytest.mark.parametrize(
    "message",
    [
        # the command line's own messages
        "--resume needs an output target with a checkpoint (-o items.jsonl, sqlite:///..., "
        "postgresql://..., x.parquet), not stdout",
        "'a=1': write FIELD=PARAM, e.g. page=page (the body's page field equals the "
        "request's ?page=)",
        "a query parameter is written key=value",
        "--expect size=3: the body's size is 1, the request's size is '3'",
        "-p start=5 is given twice; put repeated parameters in the URL",
        "output 'x.db?table=a-b': write sqlite:///relative/path.db?table=NAME",
        "records: the items of 'items' in each page (--records auto)",
        # the library's messages without Python in them
        "page 2 has the same body as page 1 (http://h/x?page=2&size=10&mode=replace is "
        "page 2): the server ignores the parameter 'page', so every page would be the first "
        "again. Check the paginator's parameter name against the API's documentation.",
        "another run holds the checkpoint of out.jsonl (since 2024-01-01, pid 7 on host h): "
        "wait for it to end, or stop it (its committed pages stay; a later --resume goes on "
        "from them)",
        "retrying page 3 in 0.04 s after status 500: page 3: HTTP 500 Internal Server Error "
        "from http://h/x?page=3; body starts with 'mode=\\'replace\\' (--replace) "
        "pages=... size=5 PageNumber(size=5) RetryPolicy'. The server failed to answer: a "
        "transient fault, tried again if retries allow.",
        "page 1 is not valid JSON: unexpected character (url: http://h/x?verify=False); body "
        'starts with "<html>resume=True</html>"',
        "page 1: request to http://h/x?concurrency=3 failed: Cannot connect to host h:80",
    ],
)
def test_a_message_without_python_is_left_as_it_is(message: str) -> None:
    assert speak(message) == message


def test_speak_is_cheap() -> None:
    said = [message() for message, _ in _SPOKEN]
    started = time.perf_counter()
    for _ in range(20):
        for text in said:
            speak(text)
    each = (time.perf_counter() - started) / (20 * len(said))
    assert each < 0.002, f"{each * 1e6:.0f} µs a message"


# ---------------------------------------------------------------------- end to end

UNUSED = "http://127.0.0.1:9/items"  # nothing is fetched: the error comes first


def usage(args: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """`fetch ARGS` in this process, for errors found before any request: its stderr."""
    try:
        got = main(["fetch", *args])
    except SystemExit as exc:  # argparse
        got = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert got == code, err
    assert out == ""
    return err


@contextlib.asynccontextmanager
async def demo_api(**options: Any) -> AsyncIterator[str]:
    """The demo API in this process; yields its URL."""
    options = {"items": 60, "latency": 0, "per_page": 10, **options}
    runner, url = await serve(**options)
    try:
        yield url
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def one_route(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """An API of one route, ``handler``; yields its URL."""
    app = web.Application()
    app.router.add_get("/items", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/items"
    finally:
        await runner.cleanup()


def test_replace_with_resume(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage([UNUSED, "-o", "x.jsonl", "--replace", "--resume"], capsys)
    assert_speaks_cli(err, "--replace", "--resume")


def test_stop_before_start(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage([UNUSED, "--pages", "page", "--start", "5", "--stop", "2"], capsys)
    assert_speaks_cli(err, "--stop 2", "--start 5")


def test_total_items_without_a_size(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage([UNUSED, "--pages", "page", "--total-items", "meta.total"], capsys)
    assert_speaks_cli(err, "--total-items", "--size")


def test_credentials_twice(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://me:pw@127.0.0.1:9/items"
    err = usage([url, "-H", "Authorization: Bearer t0ken"], capsys)
    assert_speaks_cli(err, "-H", "user:password@")
    assert "t0ken" not in err


def test_format_on_a_file_target(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = usage([UNUSED, "-o", str(tmp_path / "x.jsonl"), "--format", "jsonl"], capsys)
    assert_speaks_cli(err, "--format", "-o")


def test_cluster_without_shards(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage([UNUSED, "--cluster", "local:2"], capsys)
    assert_speaks_cli(err, "--cluster", "--shards")


async def test_a_wrong_records_path() -> None:
    async with demo_api() as url:
        run = await fetch(url, "--records", "nope.items", "-q")
    assert run.code == 2, run
    assert_speaks_cli(run.err, "'nope.items'", "--records PATH")


async def test_a_total_field_that_is_not_there() -> None:
    async with demo_api() as url:
        run = await fetch(url, "--pages", "page", "--total-pages", "nope", "-q")
    assert run.code == 2, run
    assert_speaks_cli(run.err, "--total-pages nope", "total_pages")


async def test_401_without_credentials() -> None:
    async with demo_api(token="s3cret") as url:
        run = await fetch(url, "-q")
    assert run.code == 1, run
    assert_speaks_cli(run.err, "HTTP 401", "(-H)")


async def test_404_on_the_first_page() -> None:
    async with demo_api() as url:
        run = await fetch(url.replace("/items", "/nothing"), "-q")
    assert run.code == 1, run
    assert_speaks_cli(run.err, "HTTP 404", "-p", "--page-param")


async def test_a_server_that_caps_the_page_size(
    page_server: Callable[..., Awaitable[PageServer]],
) -> None:
    server = await page_server(pages=10, per_page=3, extra=lambda n: {"total": 30})
    run = await fetch(server.url, "--pages", "page", "--size", "10", "--total-items", "total")
    assert run.code == 1, run
    assert_speaks_cli(run.err, "where --size 10 was asked", "Ask for --size 3.")


async def test_a_named_field_of_another_style() -> None:
    # --pages next-url against a cursor API: its field is not there, and the API looks
    # paginated another way, said as the options that pin it
    async with demo_api(style="cursor") as url:
        run = await fetch(url, "--pages", "next-url", "-q")
    assert run.code == 2, run
    assert_speaks_cli(run.err, "--next-field next", "--pages cursor", "leave --pages out")


async def test_page_numbers_against_a_cursor_api() -> None:
    async with demo_api(style="cursor") as url:
        run = await fetch(url, "--pages", "page", "-q")
    assert run.code == 1, run
    assert_speaks_cli(run.err, "ignores the parameter 'page'", "--pages, --page-param")


async def test_a_cursor_field_holding_a_url() -> None:
    async with demo_api(style="next-url") as url:
        run = await fetch(url, "--pages", "cursor", "--cursor-field", "next", "-q")
    assert run.code == 2, run
    assert_speaks_cli(run.err, "--cursor-field next", "Use --pages next-url")


async def test_a_response_that_points_two_ways(
    page_server: Callable[..., Awaitable[PageServer]],
) -> None:
    server = await page_server(
        pages=3, extra=lambda n: {"next": f"/items?page={n + 1}", "next_cursor": "c"}
    )
    run = await fetch(server.url, "-q")
    assert run.code == 1, run
    assert_speaks_cli(run.err, "--pages auto cannot tell", "--pages next-url", "--pages cursor")


async def test_a_next_link_to_another_origin(
    page_server: Callable[..., Awaitable[PageServer]],
) -> None:
    server = await page_server(pages=3, extra=lambda n: {"next": "http://other.invalid/x"})
    run = await fetch(server.url, "--pages", "next-url", "-q")
    assert run.code == 1, run
    assert_speaks_cli(run.err, "Pass --cross-origin to follow it", "http://other.invalid")


async def test_503_and_its_retries_logged(
    page_server: Callable[..., Awaitable[PageServer]],
) -> None:
    # the error and the library's log lines (-v: the retry, the failure) alike
    server = await page_server(pages=3, fail={1: 503})
    run = await fetch(server.url, "--retries", "2", "-v", "--no-progress")
    assert run.code == 1, run
    assert "retrying page 1" in run.err
    assert_speaks_cli(run.err, "allow more attempts (--retries)")
    assert run.err.count("(--retries)") >= 3


async def test_429_asking_for_a_longer_wait_than_allowed() -> None:
    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=429, text="slow down", headers={"Retry-After": "3600"})

    async with one_route(busy) as url:
        run = await fetch(url, "-q")
    assert run.code == 1, run
    assert_speaks_cli(run.err, "wait 3600 s", "longest wait allowed (120 s); try again later")


async def test_a_page_larger_than_allowed() -> None:
    async with demo_api() as url:
        run = await fetch(url, "--max-page-bytes", "100", "--retries", "1", "-q")
    assert run.code == 1, run
    assert_speaks_cli(run.err, "--max-page-bytes 100", "raise --max-page-bytes")


async def test_a_page_expect_rejects(page_server: Callable[..., Awaitable[PageServer]]) -> None:
    server = await page_server(pages=3)
    args = ["--pages", "page", "--stop", "3", "--expect", "page=nope", "--retries", "1", "-q"]
    run = await fetch(server.url, *args)
    assert run.code == 1, run
    assert_speaks_cli(run.err, "was rejected: --expect page=nope:")


async def test_a_target_that_holds_a_finished_run(tmp_path: Path) -> None:
    out, db = tmp_path / "items.jsonl", tmp_path / "x.db"
    async with demo_api() as url:
        for target in (str(out), f"sqlite:///{db}?table=t"):
            first = await fetch(url, "-o", target, "-q")
            again = await fetch(url, "-o", target, "-q")
            assert first.code == 0, first
            assert again.code == 2, again
            assert_speaks_cli(again.err, "pass --resume", "--replace to start the target over")
    assert f"sqlite:///{db}?table=t holds checkpoint" in again.err


async def test_a_target_that_holds_another_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "items.jsonl"
    async with demo_api() as url:
        first = await fetch(url, "-o", str(out), "-q")
        other = await fetch(url, "-o", str(out), "--checkpoint", "other", "-q")
    assert first.code == 0, first
    assert other.code == 2, other
    assert_speaks_cli(other.err, "Pass --checkpoint default", "--replace")


async def test_a_resume_of_another_source(tmp_path: Path) -> None:
    out = tmp_path / "items.jsonl"
    async with demo_api() as url, demo_api(style="cursor") as cursors:
        first = await fetch(url, "-o", str(out), "-q")
        other = await fetch(cursors, "-o", str(out), "--resume", "-q")
    assert first.code == 0, first
    assert other.code == 2, other
    assert_speaks_cli(other.err, f"{out} holds checkpoint 'default' of another source", "--replace")


async def test_a_checkpoint_in_use(
    page_server: Callable[..., Awaitable[PageServer]], tmp_path: Path
) -> None:
    server = await page_server(pages=3)
    gate = server.hold(1)
    out = str(tmp_path / "items.jsonl")
    first = asyncio.create_task(fetch(server.url, "-o", out, "-q"))
    try:
        await server.wait_for(lambda: bool(server.requests), within=20)
        second = await fetch(server.url, "-o", out, "-q")
    finally:
        gate.set()
        done = await first
    assert done.code == 0, done
    assert second.code == 1, second
    assert_speaks_cli(second.err, "another run holds", "--resume")


async def test_an_incomplete_run(tmp_path: Path) -> None:
    # --pages link on a page-number API: one page, where X-Total-Count says 60 records
    async with demo_api() as url:
        run = await fetch(url, "--pages", "link", "-o", str(tmp_path / "x.jsonl"))
    assert run.code == 1, run
    assert_speaks_cli(run.err, "delivered 10 records", "--records PATH", "pass --no-verify")


async def test_records_that_do_not_fit_one_parquet_schema(
    page_server: Callable[..., Awaitable[PageServer]], tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    raw = {1: b'{"items": [{"id": 1}]}', 2: b'{"items": [{"id": "x"}]}'}
    server = await page_server(pages=2, raw=raw)
    out = tmp_path / "x.parquet"
    args = ["--pages", "page", "--stop", "2", "--batch", "1", "-o", str(out), "-q"]
    run = await fetch(server.url, *args)
    assert run.code == 1, run
    assert_speaks_cli(run.err, f"{out} failed to", "-o FILE.jsonl", "--resume")

"""The plan of a fetch: its options, checked, as the stream's arguments, its target and
its records; options that do not apply are an error rather than silently ignored."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .._decode import get_path
from .._incremental import Incremental
from .._pagination import Header, Offset, PageNumber, Paginator
from .._policy import RateLimit, RetryPolicy, Timeout
from .._walks import Cursor, LinkHeader, NextURL
from ..auth import APIKey, Auth, Basic, Bearer, OAuth2ClientCredentials
from . import UsageError
from ._records import _records_of, _Spec
from ._targets import _check_file, _Target, _target

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


def _implied(args: argparse.Namespace) -> str:
    """The style the paginator options given imply when --pages is not: the only style they
    all apply to (--total-pages: page; --cursor-field: cursor); auto when none is given;
    an error naming the choices when they fit more than one (--total-items: page or
    offset)."""
    given = [dest for dest in _APPLIES if getattr(args, dest) is not None]
    if not given:
        return "auto"
    fits = set.intersection(*(set(_APPLIES[dest]) for dest in given))
    if len(fits) == 1:
        return fits.pop()
    named = " ".join(_option(dest) for dest in given)
    if not fits:
        raise UsageError(f"{named} belong to different --pages styles: name the style")
    choices = " or ".join(f"--pages {s}" for s in sorted(fits))
    raise UsageError(f"{named} fits {choices}: say which with --pages")


def _paginator(args: argparse.Namespace, items: str | None) -> Paginator | None:
    """The paginator the options describe (None: pages=auto); options that do not apply
    to the chosen style are an error rather than silently ignored."""
    style = args.pages or _implied(args)
    args.pages = style
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


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

#: the options of each --auth kind
_AUTH_OPTIONS = {
    "token_env": "bearer",
    "password_env": "basic",
    "api_key_header": "apikey",
    "api_key_param": "apikey",
    "api_key_env": "apikey",
    "token_url": "oauth2",
    "client_id": "oauth2",
    "client_secret_env": "oauth2",
    "scope": "oauth2",
    "audience": "oauth2",
}


def _env(args: argparse.Namespace, dest: str) -> str:
    """The secret in the environment variable that option ``dest`` names."""
    var = getattr(args, dest)
    option = _option(dest)
    if var is None:
        raise UsageError(f"--auth {args.auth} needs {option} VAR (the secret is read from VAR)")
    value = os.environ.get(var)
    if not value:
        raise UsageError(f"{option} {var}: the environment variable {var} is not set, or empty")
    if "\r" in value or "\n" in value:
        raise UsageError(f"{option} {var}: the value holds a line break")
    return value


def _auth(args: argparse.Namespace, headers: dict[str, str], params: dict[str, str]) -> Auth | None:
    """The auth= object --auth and its options describe (its kind implied by them when
    --auth is not given); options of another kind are an error, not ignored."""
    given = [dest for dest in _AUTH_OPTIONS if getattr(args, dest) is not None]
    kinds = {_AUTH_OPTIONS[dest] for dest in given}
    user = getattr(args, "user", None)
    if args.auth is None and len(kinds) > 1:
        named = " ".join(_option(dest) for dest in given)
        raise UsageError(f"{named} belong to different --auth kinds: name the kind")
    kind = args.auth or (kinds.pop() if kinds else None)
    args.auth = kind
    if user is not None and ":" not in user and kind != "basic":
        raise UsageError(
            "-u: credentials are written user:password (or -u USER --password-env VAR)"
        )
    if kind is None:
        return None
    for dest in given:
        if _AUTH_OPTIONS[dest] != kind:
            raise UsageError(f"{_option(dest)} applies to --auth {_AUTH_OPTIONS[dest]}, not {kind}")
    sends_authorization = kind in ("bearer", "oauth2") or (kind == "basic" and user is not None)
    if kind != "basic" and user is not None:
        raise UsageError(f"-u and --auth {kind} both send credentials: give one")
    try:
        parts = urlsplit(args.url)
        userinfo = parts.username is not None or parts.password is not None
    except ValueError:
        userinfo = False  # the stream says what is wrong with the URL
    if sends_authorization and userinfo:
        raise UsageError(
            f"the URL carries credentials (user:password@) and --auth {kind} sends an "
            "Authorization header too: give one"
        )
    if kind == "basic":
        if user is None:
            raise UsageError("--auth basic needs -u USER (and --password-env VAR)")
        name, sep, _ = user.partition(":")
        if sep:
            if args.password_env is not None:
                raise UsageError("-u USER:PASSWORD and --password-env both give a password")
            return None  # -u user:password is already an Authorization header
        return Basic(name, _env(args, "password_env"))
    if sends_authorization and any(h.lower() == "authorization" for h in headers):
        raise UsageError(f"-H Authorization and --auth {kind} both send credentials: give one")
    if kind == "bearer":
        return Bearer(_env(args, "token_env"))
    if kind == "apikey":
        header, param = args.api_key_header, args.api_key_param
        if (header is None) == (param is None):
            raise UsageError("--auth apikey needs --api-key-header NAME or --api-key-param NAME")
        value = _env(args, "api_key_env")
        if header is not None:
            if not _HEADER_NAME.fullmatch(header):
                raise UsageError(f"--api-key-header {shlex.quote(header)} is not a header name")
            if any(h.lower() == header.lower() for h in headers):
                raise UsageError(f"-H {header} and --api-key-header {header} both send it")
            return APIKey(header, value, where="header")
        if param in params:
            raise UsageError(f"-p {param} and --api-key-param {param} both send it")
        return APIKey(param, value, where="query")
    for dest in ("token_url", "client_id"):
        if getattr(args, dest) is None:
            raise UsageError(f"--auth oauth2 needs {_option(dest)}")
    if not args.token_url.startswith(("http://", "https://")):
        raise UsageError("--token-url must be an http(s) URL")
    return OAuth2ClientCredentials(
        args.token_url,
        args.client_id,
        _env(args, "client_secret_env"),
        scope=args.scope,
        audience=args.audience,
    )


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


@dataclass
class _Plan:
    url: str
    paginator: Paginator | None
    options: dict[str, Any]
    target: _Target
    records: Callable[[Any], list[Any]]
    #: the pages this run delivers, for the bar and its ETA, once the stream knows
    total: int | None
    stats_json: str | None
    #: --incremental FIELD [--since-param NAME]
    incremental: Incremental | None = None


def make_plan(args: argparse.Namespace, announce: Callable[[str], None]) -> _Plan:
    target = _target(args.output, args.create_dirs, args.format, args.primary_key)
    incremental = _incremental(args)
    if target.sink is None:
        for given, option in (
            (args.resume, "--resume"),
            (args.replace, "--replace"),
            (args.checkpoint is not None, "--checkpoint"),
            (args.batch is not None, "--batch"),
            (incremental is not None, "--incremental"),
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
            also = " (-u sends one)" if name.lower() == "authorization" else ""
            raise UsageError(f"-H {name} is given twice{also}")
        headers[name] = value
    params: dict[str, str] = {}
    for key, value in args.params:
        if key in params:
            raise UsageError(f"-p {key} is given twice; put repeated parameters in the URL")
        params[key] = value
    auth = _auth(args, headers, params)
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
        "auth": auth,
    }
    plan = _Plan(
        url=args.url,
        paginator=_paginator(args, record_path),
        options=options,
        target=target,
        records=records,
        # at most --max-pages until the stream tells the total (TotalDiscovered); a resume
        # (an incremental run's too) skips an unknown number of committed pages
        total=None if args.resume or incremental is not None else args.max_pages,
        stats_json=args.stats_json,
        incremental=incremental,
    )
    return plan


def _incremental(args: argparse.Namespace) -> Incremental | None:
    """``--incremental FIELD [--since-param NAME]``."""
    if args.incremental is None:
        if args.since_param is not None:
            raise UsageError("--since-param applies to --incremental FIELD: add it")
        return None
    if args.shards is not None:
        raise UsageError(
            "--incremental applies to a run on one machine, not --shards: its pass carries "
            "one value of the field from run to run"
        )
    return Incremental(args.incremental, args.since_param)


def as_options(pages: Any) -> str:
    """The options that pin a paginator (what ``--pages auto`` chose), or that make an
    Incremental, as make_plan reads them back: options at their defaults are left out."""
    if isinstance(pages, Incremental):
        said = [f"--incremental {_q(pages.field)}"]
        if pages.param is not None:
            said.append(f"--since-param {_q(pages.param)}")
        if pages.start is not None:
            said.append(f"(start {_q(str(pages.start))}: no option)")
        return " ".join(said)
    if isinstance(pages, PageNumber):
        said = ["--pages page"]
        if pages.param != "page":
            said.append(f"--page-param {_q(pages.param)}")
        if pages.start != 1:
            said.append(f"--start {pages.start}")
        if pages.stop is not None:
            said.append(f"--stop {pages.stop}")
        if pages.size is not None and (pages.size_param is not None or pages.total_items):
            said.append(f"--size {pages.size}")
            if pages.size_param not in (None, "per_page"):
                said.append(f"--size-param {_q(pages.size_param)}")
        said += _totals(pages)
        return " ".join(said)
    if isinstance(pages, Offset):
        said = ["--pages offset"]
        if pages.param != "offset":
            said.append(f"--page-param {_q(pages.param)}")
        if pages.limit != 100:
            said.append(f"--size {pages.limit}")
        if pages.limit_param not in (None, "limit"):
            said.append(f"--size-param {_q(pages.limit_param)}")
        if pages.start:
            said.append(f"--start {pages.start}")
        return " ".join(said + _totals(pages))
    if isinstance(pages, Cursor):
        said = ["--pages cursor"]
        if pages.field != "next_cursor":
            said.append(f"--cursor-field {_q(pages.field)}")
        if pages.param != "cursor":
            said.append(f"--cursor-param {_q(pages.param)}")
        return " ".join(said)
    if isinstance(pages, NextURL):
        said = ["--pages next-url"]
        if pages.field != "next":
            said.append(f"--next-field {_q(pages.field)}")
        return " ".join(said + (["--cross-origin"] if pages.cross_origin else []))
    if isinstance(pages, LinkHeader):
        said = ["--pages link"] + ([] if pages.fan_out else ["--no-fan-out"])
        return " ".join(said + (["--cross-origin"] if pages.cross_origin else []))
    return f"--pages auto ({type(pages).__name__})"


def _totals(pages: PageNumber | Offset) -> list[str]:
    said = []
    for option, source in (
        ("--total-pages", getattr(pages, "total_pages", None)),
        ("--total-items", pages.total_items),
        ("--has-more", pages.has_more),
    ):
        if isinstance(source, Header):
            said.append(f"{option} header:{source.name}")
        elif isinstance(source, str):
            said.append(f"{option} {_q(source)}")
    return said


def _q(text: Any) -> str:
    """A value as the shell takes it (a function of the page has no option: its name)."""
    return shlex.quote(text if isinstance(text, str) else getattr(text, "__name__", "?"))

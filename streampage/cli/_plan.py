"""The plan of a fetch: its options, checked, as the stream's arguments, its target and
its records; options that do not apply are an error rather than silently ignored."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._decode import get_path
from .._pagination import Header, Offset, PageNumber, Paginator
from .._policy import RateLimit, RetryPolicy, Timeout
from .._walks import Cursor, LinkHeader, NextURL
from . import UsageError
from ._records import _records_of, _Spec, _WatchTotal
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
    total: int | None
    stats_json: str | None


def make_plan(args: argparse.Namespace, announce: Callable[[str], None]) -> _Plan:
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

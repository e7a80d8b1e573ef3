"""Paginators: which pages to ask for, and when the data ends.

A paginator is a frozen configuration value; each stream asks it for a fresh run state
(``begin()``), the way aiometer's meters make a state per run. The engine talks to the run
state only: it asks for the next page number (which may wait for feedback, e.g. the total
read from the first page), passes every decoded page back (``accept``), and asks whether a
page lies past the end (the end can move down while pages are in flight).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from yarl import URL

from ._decode import find_records, get_path, is_empty
from ._errors import ConfigurationError, DecodeError, PageError, PaginationError
from ._page import Page
from ._redact import redact_url

__all__ = [
    "Auto",
    "Cursor",
    "Header",
    "LinkHeader",
    "NextURL",
    "Offset",
    "PageNumber",
    "Paginator",
    "PaginatorRun",
]


@dataclass(frozen=True)
class Header:
    """Read a value from a response header instead of the body: ``Header("X-Total-Count")``."""

    name: str


#: Where a number comes from: a dotted path into the body, a header, or a function of the page.
ValueSource = str | Header | Callable[[Page[Any]], Any]


class PaginatorRun(Protocol):
    """Per-stream state of a paginator, driven by the engine."""

    @property
    def open_ended(self) -> bool:
        """True while the last page is unknown: the engine fetches ahead speculatively and
        cancels or discards what lies past the end once it is found."""

    #: Called with the new last page number whenever the end moves down.
    on_end: Callable[[int], None]

    async def next(self) -> int | None:
        """The next page number to fetch, or None when there are no more."""

    def url(self, number: int) -> URL:
        """The URL of page ``number``."""

    def accept(self, page: Page[Any]) -> bool:
        """Learn from a decoded page; False when it must not be delivered (past the end)."""

    def ends_at_status(self, number: int, status: int) -> bool:
        """Does this non-2xx status mark the end of the data (rather than an error)?"""

    def failed(self, number: int) -> None:
        """Page ``number`` will not come back (error or cancellation)."""

    def past_end(self, number: int) -> bool:
        """Is page ``number`` beyond the last page, as far as is known now?"""


class Paginator(Protocol):
    """What ``stream(pages=...)`` accepts: a configuration that starts a fresh run per stream."""

    def begin(self, url: URL, *, max_pages: int | None) -> PaginatorRun:
        """A fresh run state for one stream."""


def _read(source: ValueSource, page: Page[Any]) -> Any:
    if isinstance(source, str):
        return get_path(page.data, source)
    if isinstance(source, Header):
        return page.response.headers.get(source.name)
    return source(page)


def _as_count(value: Any, what: str, page: Page[Any]) -> int | None:
    """A total from a response, or None when it is absent; garbage is an error, not 'unknown'."""
    if value is None or value == "":
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 0 or isinstance(value, bool):
        url = redact_url(page.response.url)
        raise DecodeError(
            f"page {page.number}: {what} is {value!r}, not a whole number >= 0 (url: {url}); "
            "check the field or header the paginator reads it from",
            page=page.number,
            url=url,
            path=None,
        )
    return count


@dataclass(frozen=True, kw_only=True)
class PageNumber:
    """Pages selected by a page number in a query parameter (``?page=3``).

    The last page is, by priority:

    - ``stop``: the last page number (inclusive), when you know it;
    - a total read from the first response: ``total_pages`` (a page count) or
      ``total_items`` (an item count, divided by ``size``), each a dotted path into the
      body, a ``Header(...)``, or a function of the page. The first page is fetched alone,
      then the rest fan out. A total that is missing or null falls back to the next rule;
    - otherwise the end is found by fetching ahead: the first page that is empty (see
      ``items``), answers 404, or for which ``has_more`` is false ends the data. Pages
      fetched past it are cancelled or discarded, never yielded.

    ``has_more`` (path or function of the page) is honoured in every mode: a page for which
    it is false is the last one. Without ``stop`` it makes the stream yield in page order,
    since a page that answered early may lie past a slower page that says "no more".
    ``max_pages`` given to ``stream()`` caps all of these.
    ``items`` names the list of records (path or function of the body) used to tell an empty
    page; by default a body is empty when it is an empty list/object, or an object whose
    list fields are all empty. With ``stop`` or a total, empty pages inside the range are
    delivered like any other.
    """

    start: int = 1
    stop: int | None = None
    param: str = "page"
    size: int | None = None
    size_param: str = "per_page"
    total_pages: ValueSource | None = None
    total_items: ValueSource | None = None
    has_more: str | Callable[[Page[Any]], Any] | None = None
    items: str | Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.stop is not None and self.stop < self.start:
            raise ConfigurationError(
                f"PageNumber(stop={self.stop}) is before start={self.start}; "
                "stop is the last page number to fetch (inclusive)"
            )
        if self.size is not None and self.size < 1:
            raise ConfigurationError(f"PageNumber(size={self.size}) must be at least 1")
        if self.total_items is not None and self.size is None:
            raise ConfigurationError(
                "PageNumber(total_items=...) needs size= to turn an item count into a page "
                "count, e.g. PageNumber(total_items='meta.total', size=100)"
            )
        if not self.param:
            raise ConfigurationError("PageNumber(param=...) must name a query parameter")

    def begin(self, url: URL, *, max_pages: int | None) -> _IndexedRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        spec = self

        def total(page: Page[Any]) -> int | None:
            pages: int | None = None
            if spec.total_pages is not None:
                pages = _as_count(_read(spec.total_pages, page), "total_pages", page)
            if pages is None and spec.total_items is not None:
                items = _as_count(_read(spec.total_items, page), "total_items", page)
                if items is not None:
                    assert spec.size is not None
                    pages = math.ceil(items / spec.size)
            return pages

        size = {spec.size_param: spec.size} if spec.size is not None else {}
        return _IndexedRun(
            url=url,
            first=spec.start,
            last=spec.stop,
            max_pages=max_pages,
            param=spec.param,
            extra=size,
            value=None,
            total=total if spec.total_pages is not None or spec.total_items is not None else None,
            has_more=spec.has_more,
            items=spec.items,
            short_page=None,
        )

    @property
    def releases_in_order(self) -> bool:
        """With ``has_more`` and no ``stop``, a page can be known not to lie past the end only
        once every page before it has said "more": the stream then yields in page order
        (workers still fetch ahead inside the reorder window)."""
        return self.has_more is not None and self.stop is None


class _IndexedRun:
    """Pages selected by an index in the query: page numbers, or offsets computed from them.

    Numbers run from ``first``; ``value(number)`` is what goes in the query parameter
    (the number itself for PageNumber, an offset for Offset).
    """

    def __init__(
        self,
        *,
        url: URL,
        first: int,
        last: int | None,
        max_pages: int | None,
        param: str,
        extra: dict[str, int],
        value: Callable[[int], int] | None,
        total: Callable[[Page[Any]], int | None] | None,
        has_more: str | Callable[[Page[Any]], Any] | None,
        items: str | Callable[[Any], Any] | None,
        short_page: int | None,
    ) -> None:
        self._first = first
        self._next = first
        # Without a known last page the end is found by looking (empty, short or 404 page);
        # max_pages only caps that search.
        self.open_ended = last is None
        if max_pages is not None:
            capped = first + max_pages - 1
            last = capped if last is None else min(last, capped)
        self._last = last
        self._total = total
        self._has_more = has_more
        self._items = items
        self._short_page = short_page
        self._value = value
        self._first_done = asyncio.Event()
        self.on_end: Callable[[int], None] = lambda last: None
        # Page URLs are built by appending to a fixed prefix: ~0.3 µs a page, against ~2 µs
        # for yarl's update_query. Our own parameters are removed from the base first, so
        # that a page=... already in the user's URL is replaced, not repeated.
        base = url.with_fragment(None).without_query_params(param, *extra)
        fixed = "".join(f"{quote(k, safe='')}={v}&" for k, v in extra.items())
        sep = "&" if base.raw_query_string else "?"
        self._prefix = f"{base}{sep}{fixed}{quote(param, safe='')}="

    async def next(self) -> int | None:
        number = self._next
        if self._total is not None and number > self._first and not self._first_done.is_set():
            await self._first_done.wait()
        if self._last is not None and number > self._last:
            return None
        self._next = number + 1
        return number

    def url(self, number: int) -> URL:
        value = number if self._value is None else self._value(number)
        return URL(self._prefix + str(value), encoded=True)

    def accept(self, page: Page[Any]) -> bool:
        number = page.number
        if number == self._first and self._total is not None and not self._first_done.is_set():
            # A total that is garbage raises (the page may be retried, or fails: failed()
            # releases the producer then); only a page that was read releases it here.
            pages = self._total(page)
            if pages is not None:
                self.open_ended = False
                self._end_at(self._first + pages - 1)
            self._first_done.set()
        if self.past_end(number):
            return False
        if self.open_ended:
            count = self._count(page)
            if count == 0:
                self._end_at(number - 1)
                return False
            if self._short_page is not None and count is not None and count < self._short_page:
                self._end_at(number)  # a short page is the last one, and is delivered
        if self._has_more is not None:
            more = (
                get_path(page.data, self._has_more)
                if isinstance(self._has_more, str)
                else self._has_more(page)
            )
            if not more:
                self._end_at(number)
        return True

    def ends_at_status(self, number: int, status: int) -> bool:
        # A 404 past the data is how many APIs (Django REST framework) say "no such page";
        # on the first page it is a wrong URL, which the caller reports as an error.
        if self.open_ended and status == 404 and number > self._first:
            self._end_at(number - 1)
            return True
        return False

    def failed(self, number: int) -> None:
        if number == self._first:
            self._first_done.set()

    def past_end(self, number: int) -> bool:
        return self._last is not None and number > self._last

    def _count(self, page: Page[Any]) -> int | None:
        """Records on the page (0 when empty), or None when they cannot be counted."""
        items = self._items
        if items is None:
            if is_empty(page.data):
                return 0
            records = find_records(page.data)
        else:
            records = get_path(page.data, items) if isinstance(items, str) else items(page.data)
            if not records:
                return 0
        return len(records) if isinstance(records, list | tuple) else None

    def _end_at(self, last: int) -> None:
        if self._last is None or last < self._last:
            self._last = last
            self.on_end(last)

    def adopt(self, page: Page[Any]) -> bool:
        """Take the first page, fetched by someone else (pages=auto), as this run's own."""
        self._next = self._first + 1
        return self.accept(page)


@dataclass(frozen=True, kw_only=True)
class Offset:
    """Pages selected by an offset and a limit in the query (``?offset=200&limit=100``).

    ``page.number`` is the page's index from 1; its offset is ``start + (number - 1) * limit``.
    The end is, by priority: ``stop`` (the offset past the last item, i.e. the item count);
    ``total_items`` read from the first response (a dotted path, a ``Header(...)`` or a
    function of the page; the first page is fetched alone, then the rest fan out); else it
    is found by fetching ahead: a page with fewer records than ``limit`` is the last one
    (and is delivered), an empty page or a 404 ends the data, and ``has_more`` false ends it.
    Records are counted from ``items`` (path or function of the body) or, by default, the
    body if it is a list, else the only list field of the object.
    """

    limit: int = 100
    start: int = 0
    stop: int | None = None
    param: str = "offset"
    limit_param: str = "limit"
    total_items: ValueSource | None = None
    has_more: str | Callable[[Page[Any]], Any] | None = None
    items: str | Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigurationError(f"Offset(limit={self.limit}) must be at least 1")
        if self.start < 0:
            raise ConfigurationError(f"Offset(start={self.start}) must be >= 0")
        if self.stop is not None and self.stop < self.start:
            raise ConfigurationError(
                f"Offset(stop={self.stop}) is before start={self.start}; stop is the offset "
                "past the last item (the item count)"
            )
        if not self.param or not self.limit_param:
            raise ConfigurationError("Offset(param=..., limit_param=...) must name parameters")

    @property
    def releases_in_order(self) -> bool:
        """Without ``stop``, a full page that answered early may lie past a slower short
        page that ends the data: the stream then yields in page order (see PageNumber).
        Not with ``total_items``, which is expected to give the end before fanning out."""
        return self.stop is None and self.total_items is None

    def begin(self, url: URL, *, max_pages: int | None) -> _IndexedRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        spec = self

        def pages_for(items: int) -> int:
            return math.ceil(max(0, items - spec.start) / spec.limit)

        def total(page: Page[Any]) -> int | None:
            assert spec.total_items is not None
            items = _as_count(_read(spec.total_items, page), "total_items", page)
            return None if items is None else pages_for(items)

        return _IndexedRun(
            url=url,
            first=1,
            last=None if self.stop is None else pages_for(self.stop),
            max_pages=max_pages,
            param=self.param,
            extra={self.limit_param: self.limit},
            value=lambda number: spec.start + (number - 1) * spec.limit,
            total=total if self.total_items is not None else None,
            has_more=self.has_more,
            items=self.items,
            short_page=self.limit,
        )


# ---------------------------------------------------------------------- sequential walks


class _Repeats:
    """Has this cursor or URL come before? In constant memory, whatever the walk's length.

    Exact over the last ``recent`` values (a loop is nearly always short: the same cursor
    again, or two alternating), and Brent's cycle detection (R. P. Brent, "An improved
    Monte Carlo factorization algorithm", BIT 1980) for longer cycles, which it catches
    within twice the cycle's length.
    """

    def __init__(self, recent: int = 1024) -> None:
        self._order: deque[str] = deque()
        self._recent: set[str] = set()
        self._size = recent
        self._mark: str | None = None
        self._power = 1
        self._steps = 0

    def seen(self, key: str) -> bool:
        if key in self._recent or key == self._mark:
            return True
        self._order.append(key)
        self._recent.add(key)
        if len(self._order) > self._size:
            self._recent.discard(self._order.popleft())
        self._steps += 1
        if self._steps == self._power:
            self._mark, self._power, self._steps = key, self._power * 2, 0
        return False


class _WalkRun:
    """A sequential walk: each page's response names the next (cursor, next URL, Link).

    Numbers run 1, 2, 3... in walk order; the producer waits for page n before it can hand
    out page n + 1, while the pipeline still overlaps fetch, decode and consumption.
    """

    open_ended = False

    def __init__(self, url: URL, max_pages: int | None, *, cross_origin: bool) -> None:
        self._urls: dict[int, URL] = {1: url}
        self._origin = url.origin()
        self._cross_origin = cross_origin
        self._next = 1
        self._last = max_pages
        self._ended = False
        self._error: PageError | None = None
        self._changed = asyncio.Event()
        self._repeats = _Repeats()
        self._repeats.seen(str(url))  # a link back to the first page is a loop too
        self.on_end: Callable[[int], None] = lambda last: None

    async def next(self) -> int | None:
        number = self._next
        while self._waiting(number):
            self._changed.clear()
            await self._changed.wait()
        if self._error is not None:
            error, self._error = self._error, None
            self._ended = True
            raise error
        if number not in self._urls or (self._last is not None and number > self._last):
            return None
        self._next = number + 1
        return number

    def _waiting(self, number: int) -> bool:
        """Is the walk still to learn whether page ``number`` exists?"""
        return number not in self._urls and not self._ended and self._error is None

    def url(self, number: int) -> URL:
        return self._urls.pop(number)

    def accept(self, page: Page[Any]) -> bool:
        target = self.follow(page)
        if target is None:
            self._end()
        else:
            self._urls[page.number + 1] = target
            self._changed.set()
        return True

    def follow(self, page: Page[Any]) -> URL | None:
        """The URL of the page after ``page``, or None at the end."""
        raise NotImplementedError

    def ends_at_status(self, number: int, status: int) -> bool:
        return False

    def failed(self, number: int) -> None:
        self._end()  # without this page's answer the walk cannot go on

    def past_end(self, number: int) -> bool:
        return False

    def _end(self) -> None:
        self._ended = True
        self._changed.set()

    def adopt(self, page: Page[Any]) -> bool:
        """Take the first page, fetched by someone else (pages=auto), as this run's own."""
        self._next = 2
        self._urls.pop(1, None)
        return self.accept(page)

    def _refuse(self, page: Page[Any], message: str) -> None:
        """Stop the walk with an error delivered after ``page`` (which is itself fine)."""
        shown = redact_url(page.response.url)
        self._error = PaginationError(
            f"page {page.number} ({shown}): {message}", page=page.number + 1, url=shown
        )
        self._changed.set()

    def _checked(self, page: Page[Any], target: URL, what: str) -> URL | None:
        """``target`` if it may be followed; else None, with the error set."""
        if not self._cross_origin and target.origin() != self._origin:
            self._refuse(
                page,
                f"the {what} points to another origin ({target.origin()}), where the "
                "stream's credentials must not go. Pass cross_origin=True to the paginator "
                "to follow it anyway (secret headers are then not sent there).",
            )
            return None
        if self._repeats.seen(str(target)):
            self._refuse(
                page,
                f"the {what} {redact_url(target)} came up before: the pagination loops. "
                "Check the paginator's field and parameter names.",
            )
            return None
        return target


def _text(value: Any) -> str | None:
    if value is None or value == "" or value is False:
        return None
    return value if isinstance(value, str) else str(value)


_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")


@dataclass(frozen=True, kw_only=True)
class Cursor:
    """The next cursor is a field of the body, sent back as a query parameter.

    ``field`` is a dotted path (``"meta.next_cursor"``) or a function of the page; a missing,
    null or empty cursor ends the walk. ``initial`` is sent with the first request, if given.
    A cursor that arrives already percent-encoded is sent as it is, not encoded twice. The
    same cursor twice stops the stream with a PaginationError instead of looping forever.
    """

    field: str | Callable[[Page[Any]], Any] = "next_cursor"
    param: str = "cursor"
    initial: str | None = None

    def __post_init__(self) -> None:
        if not self.param:
            raise ConfigurationError("Cursor(param=...) must name a query parameter")

    def begin(self, url: URL, *, max_pages: int | None) -> _WalkRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return _CursorRun(self, url, max_pages)


class _CursorRun(_WalkRun):
    def __init__(self, spec: Cursor, url: URL, max_pages: int | None) -> None:
        self._spec = spec
        self._base = url.without_query_params(spec.param)
        first = self._with_cursor(spec.initial) if spec.initial else self._base
        super().__init__(first, max_pages, cross_origin=False)
        if spec.initial:
            self._repeats.seen(spec.initial)

    def _with_cursor(self, cursor: str) -> URL:
        if _ENCODED.search(cursor):
            sep = "&" if self._base.raw_query_string else "?"
            return URL(
                f"{self._base}{sep}{quote(self._spec.param, safe='')}={cursor}", encoded=True
            )
        return self._base.update_query({self._spec.param: cursor})

    def follow(self, page: Page[Any]) -> URL | None:
        field = self._spec.field
        cursor = _text(get_path(page.data, field) if isinstance(field, str) else field(page))
        if cursor is None:
            return None
        if self._repeats.seen(cursor):
            self._refuse(
                page,
                f"cursor {cursor[:60]!r} came up before: the pagination loops. Check that "
                f"Cursor(field={field!r}) names the field of the *next* cursor.",
            )
            return None
        return self._with_cursor(cursor)


@dataclass(frozen=True, kw_only=True)
class NextURL:
    """The body holds the URL of the next page (absolute, or relative to the response URL).

    ``field`` is a dotted path (``"links.next"``) or a function of the page; a missing, null
    or empty value ends the walk. A next URL on another origin is refused with a
    PaginationError, because the stream's credentials would go with it; ``cross_origin=True``
    follows it, without the secret headers.
    """

    field: str | Callable[[Page[Any]], Any] = "next"
    cross_origin: bool = False

    def begin(self, url: URL, *, max_pages: int | None) -> _WalkRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return _NextURLRun(self, url, max_pages)

    @property
    def may_leave_origin(self) -> bool:
        """Whether requests may go to other origins (then credentials are chosen per URL)."""
        return self.cross_origin


class _NextURLRun(_WalkRun):
    def __init__(self, spec: NextURL, url: URL, max_pages: int | None) -> None:
        self._spec = spec
        super().__init__(url, max_pages, cross_origin=spec.cross_origin)

    def follow(self, page: Page[Any]) -> URL | None:
        field = self._spec.field
        link = _text(get_path(page.data, field) if isinstance(field, str) else field(page))
        if link is None:
            return None
        return self._checked(page, page.response.url.join(URL(link)), "next URL")


@dataclass(frozen=True, kw_only=True)
class LinkHeader:
    """Follow RFC 8288 ``Link`` headers: ``<https://...?page=2>; rel="next"``.

    When the first response also has a ``rel="last"`` link, and the next and last URLs
    differ in one whole-number query parameter only (GitHub's ``?page=2`` ... ``?page=34``),
    the remaining pages are fetched in parallel by that number instead of walking next
    links one at a time; ``fan_out=False`` turns that off (for APIs whose page URLs are
    not stable). Links to another origin are refused unless ``cross_origin=True``.
    """

    rel: str = "next"
    fan_out: bool = True
    cross_origin: bool = False

    def begin(self, url: URL, *, max_pages: int | None) -> _LinkRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return _LinkRun(self, url, max_pages)

    @property
    def may_leave_origin(self) -> bool:
        """Whether requests may go to other origins (then credentials are chosen per URL)."""
        return self.cross_origin


class _LinkRun(_WalkRun):
    def __init__(self, spec: LinkHeader, url: URL, max_pages: int | None) -> None:
        self._spec = spec
        super().__init__(url, max_pages, cross_origin=spec.cross_origin)
        #: set when fanning out: (template URL, parameter, its value for page 2, last page)
        self._fan: tuple[URL, str, int, int] | None = None

    def _waiting(self, number: int) -> bool:
        return self._fan is None and super()._waiting(number)

    async def next(self) -> int | None:
        if self._fan is None:
            number = await super().next()
            if number is not None or self._fan is None:
                return number
        number = self._next
        last = self._fan[3] if self._last is None else min(self._fan[3], self._last)
        if number > last:
            return None
        self._next = number + 1
        return number

    def url(self, number: int) -> URL:
        if self._fan is None or number < 2:
            return super().url(number)
        template, param, second, _last = self._fan
        return template.update_query({param: str(second + number - 2)})

    def past_end(self, number: int) -> bool:
        return self._fan is not None and number > self._fan[3]

    def follow(self, page: Page[Any]) -> URL | None:
        if self._fan is not None:
            return None
        links = parse_link_header(page.response.headers.getall("Link", ()), page.response.url)
        target = links.get(self._spec.rel)
        if target is None:
            return None
        if page.number == 1 and self._spec.fan_out and "last" in links:
            fan = _fan_out(target, links["last"])
            if fan is not None and (self._cross_origin or target.origin() == self._origin):
                self._fan = fan
                self._urls.clear()
                self._changed.set()
                return None
        return self._checked(page, target, "Link rel=next")

    def accept(self, page: Page[Any]) -> bool:
        if self._fan is not None:
            return not self.past_end(page.number)
        target = self.follow(page)
        if self._fan is not None:
            return True
        if target is None:
            self._end()
        else:
            self._urls[page.number + 1] = target
            self._changed.set()
        return True


def _fan_out(next_url: URL, last_url: URL) -> tuple[URL, str, int, int] | None:
    """(template, parameter, value on page 2, last page number) when ``next`` and ``last``
    differ in exactly one whole-number query parameter, else None."""
    if next_url.with_query(None) != last_url.with_query(None):
        return None
    a, b = next_url.query, last_url.query
    if set(a) != set(b) or any(len(a.getall(k)) != 1 or len(b.getall(k)) != 1 for k in a):
        return None
    differing = [k for k in a if a[k] != b[k]]
    if len(differing) != 1:
        return None
    param = differing[0]
    if not (a[param].isdigit() and b[param].isdigit()):
        return None
    second, last_value = int(a[param]), int(b[param])
    if last_value < second:
        return None
    return last_url, param, second, 2 + last_value - second


_LINK_VALUE = re.compile(r"\s*<([^>]*)>\s*")
_LINK_PARAM = re.compile(r';\s*([^\s=;,]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,]*))?\s*')


def parse_link_header(values: Any, base: URL) -> dict[str, URL]:
    """The links of one or more ``Link`` header values by relation type (RFC 8288).

    Handles several links per value, quoted parameters (which may hold ``,`` and ``;``),
    several relation types in one ``rel`` (``rel="next last"``), and relative targets,
    resolved against ``base``. The first link of a relation wins.
    """
    links: dict[str, URL] = {}
    for value in values:
        pos = 0
        while pos < len(value):
            match = _LINK_VALUE.match(value, pos)
            if match is None:
                break  # malformed from here on: keep what was read
            target = match.group(1)
            pos = match.end()
            rels: list[str] = []
            while (param := _LINK_PARAM.match(value, pos)) is not None:
                pos = param.end()
                name, raw = param.group(1).lower(), (param.group(2) or "").strip()
                if raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                if name == "rel" and not rels:
                    rels = raw.lower().split()
            for rel in rels:
                links.setdefault(rel, base.join(URL(target)))
            pos = value.find(",", pos)
            if pos < 0:
                break
            pos += 1
    return links


# ---------------------------------------------------------------------- pages=auto

_NEXT_URL_FIELDS = (
    "next",
    "next_url",
    "nextUrl",
    "links.next",
    "_links.next.href",
    "paging.next",
    "pagination.next",
    "meta.next",
)
_CURSOR_FIELDS = {  # field of the next cursor -> the query parameter it goes back in
    "next_cursor": "cursor",
    "nextCursor": "cursor",
    "meta.next_cursor": "cursor",
    "pagination.next_cursor": "cursor",
    "response_metadata.next_cursor": "cursor",
    "next_page_token": "page_token",
    "nextPageToken": "pageToken",
}
_TOTAL_PAGES_FIELDS = (
    "total_pages",
    "totalPages",
    "pages",
    "page_count",
    "pageCount",
    "meta.total_pages",
    "pagination.total_pages",
    "meta.pagination.pages",
)
_PAGE_ECHO_FIELDS = (
    "page",
    "current_page",
    "currentPage",
    "page_number",
    "meta.page",
    "meta.current_page",
    "pagination.page",
)
_HAS_MORE_FIELDS = ("has_more", "hasMore", "has_next", "hasNext", "more")

auto_logger = logging.getLogger("streampage")


def detect(page: Page[Any]) -> Paginator | None:
    """The paginator a person would pick from a first response; None when the response
    shows no pagination at all. Raises ValueError when it points two ways at once."""
    data = page.data
    found: list[Paginator] = []
    links = parse_link_header(page.response.headers.getall("Link", ()), page.response.url)
    if "next" in links:
        found.append(LinkHeader())
    for field in _NEXT_URL_FIELDS:
        value = get_path(data, field)
        if isinstance(value, str) and value.startswith(("http://", "https://", "/", "?")):
            found.append(NextURL(field=field))
            break
    for field, param in _CURSOR_FIELDS.items():
        if isinstance(get_path(data, field), str | int) and get_path(data, field) != "":
            found.append(Cursor(field=field, param=param))
            break
    if len(found) > 1:
        raise ValueError(" and ".join(repr(p) for p in found))
    if found:
        return found[0]
    for field in _TOTAL_PAGES_FIELDS:
        if isinstance(get_path(data, field), int) and not isinstance(get_path(data, field), bool):
            return PageNumber(total_pages=field)
    for field in _HAS_MORE_FIELDS:
        if isinstance(get_path(data, field), bool):
            return PageNumber(has_more=field)
    if isinstance(data, list) or any(get_path(data, f) == 1 for f in _PAGE_ECHO_FIELDS):
        return PageNumber()
    return None


@dataclass(frozen=True)
class Auto:
    """Look at the first response and pick the paginator a person would (the default).

    In order: a ``Link`` header with ``rel="next"`` (LinkHeader); a next-URL field such as
    ``next`` or ``links.next`` (NextURL); a cursor field such as ``next_cursor`` or
    ``nextPageToken`` (Cursor); a page count such as ``total_pages`` (PageNumber with the
    total); a ``has_more`` flag; a list body, or one that echoes ``page: 1`` (PageNumber
    until an empty page). A response that points two ways at once is an error that asks you
    to name the paginator; one with no sign of pagination is the only page. The choice is
    logged (logger ``streampage``, level INFO). Name a paginator for anything else.
    """

    def begin(self, url: URL, *, max_pages: int | None) -> _AutoRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return _AutoRun(url, max_pages)


class _AutoRun:
    def __init__(self, url: URL, max_pages: int | None) -> None:
        self._url = url
        self._max_pages = max_pages
        self._run: Any = None
        self._first_given = False
        self._decided = asyncio.Event()
        self._error: PageError | None = None
        self._on_end: Callable[[int], None] = lambda last: None
        self._first: Page[Any] | None = None
        self._guard = False  # a guessed PageNumber: check that page 2 differs from page 1

    @property
    def open_ended(self) -> bool:
        return bool(self._run.open_ended) if self._run is not None else False

    @property
    def on_end(self) -> Callable[[int], None]:
        return self._on_end

    @on_end.setter
    def on_end(self, callback: Callable[[int], None]) -> None:
        self._on_end = callback
        if self._run is not None:
            self._run.on_end = callback

    async def next(self) -> int | None:
        if not self._first_given:
            self._first_given = True
            return 1
        await self._decided.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return None if self._run is None else await self._run.next()

    def url(self, number: int) -> URL:
        return self._url if self._run is None else self._run.url(number)

    def accept(self, page: Page[Any]) -> bool:
        if self._run is not None:
            if self._guard and page.number == 2 and self._first is not None:
                self._guard = False
                if page.data == self._first.data:
                    auto_logger.warning(
                        "pages=auto: page 2 is the same as page 1, so the server ignores the "
                        "page parameter; keeping page 1 only. Name a paginator (pages=...)."
                    )
                    self._run._end_at(1)
                    return False
                self._first = None
            return bool(self._run.accept(page))
        try:
            chosen = detect(page)
        except ValueError as exc:
            shown = redact_url(page.response.url)
            self._error = PaginationError(
                f"pages=auto cannot tell how {shown} paginates: the first response fits "
                f"{exc}. Name one with pages=...",
                page=2,
                url=shown,
            )
            self._decided.set()
            return True
        if chosen is None:
            auto_logger.info(
                "pages=auto: no sign of pagination in the first response of %s; it is the "
                "only page (name a paginator with pages=... if there are more)",
                redact_url(page.response.url),
            )
            self._decided.set()
            return True
        auto_logger.info("pages=auto chose %r for %s", chosen, redact_url(page.response.url))
        run: Any = chosen.begin(self._url, max_pages=self._max_pages)
        run.on_end = self._on_end
        self._run = run
        if isinstance(chosen, PageNumber) and chosen.total_pages is None:
            self._guard, self._first = True, page
        self._decided.set()
        return bool(run.adopt(page))

    def ends_at_status(self, number: int, status: int) -> bool:
        return self._run is not None and bool(self._run.ends_at_status(number, status))

    def failed(self, number: int) -> None:
        if self._run is not None:
            self._run.failed(number)
        else:
            self._decided.set()

    def past_end(self, number: int) -> bool:
        # without a delegate there is no page 2 to be past: next() hands none out
        return self._run is not None and bool(self._run.past_end(number))

    @property
    def releases_in_order(self) -> bool:
        return False

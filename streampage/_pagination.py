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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from yarl import URL

from ._checkpoint import Resume
from ._decode import count_records, get_path, has_path, keys_of
from ._errors import ConfigurationError, DecodeError, PaginationError
from ._evidence import as_count, says_more
from ._page import Page
from ._redact import redact_url

__all__ = ["Header", "Offset", "PageNumber", "Paginator", "PaginatorRun"]

logger = logging.getLogger("streampage")


@dataclass(frozen=True)
class Header:
    """Read a value from a response header instead of the body: ``Header("X-Total-Count")``."""

    name: str


#: Where a number comes from: a dotted path into the body, a header, or a function of the page.
ValueSource = str | Header | Callable[[Page[Any]], Any]


class WouldWait(Exception):
    """A run's ``next_nowait`` cannot answer yet: ``await next()`` instead."""


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

    def begin(
        self, url: URL, *, max_pages: int | None, resume: Resume | None = None
    ) -> PaginatorRun:
        """A fresh run state for one stream; ``resume`` says which pages a checkpoint
        already holds (not to be delivered again) and where a walk goes on."""


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
      then the rest fan out. A total that is null falls back to the next rule; a field or
      header that is absent from the first response is a ConfigurationError (a wrong name);
    - otherwise the end is found by fetching ahead: the first page that is empty (see
      ``items``), answers 404, repeats the page before it (json-server 1.x answers every
      page past the end with the last one), or for which ``has_more`` is false ends the
      data. Pages fetched past it are cancelled or discarded, never yielded.

    ``has_more`` (path or function of the page) is honoured in every mode: a page for which
    it is false is the last one. ``max_pages`` given to ``stream()`` caps all of these.
    ``size`` is the page size to ask for, sent as ``size_param`` (``size_param=None``: used
    for arithmetic only, not sent). When the first page holds fewer records than ``size``
    while ``total_items`` says there are more, the server caps the page size: the stream
    fails with a PaginationError that names the size to ask for, rather than skip records.
    ``items`` names the list of records (path or function of the body) used to tell an empty
    page; by default a body is empty when it is an empty list/object, or an object whose
    list fields are all empty. With ``stop`` or a total, empty pages inside the range are
    delivered like any other. Page 2 repeating page 1 means the server ignores ``param``:
    a PaginationError, never a duplicate.
    """

    start: int = 1
    stop: int | None = None
    param: str = "page"
    size: int | None = None
    size_param: str | None = "per_page"
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

    def begin(
        self, url: URL, *, max_pages: int | None, resume: Resume | None = None
    ) -> _IndexedRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return self.run_from(self.start, url, max_pages=max_pages, resume=resume)

    def run_from(
        self, first: int, url: URL, *, max_pages: int | None, resume: Resume | None = None
    ) -> _IndexedRun:
        """A run whose pages are numbered from ``first`` while the parameter still starts
        at ``start`` (pages=auto numbers every source from 1, whatever its first page is)."""
        sent = {self.size_param: self.size} if self.size is not None and self.size_param else {}
        shift = self.start - first
        return _IndexedRun(
            spec=self,
            url=url,
            first=first,
            last=None if self.stop is None else self.stop - shift,
            max_pages=max_pages,
            param=self.param,
            extra=sent,
            size=self.size,
            offsets=None,
            total_pages=self.total_pages,
            total_items=self.total_items,
            has_more=self.has_more,
            items=self.items,
            resume=resume,
            shift=shift,
        )

    @property
    def releases_in_order(self) -> bool:
        """Without ``stop`` or a total, a page can be known not to lie past the end only once
        every page before it has been seen (not empty, not a repeat of the one before, not
        "no more"): the stream then yields in page order (workers still fetch ahead inside
        the reorder window)."""
        totals = self.total_pages is not None or self.total_items is not None
        return self.stop is None and (self.has_more is not None or not totals)


class _IndexedRun:
    """Pages selected by an index in the query: page numbers, or offsets computed from them.

    Numbers run from ``first``; the query value is the number plus ``shift`` (pages=auto
    numbers from 1 an API whose first page is 0). ``offsets=(start, step)`` makes it an offset,
    ``start + (number - 1) * step``; the step is what the server serves per page, learnt
    from the first page (a server that caps ``limit`` serves fewer records than asked).
    """

    _end: float  #: the last page number; infinity while unknown (see _last)

    def __init__(
        self,
        *,
        spec: PageNumber | Offset,
        url: URL,
        first: int,
        last: int | None,
        max_pages: int | None,
        param: str,
        extra: dict[str, int],
        size: int | None,
        offsets: tuple[int, int] | None,
        total_pages: ValueSource | None,
        total_items: ValueSource | None,
        has_more: str | Callable[[Page[Any]], Any] | None,
        items: str | Callable[[Any], Any] | None,
        resume: Resume | None = None,
        shift: int = 0,
    ) -> None:
        self._spec = spec
        self._shift = shift
        self._first = first
        #: pages a checkpoint holds: not fetched again (but the first page when it is
        #: fetched alone to read a total or the page size), never delivered again
        self._done = resume.done if resume is not None else None
        self._next = first
        # Without a known last page the end is found by looking (empty, short, repeated or
        # 404 page); max_pages only caps that search.
        self.open_ended = last is None
        self._cap = None if max_pages is None else first + max_pages - 1
        if self._cap is not None:
            last = self._cap if last is None else min(last, self._cap)
        self._last = last
        self._total_pages = total_pages
        self._total_items = total_items
        self._size = size
        self._offsets = offsets
        self._has_more = has_more
        self._items = items
        #: records on a page (0 when empty), or None when they cannot be counted; the
        #: default rule itself when items= is not given (one call a page, not two)
        self.count: Callable[[Any], int | None] = (
            count_records if items is None else self._count_items
        )
        # The first page goes alone when it decides the rest: a total to read, or (offsets)
        # the number of records the server really serves per page.
        self._alone = total_pages is not None or total_items is not None or offsets is not None
        self._first_done = asyncio.Event()
        self._checked = False
        self.on_end: Callable[[int], None] = lambda last: None
        # Page URLs are built from the base's parts, already encoded, and a query that is a
        # fixed prefix and the number: nothing is parsed or quoted per page (URL(str) would
        # parse each new URL: ~3 µs a page, against ~1 µs; yarl's update_query ~2 µs). Our
        # own parameters are removed from the base first, so that a page=... already in the
        # user's URL is replaced, not repeated.
        base = url.with_fragment(None).without_query_params(param, *extra)
        fixed = "".join(f"{quote(k, safe='')}={v}&" for k, v in extra.items())
        sep = "&" if base.raw_query_string else "?"
        # the parts of the base as a page URL has them once parsed (a default port dropped)
        template = URL(f"{base}{sep}{fixed}{quote(param, safe='')}=0", encoded=True)
        self._parts = (template.scheme, template.raw_authority, template.raw_path)
        self._query = template.raw_query_string[:-1]

    @property
    def param(self) -> str:
        """The query parameter that selects a page (named in errors)."""
        return self._spec.param

    async def next(self) -> int | None:
        if self._alone and self._next > self._first and not self._first_done.is_set():
            await self._first_done.wait()
        return self.next_nowait()

    def next_nowait(self) -> int | None:
        """``next()`` without a coroutine, for the engine's producer on every page; raises
        WouldWait while the first page, fetched alone, is not in yet."""
        number = self._next
        if self._alone and number > self._first and not self._first_done.is_set():
            raise WouldWait
        done = self._done
        if done is not None:
            while number in done and (number != self._first or not self._alone):
                number += 1
        if number > self._end:
            return None
        self._next = number + 1
        return number

    def url(self, number: int) -> URL:
        offsets = self._offsets
        value = number + self._shift if offsets is None else offsets[0] + (number - 1) * offsets[1]
        scheme, authority, path = self._parts
        return URL.build(
            scheme=scheme,
            authority=authority,
            path=path,
            query_string=self._query + str(value),
            encoded=True,
        )

    def accept(self, page: Page[Any]) -> bool:
        number = page.number
        if not self._checked:
            self._checked = True
            self._check_fields(page)
        if number == self._first and self._alone and not self._first_done.is_set():
            # A total that is garbage raises (the page may be retried, or fails: failed()
            # releases the producer then); only a page that was read releases it here.
            self._learn(page)
            self._first_done.set()
        if number > self._end:  # past_end(number), inline: every page
            return False
        if self.open_ended:
            count = self.count(page.data)
            if count == 0:
                self.end_at(number - 1)
                return False
            # A short page is the last one, and is delivered; unless the body echoes the
            # full limit: the server then filtered records out of a full page (for
            # permissions: Atlassian documents it), and the data goes on. The empty page
            # after the real last one costs nothing, fetched ahead with the rest.
            step = self._offsets[1] if self._offsets is not None else None
            short = step is not None and count is not None and count < step
            if short and self._echoed_limit(page) != step:
                self.end_at(number)
        if self._has_more is not None:
            more = (
                get_path(page.data, self._has_more)
                if isinstance(self._has_more, str)
                else self._has_more(page)
            )
            if not more:
                self.end_at(number)
        return self._done is None or number not in self._done

    def _learn(self, page: Page[Any]) -> None:
        """Read the first page: the records the server serves per page, and the total."""
        served = self.count(page.data)
        offsets = self._offsets
        step = self._step(page, served) if offsets is not None else None
        if offsets is not None and step is not None and step != offsets[1]:
            logger.info(
                "page 1 of %s holds %d records where %d were asked, and the server caps "
                "the page size: the offsets step by %d",
                redact_url(page.response.url),
                served,
                offsets[1],
                step,
            )
            self._offsets = offsets = (offsets[0], step)
            stop = self._spec.stop if isinstance(self._spec, Offset) else None
            if stop is not None:  # the item count the user gave, in pages of the new step
                within = math.ceil(max(0, stop - offsets[0]) / step)
                self._last = within if self._cap is None else min(within, self._cap)
        pages: int | None = None
        if self._total_pages is not None:
            pages = _as_count(_read(self._total_pages, page), "total_pages", page)
        if pages is None and self._total_items is not None:
            items = _as_count(_read(self._total_items, page), "total_items", page)
            if items is not None:
                if offsets is not None:
                    pages = math.ceil(max(0, items - offsets[0]) / offsets[1])
                else:
                    assert self._size is not None
                    self._check_cap(page, served, items)
                    pages = math.ceil(items / self._size)
        if pages is not None:
            self.open_ended = False
            if offsets is not None:
                self.end_at(self._first + pages - 1)
            else:
                # A page count counts from the API's first page: page 1, or page 0 for an
                # API numbered from 0 (start=0); a start past it skips pages of the count.
                base = 0 if self._spec.start == 0 else 1
                self.end_at(base + pages - 1 - self._shift)

    def _echoed_limit(self, page: Page[Any]) -> int | None:
        """The limit an offset page's body says the server used (``limit_param`` echoed)."""
        name = self._spec.limit_param if isinstance(self._spec, Offset) else None
        return as_count(get_path(page.data, name)) if name else None

    def _step(self, page: Page[Any], served: int | None) -> int | None:
        """What the offsets step by, read from the first page. More records than the limit:
        what was served (the server's own page size). Fewer: the limit the body echoes, if
        it does (the server says what it used; a server that filters records out of full
        pages echoes the full limit); else what was served, when the page says there is
        more (a total above it, has_more): a cap. Else the page is simply the last, and the
        step stays."""
        assert self._offsets is not None
        asked = self._offsets[1]
        if served and served > asked:
            # More than the limit: the server pages by its own size (the limit is not sent,
            # or not heeded). Stepping by the limit would deliver records twice.
            return served
        if not served or served >= asked:
            return None
        echoed = self._echoed_limit(page)
        if echoed is not None and 0 < echoed <= asked:
            return echoed
        total = self._total_items
        items = _as_count(_read(total, page), "total_items", page) if total is not None else None
        if (items is not None and items - self._offsets[0] > served) or says_more(page):
            return served
        return None

    def _check_cap(self, page: Page[Any], served: int | None, items: int) -> None:
        """A first page shorter than ``size`` while the total says there is more: the server
        serves fewer records per page than the page count assumes, and pages would be
        skipped. Fail, naming the size that works."""
        size = self._size
        if served is None or size is None or served >= size or items <= served:
            return
        shown = redact_url(page.response.url)
        raise PaginationError(
            f"page {page.number} ({shown}) holds {served} records where size={size} was "
            f"asked, and the total says {items:,}: the server caps the page size at "
            f"{served}, so a page count based on {size} would skip records. Ask for "
            f"PageNumber(size={served}, ...) (streampage fetch --size {served}).",
            page=page.number,
            url=shown,
        )

    def _check_fields(self, page: Page[Any]) -> None:
        """Fields the user named must exist on the first page: a wrong name would otherwise
        read as "unknown total" or "no records", and end the data silently."""
        kind = type(self._spec).__name__
        for option, source in (
            ("total_pages", self._total_pages),
            ("total_items", self._total_items),
            ("has_more", self._has_more),
            ("items", self._items),
        ):
            if isinstance(source, Header):
                if source.name not in page.response.headers:
                    raise ConfigurationError(
                        f"{kind}({option}=Header({source.name!r})): the first response "
                        f"({redact_url(page.response.url)}) has no {source.name} header; it "
                        f"has: {', '.join(sorted(page.response.headers)) or 'none'}"
                    )
            elif isinstance(source, str) and not has_path(page.data, source):
                if option == "items" and not count_records(page.data):
                    continue  # no records anywhere: an empty page, not a wrong name
                raise ConfigurationError(
                    f"{kind}({option}={source!r}): the first page "
                    f"({redact_url(page.response.url)}) has no field {source!r}; its keys "
                    f"are: {keys_of(page.data)}. Name the field that holds it."
                )

    def ends_at_status(self, number: int, status: int) -> bool:
        # A 404 past the data is how many APIs (Django REST framework) say "no such page";
        # on the first page it is a wrong URL, which the caller reports as an error.
        if self.open_ended and status == 404 and number > self._first:
            self.end_at(number - 1)
            return True
        return False

    def repeats(self, number: int) -> bool:
        """Page ``number`` has the same body as the page before it. Past the first two pages
        of an open-ended run, that is the end (json-server 1.x answers pages past the end
        with the last page again); otherwise the caller reports an error."""
        if self.open_ended and number > self._first + 1:
            self.end_at(number - 1)
            return True
        return False

    def failed(self, number: int) -> None:
        if number == self._first:
            self._first_done.set()

    def past_end(self, number: int) -> bool:
        return number > self._end  # asked four times a page: one comparison

    @property
    def _last(self) -> int | None:
        """The last page number, None while unknown; kept as ``_end`` (infinity while
        unknown) so that ``past_end`` and ``next``, on every page, compare once."""
        end = self._end
        return None if end == math.inf else int(end)

    @_last.setter
    def _last(self, last: int | None) -> None:
        self._end = math.inf if last is None else last

    @property
    def last(self) -> int | None:
        """The last page number, as far as is known now."""
        return self._last

    @property
    def bounded(self) -> bool:
        """Did the user bound the pages on purpose (``stop``, ``max_pages``, a start past
        the API's first page)? A total then counts more than was asked for."""
        spec = self._spec
        late = spec.start > (0 if isinstance(spec, Offset) else 1)
        return self._cap is not None or spec.stop is not None or late

    def _count_items(self, data: Any) -> int | None:
        """Records on a page by ``items=`` (0 when empty), or None when they cannot be
        counted."""
        items = self._items
        assert items is not None
        records = get_path(data, items) if isinstance(items, str) else items(data)
        if not records:
            return 0
        return len(records) if isinstance(records, list | tuple) else None

    def end_at(self, last: int) -> None:
        """The data ends at page ``last`` (the end only ever moves down)."""
        if last < self._end:
            self._end = last
            self.on_end(last)

    def adopt(self, page: Page[Any]) -> bool:
        """Take the first page, fetched by someone else (pages=auto), as this run's own."""
        self._next = self._first + 1
        return self.accept(page)


@dataclass(frozen=True, kw_only=True)
class Offset:
    """Pages selected by an offset and a limit in the query (``?offset=200&limit=100``).

    ``page.number`` is the page's index from 1. The first page is fetched alone: it tells
    how many records the server really serves per page, and the offsets step by that, so
    that a cap never skips records: the limit the body echoes (``limit_param``), or, when
    the page holds fewer than asked while it says there is more (a total, ``has_more``),
    what it served (a server that caps ``limit`` at 1,000 serves 1,000 where 2,000 were
    asked). The end is, by priority: ``stop`` (the offset past the last item, i.e. the
    item count); ``total_items`` read from the first response (a dotted path, a
    ``Header(...)`` or a function of the page); else it is found by fetching ahead: a page
    with fewer records than a full one is the last one (and is delivered) unless its body
    echoes the full limit (the server filtered records out of it), an empty page, a 404 or
    a page that repeats the one before it ends the data, and ``has_more`` false ends it.
    Records are counted from ``items`` (path or function of the body) or, by default, the
    body if it is a list, else its list of records (see PageNumber).
    ``limit_param=None`` does not send the limit (the server's own page size is used).
    """

    limit: int = 100
    start: int = 0
    stop: int | None = None
    param: str = "offset"
    limit_param: str | None = "limit"
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
        if not self.param or self.limit_param == "":
            raise ConfigurationError("Offset(param=..., limit_param=...) must name parameters")

    @property
    def releases_in_order(self) -> bool:
        """Without ``stop``, a full page that answered early may lie past a slower short
        page that ends the data: the stream then yields in page order (see PageNumber).
        Not with ``total_items``, which is expected to give the end before fanning out."""
        return self.stop is None and self.total_items is None

    def begin(
        self, url: URL, *, max_pages: int | None, resume: Resume | None = None
    ) -> _IndexedRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        stop = self.stop
        return _IndexedRun(
            spec=self,
            url=url,
            first=1,
            last=None if stop is None else math.ceil(max(0, stop - self.start) / self.limit),
            max_pages=max_pages,
            param=self.param,
            extra={self.limit_param: self.limit} if self.limit_param else {},
            size=self.limit,
            offsets=(self.start, self.limit),
            total_pages=None,
            total_items=self.total_items,
            has_more=self.has_more,
            items=self.items,
            resume=resume,
        )

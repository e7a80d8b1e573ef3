"""``pages=auto``, the default: pick the paginator from the first response, as a person would,
then confirm the guess on the second page before fanning out."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yarl import URL

from ._checkpoint import Resume
from ._decode import count_records, find_records, get_path, is_empty
from ._errors import PageError, PaginationError
from ._evidence import HAS_MORE_FIELDS, NEXT_LINK_FIELDS, as_count, found_totals, says_more
from ._page import Page
from ._pagination import Header, Offset, PageNumber, Paginator, ValueSource
from ._redact import redact_url
from ._walks import Cursor, LinkHeader, NextURL, parse_link_header

__all__ = ["Auto", "describe", "detect"]

#: field of the next cursor -> the query parameter it goes back in
_CURSOR_FIELDS = {
    "next_cursor": "cursor",
    "nextCursor": "cursor",
    "meta.next_cursor": "cursor",
    "meta.nextCursor": "cursor",
    "pagination.next_cursor": "cursor",
    "pagination.nextCursor": "cursor",
    "response_metadata.next_cursor": "cursor",
    "next_page_token": "page_token",
    "nextPageToken": "pageToken",
    "next_page": "cursor",  # fastapi-pagination's cursor page (a string; a number is a page)
    "next_token": "next_token",
    "nextToken": "nextToken",
    "meta.next_token": "pagination_token",
    "paging.cursors.after": "after",
    "cursors.after": "after",
    "data.after": "after",
    "after": "after",
    "continuation": "continuation",
    "continuationToken": "continuationToken",
    "continuation_token": "continuation_token",
    "cursor": "cursor",
}
#: query parameters that select a page by number, by offset, and set the page size
_PAGE_PARAMS = (
    "page",
    "_page",
    "p",
    "page_number",
    "pageNumber",
    "page_no",
    "pageNo",
    "pageIndex",
    "currentPage",
    "pg",
)
_OFFSET_PARAMS = ("offset", "_start", "start", "skip", "from", "startIndex", "start_index")
_SIZE_PARAMS = (
    "per_page",
    "_per_page",
    "perPage",
    "limit",
    "_limit",
    "page_size",
    "pageSize",
    "size",
    "take",
    "rows",
    "count",
    "maxResults",
    "max_results",
)
#: body fields that echo an offset, and the limit that goes with it
_OFFSET_ECHOES = (
    ("offset", "limit"),
    ("skip", "take"),
    ("skip", "limit"),
    ("start", "rows"),
    ("start", "limit"),
    ("from", "size"),
    ("_start", "_limit"),
)
_ECHO_PLACES = ("", "meta.", "pagination.", "paging.", "response.")
_PAGE_ECHO_FIELDS = (
    "page",
    "current_page",
    "currentPage",
    "page_number",
    "pageNumber",
    "meta.page",
    "meta.current_page",
    "pagination.page",
    "pagination.current_page",
    "number",  # Spring Data (zero-based)
)
_INT_NEXT_PAGE_FIELDS = ("next_page", "nextPage", "meta.next_page", "pagination.next_page", "next")

logger = logging.getLogger("streampage")


@dataclass(frozen=True)
class _Choice:
    """What Auto decided: the paginator (as a user could name it), the URL it begins from (a
    next link, when the pages fan out along it), and whether to confirm the guess on the
    second page alone."""

    pages: Paginator
    url: URL
    confirm: bool = True


def describe(paginator: Any) -> str:
    """A paginator as the call that makes it, with only the options that differ from the
    defaults: what to write to pin Auto's choice."""
    if isinstance(paginator, Auto):
        return "Auto()"
    if not dataclasses.is_dataclass(paginator):
        return repr(paginator)
    shown = []
    for f in dataclasses.fields(paginator):
        value = getattr(paginator, f.name)
        if value != f.default:
            shown.append(f"{f.name}={_shown(value)}")
    return f"{type(paginator).__name__}({', '.join(shown)})"


def _shown(value: Any) -> str:
    """An option's value as code; a function by its name (its repr holds an address that
    differs from run to run)."""
    if callable(value) and not isinstance(value, type):
        return str(getattr(value, "__qualname__", type(value).__qualname__))
    return repr(value)


def _whole(value: Any) -> int | None:
    return as_count(value) if not isinstance(value, str) or value.isdigit() else None


def _query_int(url: URL, names: tuple[str, ...]) -> tuple[str, int] | None:
    """The first of ``names`` in the URL's query with a whole-number value."""
    for name in names:
        value = url.query.get(name)
        if value is not None and value.isdigit():
            return name, int(value)
    return None


def _query_name(url: URL, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in url.query), None)


def _totals(page: Page[Any]) -> tuple[ValueSource | None, ValueSource | None]:
    """(a record total, a page total) the first response reports, each a body field or a
    header (a body field first), as the paginator would be told to read them."""
    found = sorted(found_totals(page), key=lambda total: total.header is not None)

    def first(unit: str) -> ValueSource | None:
        for total in found:
            if total.unit == unit:
                return total.path if total.path is not None else Header(str(total.header))
        return None

    return first("records"), first("pages")


def _is_link(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://", "/", "?"))


def _fan_along(
    current: URL, nxt: URL, per_page: int | None, items: ValueSource | None, pages: Any
) -> _Choice | None:
    """Page numbers or offsets along a next link, when a total says how far they go and the
    next URL differs from the current one in one whole-number parameter (plus, at most, a
    page size the server added): DRF's ``?page=2`` or ``?limit=100&offset=100``."""
    if (items is None and pages is None) or nxt.origin() != current.origin():
        return None
    if nxt.path != current.path:
        return None
    a, b = current.query, nxt.query
    if any(len(b.getall(k)) != 1 for k in b) or any(k not in b for k in a):
        return None
    differing = [k for k in b if a.get(k) != b[k]]
    if len(differing) == 1:
        index = differing[0]
    else:
        indexes = [k for k in differing if k in _PAGE_PARAMS or k in _OFFSET_PARAMS]
        if len(indexes) != 1:
            return None
        index = indexes[0]
    others = [k for k in differing if k != index]
    if any(k not in _SIZE_PARAMS or k in a or not b[k].isdigit() for k in others):
        return None
    if not b[index].isdigit() or (index in a and not a[index].isdigit()):
        return None
    offset_like = index in _OFFSET_PARAMS or (index not in _PAGE_PARAMS and bool(others))
    here = int(a[index]) if index in a else (0 if offset_like else 1)
    step = int(b[index]) - here
    if step < 1:
        return None
    if offset_like or step > 1:
        if items is None or (per_page is not None and per_page != step):
            return None
        size = others[0] if others else None
        offset = Offset(limit=step, start=here, param=index, limit_param=size, total_items=items)
        return _Choice(offset, nxt)
    if pages is not None:
        numbered = PageNumber(start=here, param=index, total_pages=pages, size_param=None)
    elif per_page:
        numbered = PageNumber(
            start=here, param=index, total_items=items, size=per_page, size_param=None
        )
    else:
        return None
    return _Choice(numbered, nxt)


def detect(page: Page[Any], url: URL | None = None) -> _Choice | None:
    """The paginator a person would pick from a first response; None when the response
    shows no pagination at all. Raises ValueError when it points two ways at once.

    ``url`` is the URL the first page was asked for (its query's page, offset and size
    parameters are reused rather than added to)."""
    url = page.response.url if url is None else url
    data = page.data
    records = find_records(data)
    per_page = len(records) if isinstance(records, list) else None
    items, pages = _totals(page)
    found: list[_Choice] = []
    links = parse_link_header(page.response.headers.getall("Link", ()), page.response.url)
    if "next" in links:
        fan = None if "last" in links else _fan_along(url, links["next"], per_page, items, pages)
        found.append(fan or _Choice(LinkHeader(), url))
    for field in NEXT_LINK_FIELDS:
        value = get_path(data, field)
        if _is_link(value):
            nxt = page.response.url.join(URL(value))
            fan = _fan_along(url, nxt, per_page, items, pages)
            found.append(fan or _Choice(NextURL(field=field), url, confirm=False))
            break
    for field, param in _CURSOR_FIELDS.items():
        value = get_path(data, field)
        if isinstance(value, str) and value and not _is_link(value):
            found.append(_Choice(Cursor(field=field, param=param), url, confirm=False))
            break
    if len(found) > 1:
        raise ValueError(" and ".join(describe(c.pages) for c in found))
    if found:
        return found[0]
    return _indexed(page, url, per_page, items, pages)


def _indexed(
    page: Page[Any], url: URL, per_page: int | None, items: ValueSource | None, pages: Any
) -> _Choice | None:
    """Page numbers or offsets, from the totals, echoes and parameters of a first page."""
    data = page.data
    in_url = _query_int(url, _PAGE_PARAMS)
    param, here = in_url if in_url is not None else ("page", 1)
    if in_url is None and any(_whole(get_path(data, f)) == 0 for f in _PAGE_ECHO_FIELDS):
        here = 0  # the first page echoes page 0: a zero-based API (Spring Data's "number")
    size_name = _query_name(url, _SIZE_PARAMS)
    # offsets: an offset parameter in the URL, or one echoed in the body
    offset_in_url = _query_int(url, _OFFSET_PARAMS)
    echo: tuple[str, str, int, int | None] | None = None
    for place in _ECHO_PLACES:
        for off, lim in _OFFSET_ECHOES:
            value = _whole(get_path(data, place + off))
            if value is not None:
                echo = (off, lim, value, _whole(get_path(data, place + lim)))
                break
        if echo is not None:
            break
    offsets = echo is not None or offset_in_url is not None
    if offsets and in_url is None and (items is not None or says_more(page)):
        if offset_in_url is not None:
            off_param, start = offset_in_url
        else:
            assert echo is not None
            off_param, start = echo[0], echo[2]
        limit = echo[3] if echo is not None and echo[3] else per_page
        if not limit:
            return None
        limit_param = size_name or (echo[1] if echo is not None and echo[3] else None)
        offset = Offset(
            limit=limit, start=start, param=off_param, limit_param=limit_param, total_items=items
        )
        return _Choice(offset, url)
    if pages is not None:
        return _Choice(PageNumber(start=here, param=param, total_pages=pages, size_param=None), url)
    echoed = in_url is not None or isinstance(data, list)
    echoed = echoed or any(_whole(get_path(data, f)) in (here, here - 1) for f in _PAGE_ECHO_FIELDS)
    echoed = echoed or any(_whole(get_path(data, f)) == here + 1 for f in _INT_NEXT_PAGE_FIELDS)
    if items is not None and per_page and (echoed or isinstance(items, Header)):
        numbered = PageNumber(
            start=here, param=param, total_items=items, size=per_page, size_param=None
        )
        return _Choice(numbered, url)
    for field in HAS_MORE_FIELDS:
        if isinstance(get_path(data, field), bool):
            return _Choice(
                PageNumber(start=here, param=param, has_more=field, size_param=None), url
            )
    if (echoed and not is_empty(data)) or isinstance(data, list):
        return _Choice(PageNumber(start=here, param=param, size_param=None), url)
    return None


@dataclass(frozen=True)
class Auto:
    """Look at the first response and pick the paginator a person would (the default).

    In order: a ``Link`` header with ``rel="next"`` (LinkHeader, fanning out with
    ``rel="last"``); a next-URL field such as ``next`` or ``links.next`` (NextURL); a cursor
    field such as ``next_cursor``, ``next_page``, ``after`` or ``nextPageToken`` (Cursor);
    an echoed offset (``offset``/``limit``, ``skip``/``take``, ``start``/``rows``) with a
    total (Offset); a page count such as ``total_pages`` or ``pages`` (PageNumber); a record
    total (``total``, ``count``, ``X-Total-Count``, ...) with page numbers; a ``has_more``
    flag; a list body, or one that echoes its page number (PageNumber until an empty page).
    A next link together with a total, where the next URL differs from the current one in
    one whole-number parameter (Django REST framework's ``count`` + ``next``), fans out by
    that parameter instead of walking. Page, offset and size parameters already in the
    URL's query are reused, never added twice. A guessed page-number or offset paginator is
    confirmed on page 2, fetched alone, before the rest fan out: a page 2 that repeats page
    1 or is empty, while a total says there is more, is an error; without a total it means
    the first page is all there is. A response that points two ways at once is an error
    that asks you to name the paginator; one with no sign of pagination is the only page.
    The choice is logged (logger ``streampage``, level INFO) as the paginator that pins it.
    Pages are numbered from 1 and released in order.
    """

    def begin(self, url: URL, *, max_pages: int | None, resume: Resume | None = None) -> _AutoRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return _AutoRun(url, max_pages, resume)

    @property
    def releases_in_order(self) -> bool:
        """The guess may be open-ended (its end found by looking), which needs pages in
        order; known ranges lose little to it."""
        return True


class _AutoRun:
    def __init__(self, url: URL, max_pages: int | None, resume: Resume | None) -> None:
        self._url = url
        self._max_pages = max_pages
        self._resume = resume
        self._run: Any = None
        self._first_given = False
        self._decided = asyncio.Event()
        self._error: PageError | None = None
        self._on_end: Callable[[int], None] = lambda last: None
        #: the page that confirms a guess, fetched alone; set when it has settled
        self._confirm: int | None = None
        self._confirmed = asyncio.Event()
        self._stopped = False
        #: the first response said there is more than it holds (a total, has_more)
        self._more = False
        #: the numbering of the paginator chosen (see _fingerprint.numbering), once chosen
        self.chosen: str | None = None
        self.param: str | None = None
        #: the paginator chosen and the URL it runs over (a sharded job splits its pages)
        self.spec: Any = None
        self.spec_url: URL | None = None

    @property
    def open_ended(self) -> bool:
        return bool(self._run.open_ended) if self._run is not None else False

    @property
    def walks(self) -> bool:
        return bool(getattr(self._run, "walks", False))

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
        if self._run is None or self._stopped:
            return None
        if self._confirm and not self._confirmed.is_set():
            await self._confirmed.wait()
            if self._stopped:
                return None
        number = await self._run.next()
        if self._confirm == 0:  # the first page after page 1 is the confirmation
            self._confirm = number
        return None if number is None else int(number)

    def url(self, number: int) -> URL:
        return self._url if self._run is None else self._run.url(number)

    def count(self, data: Any) -> int | None:
        run = self._run
        if run is not None and hasattr(run, "count"):
            return run.count(data)  # type: ignore[no-any-return]
        return count_records(data)

    def accept(self, page: Page[Any]) -> bool:
        if self._run is not None:
            if page.number == self._confirm:
                self._check_confirmation(page)
            return bool(self._run.accept(page))
        try:
            choice = detect(page, self._url)
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
        if choice is None:
            logger.info(
                "pages=auto: no sign of pagination in the first response of %s; it is the "
                "only page (name a paginator with pages=... if there are more)",
                redact_url(page.response.url),
            )
            self.chosen = "one page"
            self._decided.set()
            return self._resume is None or 1 not in self._resume.done
        logger.info(
            "pages=auto chose %s for %s", describe(choice.pages), redact_url(page.response.url)
        )
        run: Any = self._begin(choice)
        run.on_end = self._on_end
        self._run = run
        from ._fingerprint import numbering  # it builds on describe(), here

        spec = choice.pages  # numbered from 1 here: a PageNumber's start is a shift
        self.chosen = numbering(spec, spec.start - 1 if isinstance(spec, PageNumber) else 0)
        self.param = getattr(run, "param", None)
        self.spec, self.spec_url = spec, choice.url
        if choice.confirm:
            self._confirm = 0
            self._more = says_more(page)
        self._decided.set()
        return bool(run.adopt(page))

    def _begin(self, choice: _Choice) -> Any:
        """The chosen paginator's run, numbering pages from 1 like Auto does (a page
        parameter that starts at 0 or 5 in the URL is shifted, not renumbered)."""
        spec = choice.pages
        if isinstance(spec, PageNumber):
            return spec.run_from(1, choice.url, max_pages=self._max_pages, resume=self._resume)
        return spec.begin(choice.url, max_pages=self._max_pages, resume=self._resume)

    def settled(self, number: int) -> None:
        """Page ``number``'s fetch is over, whatever came of it: after the confirmation
        page, the rest may fan out (or not, if it stopped the run)."""
        if number == self._confirm:
            self._confirmed.set()

    def _check_confirmation(self, page: Page[Any]) -> None:
        """Page 2 of a guess: empty while the total says there is more means the guessed
        parameter is not the API's (it took it as a filter, or ignored it)."""
        last = self._run.last
        more = self._more or (last is not None and last >= page.number)
        if more and self.count(page.data) == 0:
            self._stopped = True
            shown = redact_url(page.response.url)
            raise PaginationError(
                f"pages=auto guessed that the query parameter {self.param!r} selects pages, "
                f"but page {page.number} ({shown}) is empty although the first page says "
                f"there is more: the server does not take {self.param!r} as its page "
                "parameter. Name the paginator with pages=... (or put the API's own page "
                "parameter in the URL, e.g. ?_page=1).",
                page=page.number,
                url=shown,
            )

    def repeats(self, number: int) -> bool:
        """A page that repeats the one before it: for the confirmation page of a guess with
        no total, the first page is all there is (the server does not paginate by the
        guessed parameter); with a total saying more, an error (the caller raises)."""
        run = self._run
        if run is None:
            return False
        if number == self._confirm:
            if run.open_ended and not self._more:
                logger.info(
                    "pages=auto: page %d is page %d again: the server ignores the page "
                    "parameter %r (or does not paginate), so the first page is all there is "
                    "(name a paginator with pages=... if there are more)",
                    number,
                    number - 1,
                    self.param,
                    extra={"streampage_decision": True},  # no event says it: the CLI shows it
                )
                self._stopped = True
                run.end_at(number - 1)
                return True
            # the first page said there is more: the guess is wrong, and the caller says so
            self._stopped = True
            return False
        ends = getattr(run, "repeats", None)
        return bool(ends(number)) if ends is not None else False

    def ends_at_status(self, number: int, status: int) -> bool:
        return self._run is not None and bool(self._run.ends_at_status(number, status))

    def end_at(self, last: int) -> None:
        end_at = getattr(self._run, "end_at", None)
        if end_at is not None:
            end_at(last)

    @property
    def last(self) -> int | None:
        return None if self._run is None else self._run.last

    @property
    def bounded(self) -> bool:
        return bool(getattr(self._run, "bounded", False))

    def failed(self, number: int) -> None:
        if self._run is not None:
            self._run.failed(number)
            if number == self._confirm:
                self._stopped = True
        else:
            self._decided.set()

    def past_end(self, number: int) -> bool:
        # without a delegate there is no page 2 to be past: next() hands none out
        return self._run is not None and bool(self._run.past_end(number))

    @property
    def releases_in_order(self) -> bool:
        return True

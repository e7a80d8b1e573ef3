"""``pages=auto``, the default: pick the paginator from the first response, as a person would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yarl import URL

from ._checkpoint import Resume
from ._decode import get_path
from ._errors import PageError, PaginationError
from ._page import Page
from ._pagination import PageNumber, Paginator
from ._redact import redact_url
from ._walks import Cursor, LinkHeader, NextURL, parse_link_header

__all__ = ["Auto", "detect"]

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

logger = logging.getLogger("streampage")


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

    def begin(self, url: URL, *, max_pages: int | None, resume: Resume | None = None) -> _AutoRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return _AutoRun(url, max_pages, resume)


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
                    logger.warning(
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
            logger.info(
                "pages=auto: no sign of pagination in the first response of %s; it is the "
                "only page (name a paginator with pages=... if there are more)",
                redact_url(page.response.url),
            )
            self._decided.set()
            return self._resume is None or 1 not in self._resume.done
        logger.info("pages=auto chose %r for %s", chosen, redact_url(page.response.url))
        run: Any = chosen.begin(self._url, max_pages=self._max_pages, resume=self._resume)
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

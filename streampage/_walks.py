"""Sequential walks: the response to each page names the next one (cursor, next URL, Link).

These cannot fan out within one walk; the engine still overlaps fetch, decode and
consumption, and runs many walks at once when a stream has many sources. A ``Link`` header
with ``rel="last"`` in GitHub's style is the exception: it turns into a page-number fan-out.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from yarl import URL

from ._checkpoint import Resume
from ._decode import get_path, has_path, keys_of
from ._errors import ConfigurationError, PageError, PaginationError
from ._page import Page
from ._redact import redact_url

__all__ = ["Cursor", "LinkHeader", "NextURL", "fan_out", "parse_link_header"]


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
    #: a checkpoint keeps the URL of the last committed page: a resume starts there
    walks = True

    def __init__(
        self,
        url: URL,
        max_pages: int | None,
        *,
        cross_origin: bool,
        resume: Resume | None = None,
        restart_at: tuple[int, URL] | None = None,
    ) -> None:
        # On resume a walk starts again at its last committed page (fetched again, not
        # delivered again) to learn the link to the next one.
        first = restart_at if restart_at is not None else (1, url)
        self._urls: dict[int, URL] = {first[0]: first[1]}
        self._done = resume.done if resume is not None else None
        self._origin = url.origin()
        self._cross_origin = cross_origin
        self._next = first[0]
        self._last = max_pages
        self._ended = False
        self._error: PageError | None = None
        self._changed = asyncio.Event()
        self._repeats = _Repeats()
        self._repeats.seen(str(first[1]))  # a link back to the first page is a loop too
        self._fields_checked = False
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
        if not self._fields_checked:
            self._fields_checked = True
            self._check_field(page)
        target = self.follow(page)
        if target is None:
            self._end()
        else:
            self._urls[page.number + 1] = target
            self._changed.set()
        return self._done is None or page.number not in self._done

    def follow(self, page: Page[Any]) -> URL | None:
        """The URL of the page after ``page``, or None at the end."""
        raise NotImplementedError

    #: (paginator name, option, dotted path) of the field the walk follows, checked on the
    #: first page; None when it is a function or not a body field
    _field: tuple[str, str, str] | None = None

    def _check_field(self, page: Page[Any]) -> None:
        """The field a walk follows must exist on its first page (null is fine: the last
        page), unless that page shows no pagination at all (then it is the only page). An
        absent field beside another way to the next page is a wrong name, which would end
        the walk after one page."""
        if self._field is None:
            return
        kind, option, path = self._field
        if has_path(page.data, path):
            return
        # Many APIs leave the field out on their last page (Google's nextPageToken, Graph's
        # @odata.nextLink), so on a one-page result its absence is no error. It is when the
        # page shows another way to the next page, which the named field should have been.
        from ._auto import describe, detect  # pages=auto builds on the walks

        try:
            choice = detect(page)
            other = None if choice is None else describe(choice.pages)
        except ValueError as exc:
            other = str(exc)
        if other is None:
            return
        raise ConfigurationError(
            f"{kind}({option}={path!r}): the first page ({redact_url(page.response.url)}) "
            f"has no field {path!r}; its keys are: {keys_of(page.data)}, and it looks "
            f"paginated as {other}. Name the field that holds the next page's "
            + ("cursor" if kind == "Cursor" else "URL")
            + " (or leave pages= out to let streampage pick the paginator)."
        )

    def ends_at_status(self, number: int, status: int) -> bool:
        return False

    def failed(self, number: int) -> None:
        self._end()  # without this page's answer the walk cannot go on

    def past_end(self, number: int) -> bool:
        return False

    @property
    def last(self) -> int | None:
        """The last page number, when known before the walk gets there (never, for a walk)."""
        return None

    @property
    def bounded(self) -> bool:
        """Did the user bound the walk on purpose (``max_pages``)?"""
        return self._last is not None

    def _end(self) -> None:
        self._ended = True
        self._changed.set()

    def adopt(self, page: Page[Any]) -> bool:
        """Take the first page, fetched by someone else (pages=auto), as this run's own."""
        if 1 not in self._urls:  # resumed further on: page 1 is done, go on from there
            return False
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
#: What stays as it is in a pre-encoded cursor: its escapes, and what RFC 3986 allows in a
#: query value; &, =, #, ? and spaces are escaped.
_CURSOR_SAFE = "%/:@!$'()*,;~-._+"
_LOOKS_LIKE_URL = re.compile(r"https?://|/[^\s?]*\?[^\s]*=|\?[^\s]*=", re.IGNORECASE)


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

    def begin(self, url: URL, *, max_pages: int | None, resume: Resume | None = None) -> _WalkRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return _CursorRun(self, url, max_pages, resume)


class _CursorRun(_WalkRun):
    def __init__(
        self, spec: Cursor, url: URL, max_pages: int | None, resume: Resume | None
    ) -> None:
        self._spec = spec
        self._base = url.without_query_params(spec.param)
        first = self._with_cursor(spec.initial) if spec.initial else self._base
        super().__init__(
            first,
            max_pages,
            cross_origin=False,
            resume=resume,
            restart_at=resume.walk if resume is not None else None,
        )
        if spec.initial:
            self._repeats.seen(spec.initial)
        if isinstance(spec.field, str):
            self._field = ("Cursor", "field", spec.field)

    def _with_cursor(self, cursor: str) -> URL:
        if _ENCODED.search(cursor):
            # Already percent-encoded: its escapes stay as they are, but a cursor is one
            # query value, so &, =, # and ? in it are escaped, never read as syntax.
            sep = "&" if self._base.raw_query_string else "?"
            value = quote(cursor, safe=_CURSOR_SAFE)
            return URL(f"{self._base}{sep}{quote(self._spec.param, safe='')}={value}", encoded=True)
        return self._base.update_query({self._spec.param: cursor})

    def follow(self, page: Page[Any]) -> URL | None:
        field = self._spec.field
        cursor = _text(get_path(page.data, field) if isinstance(field, str) else field(page))
        if cursor is None:
            return None
        if _LOOKS_LIKE_URL.match(cursor):
            raise ConfigurationError(
                f"Cursor(field={field!r}) holds a whole URL ({redact_url(cursor)}), not a "
                f"cursor: it is a next link. Use NextURL(field={field!r}) (streampage fetch "
                "--pages next-url), which follows it as it is."
            )
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

    def begin(self, url: URL, *, max_pages: int | None, resume: Resume | None = None) -> _WalkRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return _NextURLRun(self, url, max_pages, resume)

    @property
    def may_leave_origin(self) -> bool:
        """Whether requests may go to other origins (then credentials are chosen per URL)."""
        return self.cross_origin


class _NextURLRun(_WalkRun):
    def __init__(
        self, spec: NextURL, url: URL, max_pages: int | None, resume: Resume | None
    ) -> None:
        self._spec = spec
        super().__init__(
            url,
            max_pages,
            cross_origin=spec.cross_origin,
            resume=resume,
            restart_at=resume.walk if resume is not None else None,
        )
        if isinstance(spec.field, str):
            self._field = ("NextURL", "field", spec.field)

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

    def begin(self, url: URL, *, max_pages: int | None, resume: Resume | None = None) -> _LinkRun:
        """A fresh run state for one stream over ``url`` (its query already merged)."""
        return _LinkRun(self, url, max_pages, resume)

    @property
    def may_leave_origin(self) -> bool:
        """Whether requests may go to other origins (then credentials are chosen per URL)."""
        return self.cross_origin


class _LinkRun(_WalkRun):
    def __init__(
        self, spec: LinkHeader, url: URL, max_pages: int | None, resume: Resume | None
    ) -> None:
        self._spec = spec
        # Resumed from page 1: it tells whether to fan out (then done pages are not fetched
        # at all) or to walk (then they are fetched again, not delivered).
        super().__init__(url, max_pages, cross_origin=spec.cross_origin, resume=resume)
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
        while self._done is not None and number in self._done:
            number += 1
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

    @property
    def last(self) -> int | None:
        return None if self._fan is None else self._fan[3]

    def follow(self, page: Page[Any]) -> URL | None:
        if self._fan is not None:
            return None
        links = parse_link_header(page.response.headers.getall("Link", ()), page.response.url)
        target = links.get(self._spec.rel)
        if target is None:
            return None
        if page.number == 1 and self._spec.fan_out and "last" in links:
            fan = fan_out(target, links["last"])
            if fan is not None and (self._cross_origin or target.origin() == self._origin):
                self._fan = fan
                self._urls.clear()
                self._changed.set()
                return None
        return self._checked(page, target, "Link rel=next")

    def accept(self, page: Page[Any]) -> bool:
        fresh = self._done is None or page.number not in self._done
        if self._fan is not None:
            return fresh and not self.past_end(page.number)
        target = self.follow(page)
        if self._fan is not None:
            return fresh
        if target is None:
            self._end()
        else:
            self._urls[page.number + 1] = target
            self._changed.set()
        return fresh


def fan_out(next_url: URL, last_url: URL) -> tuple[URL, str, int, int] | None:
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

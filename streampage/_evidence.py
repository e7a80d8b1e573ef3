"""What a source's responses said about how much data there is, and the check at its end.

Transport reliability guarantees every page *asked for*; it cannot tell whether the right
pages were asked for. So every response is read for evidence of the size of the data (a
total, a count, a page count, ``X-Total-Count``, ``rel="last"``) and, when the source ends,
what was delivered is held against it. A run says "complete" only when the data it saw
agrees, and says "not verifiable" when nothing could be checked.

Drift against loss: a live API gains or loses records while a run goes, and its total moves
with it. Every page that carries a total is read, and the lowest and highest values seen are
kept. When the total never moved, the delivered count must equal it exactly. When it moved,
the delivered count must lie between the lowest and the highest total reported: records
added or removed during the run explain anything in that range, and nothing explains a
count outside it (a page-size cap, an ignored parameter or a wrong records path all fall
short of the *smallest* total the server ever gave).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from yarl import URL

from ._decode import count_records, get_path, has_path
from ._errors import IncompleteError
from ._page import Page
from ._redact import redact_url
from ._walks import fan_out, parse_link_header

__all__ = [
    "HAS_MORE_FIELDS",
    "HEADER_TOTALS",
    "NEXT_LINK_FIELDS",
    "PAGE_TOTAL_FIELDS",
    "RECORD_TOTAL_FIELDS",
    "Completeness",
    "Tally",
    "as_count",
    "count_is_total",
    "found_totals",
    "last_page_said",
    "lower_bound",
    "says_more",
]

#: Body fields that hold the number of records in the whole collection, as widely used
#: frameworks name them (DRF's ``count`` only beside ``next``: see _body_readers).
RECORD_TOTAL_FIELDS = (
    "total",
    "total_count",
    "totalCount",
    "total_items",
    "totalItems",
    "total_results",
    "totalResults",
    "totalElements",
    "numFound",
    "response.numFound",
    "hits.total.value",
    "hits.total",
    "meta.total",
    "meta.total_count",
    "meta.totalCount",
    "meta.total_items",
    "meta.pagination.total",
    "pagination.total",
    "pagination.total_count",
    "pagination.totalCount",
    "pagination.total_items",
    "paging.total",
    "page.totalElements",
    "items",  # json-server 1.x: the record count beside ``data`` (a list is not a count)
)
#: Body fields that hold the number of pages.
PAGE_TOTAL_FIELDS = (
    "total_pages",
    "totalPages",
    "pages",
    "page_count",
    "pageCount",
    "last_page",
    "lastPage",
    "num_pages",
    "meta.total_pages",
    "meta.totalPages",
    "meta.last_page",
    "meta.pagination.pages",
    "meta.pagination.total_pages",
    "pagination.total_pages",
    "pagination.totalPages",
    "pagination.pages",
    "page.totalPages",
)
#: Response headers that carry a total: (name, unit).
HEADER_TOTALS = (
    ("X-Total-Count", "records"),
    ("X-Total", "records"),
    ("X-Pagination-Total-Count", "records"),
    ("X-WP-Total", "records"),
    ("X-Total-Pages", "pages"),
    ("X-Pagination-Page-Count", "pages"),
    ("X-WP-TotalPages", "pages"),
)
_NOTES = 10


def as_count(value: Any) -> int | None:
    """A whole number >= 0 (an int, or a string of digits), else None: a float or a word is
    not a count of anything."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


Reader = Callable[[Page[Any]], Any]


#: Body fields that hold a link to the next page, by the names frameworks give them.
NEXT_LINK_FIELDS = (
    "next",
    "next_url",
    "nextUrl",
    "next_page",
    "next_page_url",
    "nextPageUrl",
    "links.next",
    "links.next.href",
    "_links.next.href",
    "paging.next",
    "pagination.next",
    "pagination.next_url",
    "meta.next",
    "meta.next_page_url",
    "@odata.nextLink",
)


#: Body flags that say whether more pages follow.
HAS_MORE_FIELDS = ("has_more", "hasMore", "has_next", "hasNext", "more", "meta.has_more")


def lower_bound(data: Any, path: str) -> bool:
    """Is the total at ``path`` only a lower bound? Elasticsearch stops counting hits at
    ``track_total_hits`` and says so: ``"hits": {"total": {"value": 10000, "relation":
    "gte"}}``."""
    return path.startswith("hits.total") and get_path(data, "hits.total.relation") == "gte"


def count_is_total(data: Any) -> bool:
    """Is a body's ``count`` the size of the whole collection? Beside a next link it is
    (Django REST framework, Zendesk); alone it is as often the size of the page, so only
    a count above the records the page holds is taken for a total."""
    if any(has_path(data, field) for field in ("next", "next_page", "next_page_url")):
        return True
    count = as_count(get_path(data, "count"))
    records = count_records(data)
    return count is not None and records is not None and count > records


class Total(NamedTuple):
    """A well-known total found on a page: in a header (``header``) or a body field
    (``path``), counting ``unit`` ("records" or "pages")."""

    evidence: str
    unit: str
    value: int
    header: str | None
    path: str | None


def found_totals(page: Page[Any], *, lower_bounds: bool = False) -> list[Total]:
    """Every well-known total a response carries as a whole number: the headers first,
    then the body fields, in the order of the lists above. ``count`` only where it is the
    collection's (see count_is_total); Elasticsearch's lower bound only if asked for (it
    says there is more, never how much)."""
    found = []
    headers = page.response.headers
    for name, unit in HEADER_TOTALS:
        value = as_count(headers.get(name))
        if value is not None:
            found.append(Total(f"header {name}", unit, value, name, None))
    data = page.data
    fields = [(path, "records") for path in RECORD_TOTAL_FIELDS]
    fields += [(path, "pages") for path in PAGE_TOTAL_FIELDS]
    if count_is_total(data):
        fields.append(("count", "records"))
    for path, unit in fields:
        value = as_count(get_path(data, path))
        if value is not None and (lower_bounds or not lower_bound(data, path)):
            found.append(Total(f"body field {path!r}", unit, value, None, path))
    return found


def last_page_said(page: Page[Any], first: int) -> int | None:
    """The last page number a response says there is, from its page count (or from a record
    total no larger than what the page holds: then it is the only page). None when it
    does not say."""
    totals = found_totals(page)
    pages = [total.value for total in totals if total.unit == "pages"]
    if pages:
        return first + max(pages[0], 1) - 1
    records = count_records(page.data)
    if records is None:
        return None
    if any(total.unit == "records" and total.value <= records for total in totals):
        return first
    return None


def says_more(page: Page[Any]) -> bool:
    """Does a (first) response say there is more data than it holds: a ``has_more`` that is
    true, a page count above 1, or a record total above the records it holds?"""
    if any(get_path(page.data, field) is True for field in HAS_MORE_FIELDS):
        return True
    records = count_records(page.data) or 0
    return any(
        total.value > (1 if total.unit == "pages" else records)
        for total in found_totals(page, lower_bounds=True)
    )


@dataclass(slots=True)
class Reported:
    """A total as the responses reported it: its lowest and highest value over the run."""

    evidence: str
    unit: str
    lo: int
    hi: int

    def see(self, value: int) -> None:
        if value < self.lo:
            self.lo = value
        elif value > self.hi:
            self.hi = value


def _header_reader(name: str) -> Reader:
    return lambda page: page.response.headers.get(name)


def _body_reader(path: str) -> Reader:
    return lambda page: get_path(page.data, path)


def own_totals(paginator: Any) -> list[tuple[str, str, Reader]]:
    """The totals a paginator was told to read (``total_pages=``, ``total_items=``), when
    they are a field or a header: checked whatever their names."""
    found: list[tuple[str, str, Reader]] = []
    for option, unit in (("total_pages", "pages"), ("total_items", "records")):
        source = getattr(paginator, option, None)
        if isinstance(source, str):
            found.append((f"body field {source!r}", unit, _body_reader(source)))
        elif source is not None and hasattr(source, "name"):
            found.append((f"header {source.name}", unit, _header_reader(source.name)))
    return found


def _readers(page: Page[Any], own: list[tuple[str, str, Reader]]) -> list[tuple[str, str, Reader]]:
    """Where this source reports totals, decided on its first page: the paginator's own
    totals, then every well-known header and body field that holds a whole number there."""
    readers = list(own)
    taken = {evidence for evidence, _unit, _read in readers}
    found = [total for total in found_totals(page) if total.evidence not in taken]
    for total in found:
        if total.header is not None:
            readers.append((total.evidence, total.unit, _header_reader(total.header)))
    headers = page.response.headers
    links = parse_link_header(headers.getall("Link", ()), page.response.url)
    if "next" in links and "last" in links and "Link rel=last" not in taken:
        fan = fan_out(links["next"], links["last"])
        if fan is not None:
            # fan[3] counts this page as page 1; it may be page 4 of a resumed walk
            pages = page.number - 1 + fan[3]
            readers.append(("Link rel=last", "pages", lambda page: pages))
    for total in found:
        if total.path is not None:
            readers.append((total.evidence, total.unit, _body_reader(total.path)))
    return readers


@dataclass(slots=True)
class Tally:
    """One source's evidence and deliveries; checked when the source ends.

    ``own`` are the totals its paginator was told (or chose) to read: (evidence, unit,
    reader). ``generic`` adds the well-known fields and headers found on the first page.
    ``capped``: the user bounded the source on purpose (``max_pages``, ``stop``, a start
    past the first page), so a shortfall against a total is what was asked for.
    """

    url: URL
    own: list[tuple[str, str, Reader]] = field(default_factory=list)
    generic: bool = True
    capped: bool = False
    pages: int = 0
    records: int = 0
    countable: bool = True
    failed: bool = False
    last_number: int = 0
    totals: dict[str, Reported] = field(default_factory=dict)
    readers: list[tuple[str, str, Reader]] | None = None

    def observe(self, page: Page[Any], records: int | None) -> None:
        """A page was delivered holding ``records`` records (None: they cannot be counted)."""
        self.pages += 1
        number = page.number
        if number > self.last_number:
            self.last_number = number
        if records is None:
            self.countable = False
        else:
            self.records += records
        readers = self.readers
        if readers is None or readers:  # (a body and headers that report no total: none)
            self.witness(page)

    def witness(self, page: Page[Any]) -> None:
        """Read the totals a page reports, delivered or not: a resumed run fetches page 1
        again for its total without delivering it, and that total is evidence too."""
        readers = self.readers
        if readers is None:
            readers = self.readers = _readers(page, self.own) if self.generic else self.own
        for evidence, unit, read in readers:
            value = as_count(read(page))
            if value is None:
                continue
            seen = self.totals.get(evidence)
            if seen is None:
                self.totals[evidence] = Reported(evidence, unit, value, value)
            else:
                seen.see(value)

    def resumed(self, pages: int, records: int | None) -> None:
        """Pages (and their records) that a checkpoint holds from earlier runs."""
        self.pages += pages
        if records is None:
            self.countable = False
        else:
            self.records += records

    def verdict(self) -> tuple[IncompleteError | None, str, bool]:
        """(the error, if what was delivered disagrees with a total; a note saying what was
        checked or why nothing could be; whether anything was checked)."""
        checked: list[str] = []
        unchecked: list[str] = []
        shown = redact_url(self.url)
        for rep in self.totals.values():
            delivered = self.pages if rep.unit == "pages" else self.records
            if rep.unit == "records" and not self.countable:
                unchecked.append(f"{rep.evidence} (the records of a page cannot be counted)")
                continue
            span = f"{rep.lo:,}" if rep.lo == rep.hi else f"{rep.lo:,} to {rep.hi:,}"
            if self.capped:
                if delivered > rep.hi and rep.unit == "records":
                    return self._error(rep, delivered, shown), "", True
                unchecked.append(f"{rep.evidence}: the run was bounded (stop=, max_pages=)")
                continue
            if rep.lo == delivered == rep.hi:
                checked.append(f"{delivered:,} {rep.unit} as {rep.evidence} says")
            elif rep.lo <= delivered <= rep.hi:
                checked.append(
                    f"{delivered:,} {rep.unit}, within the {span} that {rep.evidence} said "
                    "while the data changed"
                )
            else:
                return self._error(rep, delivered, shown), "", True
        if checked:
            return None, "; ".join(checked), True
        if unchecked:
            return None, "not verifiable: " + "; ".join(unchecked), False
        return None, "not verifiable: no response reported a total", False

    def _error(self, rep: Reported, delivered: int, shown: str) -> IncompleteError:
        expected = rep.lo if delivered < rep.lo else rep.hi
        span = f"{rep.lo:,}" if rep.lo == rep.hi else f"between {rep.lo:,} and {rep.hi:,}"
        if delivered < rep.lo:
            cause = (
                "Likely causes: the paginator stopped early or skipped pages (a wrong or "
                "guessed paginator, a next field or cursor it does not find), the server "
                "caps the page size below what was asked, or the records are counted from "
                "the wrong list (name it with items= or records)."
            )
        else:
            cause = (
                "More was delivered than exists: pages overlap (a server that ignores a "
                "parameter, or a page size that differs from the one the paginator assumes)."
            )
        if rep.evidence not in {evidence for evidence, _unit, _read in self.own}:
            cause += (
                f" If {rep.evidence} does not count the {rep.unit} (a sum, say), pass "
                "verify=False (streampage fetch --no-verify)."
            )
        return IncompleteError(
            f"{shown}: delivered {delivered:,} {rep.unit}, but the server reported {span} "
            f"({rep.evidence}). {cause}",
            page=self.last_number + 1,
            url=shown,
            expected=expected,
            delivered=delivered,
            unit=rep.unit,
            evidence=rep.evidence,
        )


@dataclass
class Completeness:
    """What a finished stream could check of its own completeness (``stream.completeness``).

    ``verified`` sources ended in agreement with a total their responses reported;
    ``unverifiable`` ones reported none (a cursor walk with no count), so nothing could be
    checked; ``incomplete`` ones disagreed (an IncompleteError, raised or in failures).
    ``notes`` holds what was checked, or why not, for the first few sources.
    """

    verified: int = 0
    unverifiable: int = 0
    incomplete: int = 0
    #: sources the user bounded on purpose (max_pages, stop=): their ends went unread
    bounded: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """ "verified", "not verifiable", "partly verified" or "incomplete"."""
        if self.incomplete:
            return "incomplete"
        if self.verified and not self.unverifiable:
            return "verified"
        if self.verified:
            return "partly verified"
        return "not verifiable"

    def add(
        self,
        verdict: tuple[IncompleteError | None, str, bool],
        source: str,
        *,
        failed: bool = False,
    ) -> None:
        error, note, checked = verdict
        if error is not None or failed:
            self.incomplete += 1
            note = str(error) if error is not None else note
        elif checked:
            self.verified += 1
        else:
            self.unverifiable += 1
        if len(self.notes) < _NOTES:
            self.notes.append(f"{source}: {note}" if source else note)

"""Checkpoints: which pages of which sources a sink has committed, stored compactly.

A checkpoint is written in the same transaction as the records it covers (PostgreSQL,
SQLite) or in a journal beside a file, so that after a crash, ``resume`` skips exactly the
pages whose records are durable and fetches the rest: every record exactly once.

Per source it holds the committed page numbers as ranges (``[[1, 500], [502, 730]]``, not a
list of 729 numbers) and, for sequential walks (cursor, next URL), the URL of the last
committed page: its response holds the link to the next, which no page number can give.

A checkpoint lies on disk, so it holds no credentials: a walk's URL is stored without its
``user:password@`` and secret query parameters, which are put back from the command's own
URL on resume. It also holds a fingerprint of the source it belongs to (URL without
secrets, paginator, records path), so that a resume with another source is refused rather
than mixing two datasets, and whether the run that wrote it finished.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import msgspec
from yarl import URL

from ._redact import looks_secret

__all__ = [
    "Checkpoint",
    "IncrementalState",
    "RangeSet",
    "Resume",
    "at_rest",
    "has_credentials",
    "legacy_source_id",
    "restored",
    "source_id",
]


def at_rest(url: URL, command: URL | None = None) -> str:
    """``url`` as it may be stored: without userinfo, and without the credentials of the
    command's own URL (a parameter named like one, whose value is the command's). What the
    server put in the URL stays, byte for byte: a cursor named ``token``, a signature the
    next link carries, are the walk itself, and the command could not give them back."""
    url = url.with_user(None).with_fragment(None)
    raw = url.raw_query_string
    if not raw or command is None:
        return str(url)
    given = _credentials(command)
    kept = [part for part in raw.split("&") if part not in given]
    return str(url.with_query(None)) + ("?" + "&".join(kept) if kept else "")


def _credentials(command: URL) -> list[str]:
    """The raw ``name=value`` parts of the command URL's query that look like credentials."""
    return [
        part
        for part in command.raw_query_string.split("&")
        if part and looks_secret(unquote_plus(part.partition("=")[0]))
    ]


def restored(stored: str, command: URL) -> URL:
    """A stored walk URL with the command URL's credentials put back: its userinfo, and
    the credential parameters the stored URL lacks (same origin only)."""
    url = URL(stored, encoded=True)
    if url.origin() != command.origin():
        return url  # a walk that left the origin (cross_origin=True) gets no credentials
    if command.raw_user is not None:
        url = url.with_user(command.user).with_password(command.password)
    present = {p.partition("=")[0] for p in url.raw_query_string.split("&") if p}
    missing = [p for p in _credentials(command) if p.partition("=")[0] not in present]
    if missing:
        text = str(url)
        url = URL(text + ("&" if url.raw_query_string else "?") + "&".join(missing), encoded=True)
    return url


class RangeSet:
    """A set of integers kept as sorted, disjoint, inclusive ranges."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: list[list[int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or ():
            self._add_range(start, end)

    def add(self, n: int) -> None:
        self._add_range(n, n)

    def _add_range(self, start: int, end: int) -> None:
        starts, ends = self._starts, self._ends
        i = bisect.bisect_left(ends, start - 1)  # first range that ends at or after start-1
        j = bisect.bisect_right(starts, end + 1)  # ranges from i to j-1 touch [start, end]
        if i < j:
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]

    def discard(self, n: int) -> None:
        i = bisect.bisect_right(self._starts, n) - 1
        if i < 0 or n > self._ends[i]:
            return
        start, end = self._starts[i], self._ends[i]
        pieces = [(a, b) for a, b in ((start, n - 1), (n + 1, end)) if a <= b]
        self._starts[i : i + 1] = [a for a, _ in pieces]
        self._ends[i : i + 1] = [b for _, b in pieces]

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int):
            return False
        i = bisect.bisect_right(self._starts, n) - 1
        return i >= 0 and n <= self._ends[i]

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))

    def __iter__(self) -> Iterator[int]:
        for s, e in zip(self._starts, self._ends, strict=True):
            yield from range(s, e + 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self.ranges() == other.ranges()

    def __repr__(self) -> str:
        return f"RangeSet({self.ranges()!r})"

    def ranges(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends, strict=True)]

    def contiguous_from(self, first: int) -> int:
        """The last n such that first..n are all in the set (first - 1 if first is not)."""
        if first not in self:
            return first - 1
        i = bisect.bisect_right(self._starts, first) - 1
        return self._ends[i]


class Resume(msgspec.Struct, frozen=True):
    """Where a source's paginator starts again: ``done`` pages are not delivered again; a
    walk starts again at ``walk`` = (number, URL) of its last committed page, fetched again
    and not delivered, to learn the link to the next."""

    done: RangeSet
    walk: tuple[int, URL] | None
    #: records of the done pages, as counted for completeness (None: not counted)
    records: int | None = None


class Tail(msgspec.Struct, frozen=True, array_like=True):
    """A source's highest committed page: how many of its records were written, how many
    completeness counted (None: not countable), and a digest of its first and last written
    records, which tell whether the page still starts with what was written of it."""

    number: int
    written: int
    counted: int | None
    edges: str | None = None


class _SourceState(msgspec.Struct, omit_defaults=True):
    pages: list[list[int]] = []
    walk_url: str | None = None  # walks: the URL of the last committed page, at rest
    walk_number: int | None = None
    records: int | None = None  # records of the committed pages (None: not counted)
    tail: Tail | None = None
    #: the tail a resume of a finished run fetches again, until it is committed again
    reopen: Tail | None = None
    #: a dependent stream's child whose every page is committed: not started again
    ended: bool = False


class IncrementalState(msgspec.Struct, omit_defaults=True):
    """Where incremental runs stand (see _incremental): ``since``, the value of ``field``
    the current pass fetches from (fixed for the pass: a pass cut short and resumed sends
    it again), ``high``, the highest value among the committed records of every pass, and
    digests of the committed records whose value is ``since`` when the pass began
    (``seen``: not written again) and ``high`` (``boundary``: the next pass's ``seen``),
    each at most _incremental.BOUNDARY of them (``*_over``: more records had that value)."""

    field: str
    #: the query parameter the pass sends ``since`` as (None: filtered client-side)
    param: str | None = None
    since: str | int | float | None = None
    high: str | int | float | None = None
    seen: list[str] = []
    seen_over: bool = False
    boundary: list[str] = []
    boundary_over: bool = False
    #: passes that finished (the first run's included)
    passes: int = 0


class _Document(msgspec.Struct, omit_defaults=True, tag_field="v", tag=2):
    """A checkpoint as stored (version 2; version 1 was the ``sources`` mapping alone)."""

    sources: dict[str, _SourceState] = {}
    #: what the source was (see Checkpoint.fingerprint); None: written before fingerprints
    source: dict[str, str] | None = None
    finished: bool = False
    #: records written under this checkpoint by every run (0 in checkpoints from before it)
    written: int = 0
    #: into(incremental=...): where incremental runs stand
    incremental: IncrementalState | None = None


class Checkpoint:
    """Committed pages by source; serialises to a small JSON document."""

    def __init__(
        self,
        state: dict[str, _SourceState] | None = None,
        *,
        fingerprint: dict[str, str] | None = None,
        finished: bool = False,
    ) -> None:
        self._pages: dict[str, RangeSet] = {}
        self._next: dict[str, tuple[int, str]] = {}
        self._records: dict[str, int | None] = {}
        self._tails: dict[str, Tail] = {}
        #: tails to fetch and deliver again (reopen_tails), each until committed again:
        #: stored, so that a resume cut short before it comes back keeps slicing it
        self.reopened: dict[str, Tail] = {}
        #: read from a version 1 document (see adopt_legacy)
        self.legacy = False
        #: children of a dependent stream whose every page is committed (see _lineage)
        self._ended: set[str] = set()
        #: walk URLs of parent pages done after a page not done yet, by source and number:
        #: a walk's resume point moves to them when the pages before are done too
        self._later: dict[str, dict[int, str]] = {}
        #: what the source was: compared on resume, so that a checkpoint is never applied
        #: to another source's data
        self.fingerprint = fingerprint
        #: the run that wrote it delivered every page (a resume looks only for new ones)
        self.finished = finished
        #: records written under it by every run, this one's included (into() adds them)
        self.written = 0
        #: into(incremental=...): where incremental runs stand (None: not incremental)
        self.incremental: IncrementalState | None = None
        for key, source in (state or {}).items():
            self._pages[key] = RangeSet(source.pages)
            self._records[key] = source.records
            if source.walk_url is not None and source.walk_number is not None:
                self._next[key] = (source.walk_number, source.walk_url)
            if source.tail is not None:
                self._tails[key] = source.tail
            if source.reopen is not None:
                self.reopened[key] = source.reopen
            if source.ended:
                self._ended.add(key)

    def commit(
        self,
        source: str,
        number: int,
        walk: tuple[URL, URL | None] | None,
        records: int | None = None,
        written: int = 0,
        edges: str | None = None,
    ) -> None:
        """Page ``number`` of ``source`` is durable, ``written`` of its records with it
        (``edges``: see Tail; of all its records written, this run's and earlier ones').

        ``walk`` is (the page's own URL, the command's URL) when the source is a sequential
        walk: a resumed walk fetches the last committed page again to learn the link to the
        next one. It is stored without the command's credentials (see at_rest). ``records``
        is the page's record count as completeness counts it (None: not countable)."""
        pages = self._pages.get(source)
        if pages is None:
            pages = self._pages[source] = RangeSet()
            self._records[source] = 0
        pages.add(number)
        held = self._records.get(source)
        reopened = self.reopened.get(source)
        if reopened is not None and reopened.number == number:
            # committed before: its count now replaces the earlier one
            del self.reopened[source]
            written += reopened.written
            if held is not None:
                held = None if reopened.counted is None else held - reopened.counted
        self._records[source] = None if held is None or records is None else held + records
        tail = self._tails.get(source)
        if tail is None or number >= tail.number:
            self._tails[source] = Tail(number, written, records, edges)
        if walk is not None:
            current = self._next.get(source)
            if current is None or number > current[0]:
                self._next[source] = (number, at_rest(*walk))

    def end(self, source: str) -> None:
        """Every page of child ``source`` is committed (see _lineage.ChildEnded)."""
        self._pages.setdefault(source, RangeSet())
        self._records.setdefault(source, 0)
        self._ended.add(source)

    def ended(self, source: str) -> bool:
        """Did child ``source`` end in an earlier commit (a resume does not start it)?"""
        return source in self._ended

    def commit_parent(
        self,
        source: str,
        number: int,
        walk: tuple[URL, URL | None] | None,
        records: int | None,
        written: int,
        edges: str | None,
        children: list[str],
    ) -> None:
        """Every child of page ``number`` of parent ``source`` ended: the page is done (as
        commit() has it: ``written`` of its records made children, ``edges`` a digest of
        them all), and its children leave the checkpoint (a resume fetches the page no
        more, so nothing asks for them). A resume of a finished run delivers the last
        done page again, and only the records after those ``written`` make children.

        A walk resumes at its last page done with every page before it done too: pages
        done out of order are kept (not delivered again), and the resume point moves past
        them when the gap closes."""
        self.commit(source, number, None, records, written, edges)
        pages = self._pages[source]
        for key in children:
            if key != source:
                self._forget(key)
        if walk is None:
            return
        later = self._later.setdefault(source, {})
        later[number] = at_rest(*walk)
        current = self._next.get(source)
        reach = pages.contiguous_from(1)  # a walk numbers its pages from 1
        if reach in later and (current is None or reach > current[0]):
            self._next[source] = (reach, later[reach])
        for done in [n for n in later if n <= reach]:
            del later[done]

    def _forget(self, source: str) -> None:
        self._pages.pop(source, None)
        self._records.pop(source, None)
        self._tails.pop(source, None)
        self._next.pop(source, None)
        self.reopened.pop(source, None)
        self._ended.discard(source)

    def reopen_tails(self) -> None:
        """After a finished run, each source's last committed page is fetched and delivered
        again: records the server added to it since (a short last page that filled up, a
        walk's last page) are written then, those already written are skipped (``reopened``
        says how many). Without this, a resume would find only new pages."""
        for key, tail in self._tails.items():
            pages = self._pages.get(key)
            if pages is not None and tail.number in pages:
                self.reopened.setdefault(key, tail)

    def forget_pages(self) -> None:
        """Every source starts over from its first page, its committed pages forgotten (an
        incremental run's next pass fetches another page space: the records from its since
        value on). What was written stays counted (``written``)."""
        self._pages.clear()
        self._next.clear()
        self._records.clear()
        self._tails.clear()
        self.reopened.clear()
        self._ended.clear()
        self._later.clear()

    def pages(self, source: str) -> RangeSet:
        return self._pages.get(source) or RangeSet()

    def resume(self, source: str, url: URL) -> Resume | None:
        """What a source's paginator skips or where it goes on, or None: from the start.
        ``url`` is the source's own URL, whose credentials a stored walk URL gets back."""
        pages = self._pages.get(source)
        if pages is None:
            return None
        found = self._next.get(source)
        walk = None if found is None else (found[0], restored(found[1], url))
        records = self._records.get(source)
        reopened = self.reopened.get(source)
        if reopened is not None:  # fetched and delivered again: not done
            pages = RangeSet(pages.ranges())
            pages.discard(reopened.number)
            if records is not None:
                records = None if reopened.counted is None else records - reopened.counted
        return Resume(pages, walk, records)

    def held(self, stats: Any) -> None:
        """Say in ``stats`` what this checkpoint holds (StreamStats.checkpoint_*)."""
        stats.checkpoint_pages = len(self)
        stats.checkpoint_records = self.written
        counted = list(self._records.values())
        stats.checkpoint_counted = None if None in counted else sum(c or 0 for c in counted)

    def __len__(self) -> int:
        return sum(len(p) for p in self._pages.values())

    def to_json(self) -> bytes:
        state = {
            key: _SourceState(
                pages=pages.ranges(),
                walk_url=self._next[key][1] if key in self._next else None,
                walk_number=self._next[key][0] if key in self._next else None,
                records=self._records.get(key),
                tail=self._tails.get(key),
                reopen=self.reopened.get(key),
                ended=key in self._ended,
            )
            for key, pages in self._pages.items()
        }
        return _encode(
            _Document(state, self.fingerprint, self.finished, self.written, self.incremental)
        )

    @classmethod
    def from_json(cls, data: bytes | str | None) -> Checkpoint:
        if not data:
            return cls()
        raw = msgspec.json.decode(data)
        if isinstance(raw, dict) and raw.get("v") == 2:
            doc = msgspec.convert(raw, _Document)
            done = cls(doc.sources, fingerprint=doc.source, finished=doc.finished)
            done.written = doc.written
            done.incremental = doc.incremental
            return done
        old = cls(msgspec.convert(raw, dict[str, _SourceState]))  # version 1
        old.legacy = True
        return old

    def adopt_legacy(self, old: str, new: str, command: URL) -> None:
        """Version 1 named a source by its URL with credentials and stored walk URLs as
        fetched: the source's state moves to its new name, its walk URL loses them."""
        if old == new or old not in self._pages or new in self._pages:
            return
        self._pages[new] = self._pages.pop(old)
        self._records[new] = self._records.pop(old, None)
        if old in self._tails:
            self._tails[new] = self._tails.pop(old)
        found = self._next.pop(old, None)
        if found is not None:
            self._next[new] = (found[0], at_rest(URL(found[1], encoded=True), command))


_encode = msgspec.json.Encoder().encode


def source_id(source: Any) -> str:
    """A stable name for a source in a checkpoint: its ``key`` if it has one, else a hash of
    its URL and params without their credentials: a checkpoint holds no secret, not even
    hashed (a password hashed can be guessed back), and a rotated API key still names the
    same source. Sources that differ in their credentials alone need keys (Sources.walk
    says so)."""
    key = getattr(source, "key", None)
    if key is not None:
        return str(key)
    url, params = _url_and_params(source)
    shown = url if url is None else str(_without_credentials(url))
    safe = sorted((k, "" if looks_secret(k) else v) for k, v in params)
    return "url:" + hashlib.sha256(f"{shown}|{safe}".encode()).hexdigest()[:24]


def legacy_source_id(source: Any) -> str:
    """The name version 1 gave a source (its URL and params hashed as they were)."""
    key = getattr(source, "key", None)
    if key is not None:
        return str(key)
    params = sorted((str(k), str(v)) for k, v in (getattr(source, "params", None) or {}).items())
    text = f"{getattr(source, 'url', source)}|{params}"
    return "url:" + hashlib.sha256(text.encode()).hexdigest()[:24]


def has_credentials(source: Any) -> bool:
    """Does the source carry credentials that source_id leaves out?"""
    url, params = _url_and_params(source)
    if url is not None and (url.raw_user is not None or _credentials(url)):
        return True
    return any(looks_secret(k) for k, _ in params)


def _url_and_params(source: Any) -> tuple[URL | None, list[tuple[str, str]]]:
    params = [(str(k), str(v)) for k, v in (getattr(source, "params", None) or {}).items()]
    text = str(getattr(source, "url", source))
    try:
        return URL(text), params
    except ValueError:
        return None, params


def _without_credentials(url: URL) -> URL:
    url = url.with_user(None)
    given = _credentials(url)
    if not given:
        return url
    kept = [p for p in url.raw_query_string.split("&") if p and p not in given]
    return URL(str(url.with_query(None)) + ("?" + "&".join(kept) if kept else ""), encoded=True)

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

import msgspec
from yarl import URL

from ._redact import SECRET_PARAMS

__all__ = ["Checkpoint", "RangeSet", "Resume", "source_id"]


def is_secret_param(name: str) -> bool:
    """A query parameter whose value is a credential (``api_key``, ``token``, ...). Exact
    names only: a looser match (anything with "token") would strip ``pageToken``, the very
    cursor a resumed walk needs."""
    return name.lower() in SECRET_PARAMS


def at_rest(url: URL) -> str:
    """``url`` as it may be stored: without userinfo and secret query parameters. The rest
    of the query keeps its exact encoding (a cursor must go back byte for byte)."""
    url = url.with_user(None).with_fragment(None)
    raw = url.raw_query_string
    if not raw:
        return str(url)
    kept = [part for part in raw.split("&") if not _secret_part(part)]
    return str(url.with_query(None)) + ("?" + "&".join(kept) if kept else "")


def _secret_part(part: str) -> bool:
    from urllib.parse import unquote_plus

    return is_secret_param(unquote_plus(part.partition("=")[0]))


def restored(stored: str, command: URL) -> URL:
    """A stored walk URL with the command URL's credentials put back: its userinfo (same
    origin only) and its secret query parameters."""
    url = URL(stored, encoded=True)
    if url.origin() != command.origin():
        return url  # a walk that left the origin (cross_origin=True) gets no credentials
    if command.raw_user is not None:
        url = url.with_user(command.user).with_password(command.password)
    secrets = [p for p in command.raw_query_string.split("&") if p and _secret_part(p)]
    if secrets:
        text = str(url)
        url = URL(text + ("&" if url.raw_query_string else "?") + "&".join(secrets), encoded=True)
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


class _SourceState(msgspec.Struct, omit_defaults=True):
    pages: list[list[int]] = []
    walk_url: str | None = None  # walks: the URL of the last committed page, at rest
    walk_number: int | None = None
    records: int | None = None  # records of the committed pages (None: not counted)


class _Document(msgspec.Struct, omit_defaults=True, tag_field="v", tag=2):
    """A checkpoint as stored (version 2; version 1 was the ``sources`` mapping alone)."""

    sources: dict[str, _SourceState] = {}
    #: what the source was (see Checkpoint.fingerprint); None: written before fingerprints
    source: dict[str, str] | None = None
    finished: bool = False


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
        #: what the source was: compared on resume, so that a checkpoint is never applied
        #: to another source's data
        self.fingerprint = fingerprint
        #: the run that wrote it delivered every page (a resume looks only for new ones)
        self.finished = finished
        for key, source in (state or {}).items():
            self._pages[key] = RangeSet(source.pages)
            self._records[key] = source.records
            if source.walk_url is not None and source.walk_number is not None:
                self._next[key] = (source.walk_number, source.walk_url)

    def commit(
        self, source: str, number: int, walk_url: URL | None, records: int | None = None
    ) -> None:
        """Page ``number`` of ``source`` is durable. ``walk_url`` is the page's own URL when
        the source is a sequential walk: a resumed walk fetches the last committed page
        again (without delivering it) to learn the link to the next one. ``records`` is
        the page's record count as completeness counts it (None: not countable)."""
        pages = self._pages.get(source)
        if pages is None:
            pages = self._pages[source] = RangeSet()
            self._records[source] = 0
        pages.add(number)
        held = self._records.get(source)
        self._records[source] = None if held is None or records is None else held + records
        if walk_url is not None:
            current = self._next.get(source)
            if current is None or number > current[0]:
                self._next[source] = (number, at_rest(walk_url))

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
        return Resume(pages, walk, self._records.get(source))

    def __len__(self) -> int:
        return sum(len(p) for p in self._pages.values())

    def to_json(self) -> bytes:
        state = {
            key: _SourceState(
                pages=pages.ranges(),
                walk_url=self._next[key][1] if key in self._next else None,
                walk_number=self._next[key][0] if key in self._next else None,
                records=self._records.get(key),
            )
            for key, pages in self._pages.items()
        }
        return _encode(_Document(state, self.fingerprint, self.finished))

    @classmethod
    def from_json(cls, data: bytes | str | None) -> Checkpoint:
        if not data:
            return cls()
        raw = msgspec.json.decode(data)
        if isinstance(raw, dict) and raw.get("v") == 2:
            doc = msgspec.convert(raw, _Document)
            return cls(doc.sources, fingerprint=doc.source, finished=doc.finished)
        return cls(msgspec.convert(raw, dict[str, _SourceState]))  # version 1


_encode = msgspec.json.Encoder().encode


def source_id(source: Any) -> str:
    """A stable name for a source in a checkpoint: its ``key`` if it has one, else a hash of
    its URL and params without their credentials: a checkpoint holds no secret, not even
    hashed, and a rotated API key still names the same source."""
    key = getattr(source, "key", None)
    if key is not None:
        return str(key)
    params = sorted(
        (str(k), "" if is_secret_param(str(k)) else str(v))
        for k, v in (getattr(source, "params", None) or {}).items()
    )
    url = getattr(source, "url", source)
    try:
        shown = at_rest(URL(str(url)))
    except ValueError:
        shown = str(url)
    text = f"{shown}|{params}"
    return "url:" + hashlib.sha256(text.encode()).hexdigest()[:24]

"""Checkpoints: which pages of which sources a sink has committed, stored compactly.

A checkpoint is written in the same transaction as the records it covers (PostgreSQL,
SQLite) or in a journal beside a file, so that after a crash, ``resume`` skips exactly the
pages whose records are durable and fetches the rest: every record exactly once.

Per source it holds the committed page numbers as ranges (``[[1, 500], [502, 730]]``, not a
list of 729 numbers) and, for sequential walks (cursor, next URL), the URL of the last
committed page: its response holds the link to the next, which no page number can give.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator
from typing import Any

import msgspec
from yarl import URL

__all__ = ["Checkpoint", "RangeSet", "Resume", "source_id"]


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
    walk_url: str | None = None  # walks: the URL of the last committed page
    walk_number: int | None = None
    records: int | None = None  # records of the committed pages (None: not counted)


class Checkpoint:
    """Committed pages by source; serialises to a small JSON document."""

    def __init__(self, state: dict[str, _SourceState] | None = None) -> None:
        self._pages: dict[str, RangeSet] = {}
        self._next: dict[str, tuple[int, str]] = {}
        self._records: dict[str, int | None] = {}
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
                self._next[source] = (number, str(walk_url))

    def pages(self, source: str) -> RangeSet:
        return self._pages.get(source) or RangeSet()

    def resume(self, source: str) -> Resume | None:
        """What a source's paginator skips or where it goes on, or None: from the start."""
        pages = self._pages.get(source)
        if pages is None:
            return None
        found = self._next.get(source)
        walk = None if found is None else (found[0], URL(found[1], encoded=True))
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
        return msgspec.json.encode(state)

    @classmethod
    def from_json(cls, data: bytes | str | None) -> Checkpoint:
        if not data:
            return cls()
        return cls(msgspec.json.decode(data, type=dict[str, _SourceState]))


def source_id(source: Any) -> str:
    """A stable name for a source in a checkpoint: its ``key`` if it has one, else a hash of
    its URL and params (so that a checkpoint never holds a secret from a query string)."""
    key = getattr(source, "key", None)
    if key is not None:
        return str(key)
    params = sorted((str(k), str(v)) for k, v in (getattr(source, "params", None) or {}).items())
    text = f"{getattr(source, 'url', source)}|{params}"
    return "url:" + hashlib.sha256(text.encode()).hexdigest()[:24]

"""Dependent sources: the records of parent pages name child sources, fetched by the same pool.

``stream(parents).records("data").then(child_of, pages=...)`` is a stream of the children's
pages. The parent walks run in the engine beside the children, under one concurrency, rate
and retry policy; a parent page is never delivered to the caller: the consumer takes it in
its turn (so that a page past the end of an open-ended parent spawns nothing) and turns its
records into a *family*, the child sources of that page, which the engine's producer starts
as walks as soon as there is room. The parent walks do not run ahead: a parent page is
handed out only while few parent pages wait to be taken and fewer children than the
concurrency wait to start, so memory is bounded however many parents there are.

Completion travels with the pages, as marks on the result queue: a child whose every page
was taken is *ended*, and a parent page whose every child ended is *done*. into() commits
each mark in the first commit that holds every page before it, so a checkpoint says a child
ended only when all its records are durable, and a parent page done only when its children
are; a done parent page's children leave the checkpoint (it stays as small as the families
in flight). A resume never fetches a done parent page again (a walk's last one excepted,
fetched for its link and not delivered), and starts no ended child of a parent page that
was not done.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yarl import URL

from ._checkpoint import source_id
from ._errors import ConfigurationError, StreamPageError
from ._redact import redact_url
from ._sources import Source, as_source, child_id

if TYPE_CHECKING:
    from ._checkpoint import Checkpoint
    from ._page import Page
    from ._sources import Sources

__all__ = ["ChildEnded", "Family", "Lineage", "Mark", "ParentDone", "Parents"]

#: What a children function returns for one record.
Children = Callable[[Any], Any]


@dataclass(frozen=True)
class Parents:
    """How a dependent stream gets its children: the parent stream's sources and decoder,
    its records, and the user's function from a parent record to child sources."""

    sources: Sources
    extract: Callable[[Page[Any]], list[Any]]
    children: Children
    decoder: Any = None
    #: the parent's records path and children function as the checkpoint fingerprints them
    spec: Any = None
    #: children on another origin than their parent are fetched (without the stream's
    #: credentials) rather than refused
    cross_origin: bool = False


class Mark:
    """A completion mark on the result queue: applied to the checkpoint by into()."""

    __slots__ = ()

    def apply(self, checkpoint: Checkpoint) -> None:
        raise NotImplementedError


class ChildEnded(Mark):
    """Every page of child ``key`` was taken, and its paginator ended in agreement with its
    evidence: a resume does not start it again."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def apply(self, checkpoint: Checkpoint) -> None:
        checkpoint.end(self.key)


class ParentDone(Mark):
    """Every child of page ``number`` of parent ``key`` ended: the page is committed, its
    children's state leaves the checkpoint."""

    __slots__ = ("family",)

    def __init__(self, family: Family) -> None:
        self.family = family

    def apply(self, checkpoint: Checkpoint) -> None:
        f = self.family
        checkpoint.commit_parent(
            f.parent, f.number, f.walked, f.counted, f.written, f.edges, f.keys
        )


@dataclass(eq=False)
class Family:
    """The children of one parent page: those still to start, and how many are running."""

    parent: str
    number: int
    walked: tuple[URL, URL | None] | None
    counted: int | None
    sources: deque[tuple[Source, str]]
    #: the parent's origin: the only one its children's requests carry credentials to
    home: URL
    #: the page's records that made children, and a digest of its records (see Tail)
    written: int = 0
    edges: str | None = None
    keys: list[str] = field(default_factory=list)
    running: int = 0
    spawned: bool = False
    #: a child failed or ended incomplete: the page is not done (a resume fetches it again)
    failed: bool = False

    def mark(self) -> ParentDone | None:
        """The page's done mark, once every child has started and ended well."""
        if self.spawned and self.running == 0 and not self.failed:
            self.sources.clear()
            return ParentDone(self)
        return None


class Lineage:
    """The engine's side of a dependent stream: families waiting for their children to
    start, and what holds the parent walks back."""

    def __init__(self, parents: Parents, children: Sources, concurrency: int) -> None:
        self.parents = parents
        self.children = children
        self.concurrency = concurrency
        #: parent pages a parent walk may have handed out and the consumer not taken yet
        self.ahead = max(2, concurrency // 8)
        self.families: deque[Family] = deque()
        #: children of queued families not started yet
        self.unstarted = 0
        self.arrived = asyncio.Event()
        #: every parent walk is over: no family will come
        self.over = False

    def family(
        self,
        page: Page[Any],
        records: list[Any],
        counted: int | None,
        walked: Any,
        home: URL,
        edges: str | None,
    ) -> Family:
        """The children of parent page ``page`` (of its ``records``: all, or those a
        finished run did not see), checked (a URL, its params, its origin) before any is
        started: an error names the parent page, and nothing of the page is committed. A
        child URL comes from the API's data: credentials go with it only to the parent's
        own origin (``home``)."""
        found: deque[tuple[Source, str]] = deque()
        for record in records:
            for child in self._children_of(record, page, home):
                found.append((child, child_id(child)))
        key = source_id(page.source) if page.source is not None else ""
        keys = [k for _, k in found]
        family = Family(key, page.number, walked, counted, found, home, len(records), edges, keys)
        self.families.append(family)
        self.unstarted += len(found)
        self.arrived.set()
        return family

    def _children_of(self, record: Any, page: Page[Any], home: URL) -> Iterable[Source]:
        where = f"parent page {page.number} ({redact_url(page.response.url)})"
        try:
            made = self.parents.children(record)
        except StreamPageError:
            raise
        except Exception as exc:
            exc.add_note(f"streampage: then() called on a record of {where}")
            raise
        if made is None:
            return ()
        items = made if isinstance(made, list) else [made]
        sources = []
        for item in items:
            if item is None:  # no child, in a list as alone
                continue
            try:
                source = as_source(item)
                url = self.children.url(source)  # a bad URL is this page's error, now
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"then(): the children function returned {_shown(item)} for a record of "
                    f"{where}: {exc}"
                ) from None
            if url.origin() != home and not self.parents.cross_origin:
                raise ConfigurationError(
                    f"then(): a child of {where} is on another origin, {url.origin()}, than "
                    f"its parent, {home}: the stream's credentials go to the parent's origin "
                    "only. Pass then(..., cross_origin=True) to fetch such children without "
                    "them (headers= marked secret, auth=)"
                )
            sources.append(source)
        return sources


def _shown(item: Any) -> str:
    if isinstance(item, Source):
        return repr(item)
    if isinstance(item, str | URL):
        try:
            return repr(redact_url(item))
        except (TypeError, ValueError):
            return "an invalid URL"
    if isinstance(item, tuple) and item and isinstance(item[-1], Mapping):
        return "a (url, params) pair"
    return f"a {type(item).__name__}"

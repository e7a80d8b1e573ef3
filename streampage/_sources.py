"""Sources: what a stream fetches. One URL, or many (a list or an async iterable), each
paginated on its own and all fetched by one worker pool under one set of limits."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from yarl import URL

from ._checkpoint import Checkpoint, has_credentials, source_id
from ._decode import count_records
from ._errors import ConfigurationError
from ._evidence import Tally, own_totals
from ._pagination import Paginator, PaginatorRun
from ._redact import REDACTED, SECRET_PARAMS, redact_url

if TYPE_CHECKING:
    from ._lineage import Parents

__all__ = ["Source", "SourceLike"]

ParamValue = str | int | float
#: body digests kept per source (at least this many, at most twice): far more than the
#: pages in flight at once
_DIGESTS = 1024
#: the window's size when its older half goes
_MOST_DIGESTS = 2 * _DIGESTS


@dataclass(frozen=True)
class Source:
    """One paginated source of a stream: a URL, its own query ``params``, and optionally its
    own paginator (``pages``, else the stream's). ``key`` is yours: anything that tells you
    which source a page came from (``page.source.key``)."""

    url: str | URL
    params: Mapping[str, ParamValue] | None = None
    pages: Paginator | None = None
    key: Any = None

    def __repr__(self) -> str:
        # Sources end up in failures, errors and logs: never show their secrets there.
        try:
            url = redact_url(self.url)
        except (TypeError, ValueError):
            url = "<invalid url>"
        params = (
            {k: REDACTED if k.lower() in SECRET_PARAMS else v for k, v in self.params.items()}
            if self.params
            else self.params
        )
        return f"Source(url={url!r}, params={params!r}, pages={self.pages!r}, key={self.key!r})"


#: What stream() accepts as a source: a Source, a URL, or a (url, params) pair.
SourceLike = Source | str | URL | tuple[str | URL, Mapping[str, ParamValue]]


def check_url(url: str | URL) -> URL:
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"url={url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(
            f"url {redact_url(parsed)!r} is not an http(s) URL with a host; "
            "expected something like 'https://api.example.com/items'"
        )
    return parsed


def as_source(item: Any) -> Source:
    if isinstance(item, Source):
        return item
    if isinstance(item, str | URL):
        return Source(item)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Mapping | None):
        return Source(item[0], item[1])
    raise ConfigurationError(
        f"{item!r} is not a source: pass a URL, a (url, params) pair or streampage.Source(...)"
    )


def child_id(source: Any) -> str:
    """A child's name in a checkpoint: its key (yours: a customer's id, say) and a digest of
    its URL and params without their credentials. The key alone could name two children
    (a customer's orders and refunds, one id under two tenants), and a resume would take
    one for the other."""
    where = source_id(Source(source.url, getattr(source, "params", None)))
    key = getattr(source, "key", None)
    return where if key is None else f"{key}|{where[4:16]}"


@dataclass(eq=False)
class Walk:
    """The run-time state of one source: its paginator run, and (ordered mode) the pages
    that arrived ahead of their turn. Referenced only by its in-flight work, so it is freed
    when its last page has been consumed: 10^5 sources cost what the active ones cost.

    It also holds what completeness needs: the evidence of the source's size (``tally``),
    a digest of each recent page's body (a page repeating another is never delivered
    twice), and whether the source is broken (a configuration error or a repeat: nothing
    more of it is fetched).
    """

    source: Source
    run: PaginatorRun
    origin: URL
    tally: Tally
    may_leave_origin: bool = False
    head: int = 0
    pending: dict[int, tuple[int, Any]] = field(default_factory=dict)
    #: the first number handed out, and its body's digest once it is in
    first: int | None = None
    first_digest: int | None = None
    broken: bool = False
    #: body digests of recent pages, by number (a bounded window: constant memory)
    digests: dict[int, int] = field(default_factory=dict)
    #: results handed out and results taken by the consumer; the source is over when the
    #: paginator is exhausted and the two are equal
    handed: int = 0
    taken: int = 0
    exhausted: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    #: the paginator run's own hook for a settled page, if it has one (pages=auto)
    on_settle: Callable[[int], None] | None = None
    #: the source's URL as the command gave it (its query merged): a checkpoint stores a
    #: walk's URLs without its credentials, and a resume puts them back from it
    command: URL | None = None
    #: a parent source of a dependent stream: its pages are turned into children, not
    #: delivered (see _lineage)
    spawns: bool = False
    #: the decoder of its pages, when not the stream's (a parent's, under then())
    decoder: Any = None
    #: the run's record counter (count_records when it has none), looked up once, not
    #: on every page
    count: Callable[[Any], int | None] = field(init=False)
    #: whether the run walks (its page URLs go into a checkpoint); None when the run
    #: decides as it goes (pages=auto: a property), to be asked on every page
    walks: bool | None = field(init=False)

    def __post_init__(self) -> None:
        run = self.run
        self.on_settle = getattr(run, "settled", None)
        self.count = getattr(run, "count", count_records)
        fixed = not isinstance(getattr(type(run), "walks", None), property)
        self.walks = bool(getattr(run, "walks", False)) if fixed else None

    def walked(self) -> bool:
        """Whether the run walks (see ``walks``), now."""
        walks = self.walks
        return bool(getattr(self.run, "walks", False)) if walks is None else walks

    def forget(self, number: int) -> None:
        """Page ``number``'s body was rejected (validate=): it is fetched again, and its
        digest must not stand for it meanwhile."""
        self.digests.pop(number, None)
        if number == self.first:
            self.first_digest = None

    def repeated(self, number: int, digest: int) -> tuple[int, int] | None:
        """(page, the page it repeats) when page ``number``'s body, now known, makes two
        pages alike: it and the page before or after it, or it and the first page (a
        server that ignores the page parameter answers every page with the first, and a
        fan-out must not deliver one copy before the neighbours meet). None otherwise."""
        digests = self.digests
        digests[number] = digest
        if len(digests) > _MOST_DIGESTS:
            # the older half goes at once: deleting the oldest one at a time made every
            # page step over the dict's deleted entries to find it (~0.5 µs a page)
            self.digests = digests = dict(islice(digests.items(), _DIGESTS, None))
        first = self.first
        if number == first:
            self.first_digest = digest
            for other, seen in digests.items():  # pages that answered before the first
                if seen == digest and other != number:
                    return other, number
        if digests.get(number - 1) == digest:
            return number, number - 1
        if digests.get(number + 1) == digest:
            return number + 1, number
        # the first page's digest is compared first: it differs on almost every page (a
        # digest is set only once the first page is in, so `first` is then not None)
        if digest == self.first_digest and number != first:
            assert first is not None
            return number, first
        return None


class Sources:
    """Turns the user's sources into walks, lazily, merging the stream's params and paginator."""

    def __init__(
        self,
        sources: SourceLike | Iterable[SourceLike] | AsyncIterable[SourceLike],
        *,
        pages: Paginator,
        params: Mapping[str, ParamValue] | None,
        max_pages: int | None,
        verify: bool = True,
        authorization: bool = False,
        auth: Any = None,
    ) -> None:
        self._pages = pages
        self._params = dict(params) if params else {}
        #: query parameters the run sends itself (an incremental pass's value to fetch
        #: from), whether or not it has a value yet: no source may set one of its own
        self._reserved: frozenset[str] = frozenset()
        self._max_pages = max_pages
        #: every source is cut at this many pages, whatever its paginator says
        self.max_pages = max_pages
        self._verify = verify
        #: the stream's headers include Authorization (userinfo in a URL would clash)
        self.authorization = authorization
        #: auth= (streampage.auth): whether it sends Authorization (userinfo would clash),
        #: and the query parameters it sends (a URL or params= with them would clash)
        self._auth = auth
        self._auth_header = auth is not None and any(
            name.lower() == "authorization" for name in auth.header_names()
        )
        self._auth_params = tuple(auth.fixed_params()) if auth is not None else ()
        #: set by into() on resume (resume_from): pages already committed are not
        #: delivered again
        self.checkpoint: Checkpoint | None = None
        #: a dependent stream's parents (then()): its sources are their records' children
        self.parents: Parents | None = None
        #: source id -> its URL's digest, for sources with credentials: two sources that
        #: differ in their credentials alone have one id (ids hold no secret)
        self._credentialed: dict[str, bytes] = {}
        #: the single source's paginator run, once it has begun
        self._single_run: PaginatorRun | None = None
        self.single: Source | None = None
        self._many: Iterable[Any] | AsyncIterable[Any] | None = None
        if isinstance(sources, Source | str | URL) or (
            isinstance(sources, tuple) and len(sources) == 2 and isinstance(sources[1], Mapping)
        ):
            self.single = as_source(sources)
            self.url(self.single)  # a single source is checked at once, before any request
        elif isinstance(sources, Iterable | AsyncIterable):
            self._many = sources
        else:
            raise ConfigurationError(
                f"{sources!r} is neither a URL nor sources; pass a URL, a list or an async "
                "iterable of URLs, (url, params) pairs or streampage.Source(...)"
            )

    def resume_from(self, checkpoint: Checkpoint) -> None:
        """Go on from ``checkpoint``: its committed pages, and a dependent stream's parent
        pages done and children ended, are not fetched or delivered again."""
        self.checkpoint = checkpoint
        if self.parents is not None:
            self.parents.sources.checkpoint = checkpoint

    @property
    def verifies(self) -> bool:
        """verify=: each source is held to the totals its responses report."""
        return self._verify

    @property
    def auth(self) -> Any:
        """auth= (streampage.auth), or None."""
        return self._auth

    @property
    def chosen(self) -> str | None:
        """What pages=auto chose for the single source (see _fingerprint.numbering), once
        it has; None before, or for another paginator."""
        return getattr(self._single_run, "chosen", None)

    @property
    def params(self) -> dict[str, Any]:
        """The stream's params, merged into every source's query."""
        return self._params

    def send(self, params: Mapping[str, ParamValue]) -> None:
        """Send ``params`` too, with every request of the stream: into(incremental=...)
        adds the value it fetches from, once it has read its checkpoint, before the stream
        starts. Added after the stream's fingerprint was taken, they are not part of what
        the source is (a pass of an incremental run sends another value than the last)."""
        self._params.update(params)
        self.reserve(params)

    def reserve(self, names: Iterable[str]) -> None:
        """The run sends these query parameters itself: a Source(params=) that sets one
        is an error when its walk begins (sources are read lazily), not a value that
        silently replaces the run's."""
        self._reserved |= frozenset(names)

    @property
    def paginator(self) -> Paginator:
        """The stream's paginator (a Source may name its own)."""
        return self._pages

    def url(self, source: Source) -> URL:
        url = check_url(source.url)
        if (url.user or url.password) and self.authorization:
            raise ConfigurationError(
                f"{redact_url(url)} carries credentials (user:password@) and headers= has "
                "an Authorization header too: send one or the other (streampage fetch: -H "
                "'Authorization: ...' or the URL's user:password@, not both)"
            )
        if (url.user or url.password) and self._auth_header:
            raise ConfigurationError(
                f"{redact_url(url)} carries credentials (user:password@) and auth="
                f"{self._auth!r} sends an Authorization header too: send one or the other"
            )
        try:
            if self._params:
                url = url.update_query(self._params)
            if source.params:
                overridden = self._reserved.intersection(source.params)
                if overridden:
                    name = min(overridden)
                    raise ConfigurationError(
                        f"{redact_url(url)}: Source(params=) sets the query parameter "
                        f"{name!r}, which this run sends itself (into(incremental=...)'s "
                        "value to fetch from): the source's value would replace the run's. "
                        f"Leave {name!r} out of the source's params"
                    )
                url = url.update_query(dict(source.params))
        except TypeError as exc:
            raise ConfigurationError(f"params= has a value of an unsupported type: {exc}") from None
        for name in self._auth_params:
            if name in url.query:
                raise ConfigurationError(
                    f"{redact_url(url)} has the query parameter {name!r}, and auth="
                    f"{self._auth!r} sends it too: pass one or the other"
                )
        return url

    def id_of(self, source: Any) -> str:
        """The name of ``source`` in a checkpoint: source_id, or a dependent stream's
        child_id (children of many parents may share a key)."""
        return source_id(source) if self.parents is None else child_id(source)

    def walk(self, source: Source) -> Walk:
        url = self.url(source)
        paginator = source.pages if source.pages is not None else self._pages
        key = self.id_of(source)
        if source.key is None and self.parents is None and has_credentials(source):
            self._one_per_id(key, url)
        resume = self.checkpoint.resume(key, url) if self.checkpoint else None
        run = paginator.begin(url, max_pages=self._max_pages, resume=resume)
        if source is self.single:
            self._single_run = run
        tally = Tally(url, own=own_totals(paginator), generic=self._verify)
        if resume is not None:
            tally.resumed(len(resume.done), resume.records)
        return Walk(
            source,
            run,
            url.origin(),
            tally,
            bool(getattr(paginator, "may_leave_origin", False)),
            command=url,
        )

    def _one_per_id(self, key: str, url: URL) -> None:
        digest = hashlib.sha256(str(url).encode()).digest()
        seen = self._credentialed.setdefault(key, digest)
        if seen != digest:
            raise ConfigurationError(
                f"two sources differ in their credentials alone ({redact_url(url)}): "
                "a checkpoint could not tell their pages apart. Give each a key: "
                "streampage.Source(url, key='tenant-a')"
            )

    async def __aiter__(self) -> AsyncIterator[Source]:
        many = self._many
        if isinstance(many, AsyncIterable):
            async for item in many:
                yield as_source(item)
        elif many is not None:
            for item in many:
                yield as_source(item)

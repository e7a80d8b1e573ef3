"""``stream()``: the user-facing async iterator over pages, and its lifecycle.

Two ways to consume, with one difference in when cleanup completes:

- ``async with stream(...) as pages: async for page in pages: ...`` — leaving the block by any
  route (end, ``break``, exception, cancellation) cancels every worker and in-flight request,
  closes the session, and *waits* for all of it before the block exits. Nothing of the stream
  runs afterwards. Prefer this form.
- ``async for page in stream(...): ...`` — a bare loop has no exit hook, so cleanup is
  requested when the stream object is dropped (the loop's ``break`` or exception releases it;
  ``__del__`` cancels the engine task) and completes over the next few event-loop turns,
  without the caller waiting. If you keep a reference (``s = stream(...)``), call
  ``await s.aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar, overload

import aiohttp
import anyio
import msgspec

from ._auto import Auto
from ._checkpoint import source_id
from ._decode import decoder_for
from ._engine import FLUSH, Engine
from ._errors import ConfigurationError, IncompleteError, PageError, StreamPageError
from ._evidence import Completeness
from ._http import HttpClient
from ._into import Extract, Mode, Records, edges, new_in_tail
from ._lineage import Children, Mark, Parents
from ._page import Page
from ._pagination import Paginator
from ._policy import NO_RETRY, PoolControl, RateLimit, RetryPolicy, Timeout
from ._redact import redact_url, stream_secret_params
from ._sources import SourceLike, Sources, Walk
from ._stats import StreamStats
from .events import Event, PageFailed, PaginatorChosen, PastEnd, Total, TotalDiscovered

if TYPE_CHECKING:
    from yarl import URL

    from ._incremental import Incremental
    from .auth import Auth
    from .sinks import Sink

T = TypeVar("T")

__all__ = ["Failure", "Stream", "stream"]

ParamValue = str | int | float
OnError = Literal["raise", "skip"]
DEFAULT_MAX_PAGE_BYTES = 8 * 1024 * 1024


class Failure(msgspec.Struct, frozen=True):
    """A page that failed after its retries, kept in ``stream.failures`` with ``on_error="skip"``.

    ``status`` is the last HTTP status (None when no response came: see ``error``).
    """

    page: int
    error: PageError
    attempts: int
    status: int | None
    source: Any = None


class Stream(Generic[T]):
    """An async iterator of pages, and an async context manager that owns its cleanup.

    Made by :func:`stream`; can be iterated once.
    """

    def __init__(
        self,
        *,
        sources: Sources,
        pages: Paginator,
        decode: Any,
        concurrency: int,
        ordered: bool,
        buffer: int,
        window: int,
        headers: Mapping[str, str],
        secret_headers: Iterable[str],
        session: aiohttp.ClientSession | None,
        timeout: Timeout,
        retry: RetryPolicy,
        rate: RateLimit | None,
        adaptive: bool,
        validate: Callable[[Page[Any]], object] | None,
        max_page_bytes: int,
        on_error: OnError,
        verify_tls: bool,
        on_event: Callable[[Event], None] | None = None,
        auth: Auth | None = None,
    ) -> None:
        #: how it was made: then() makes its children's stream alike
        self._options: dict[str, Any] = {k: v for k, v in locals().items() if k != "self"}
        self._sources = sources
        self._emit = on_event
        #: what the stream knows of its size once the first page said (single source)
        self.total: Total | None = None
        self._learnt = False
        self._decoder = decoder_for(decode)
        self._concurrency = concurrency
        self._ordered = ordered or bool(getattr(pages, "releases_in_order", False))
        self._buffer = buffer
        self._window = window
        self._session = session
        self._http_args: dict[str, Any] = {
            "headers": dict(headers),
            "secret_headers": tuple(secret_headers),
            "max_page_bytes": max_page_bytes,
            "timeout": aiohttp.ClientTimeout(
                total=timeout.attempt, sock_connect=timeout.connect, sock_read=timeout.first_byte
            ),
            "verify_tls": verify_tls,
            "min_rate": timeout.min_rate,
            "auth": auth,
        }
        #: query parameter names auth= sends (an API key): redacted in every message the
        #: stream's engine makes, whatever their names
        self._secret_params = frozenset(
            name.lower() for name in (auth.fixed_params() if auth is not None else ())
        )
        self._retry = retry
        self._rate = rate
        self._adaptive = adaptive
        self._validate = validate
        self._skip = on_error == "skip"
        self.stats = StreamStats()
        #: pages that failed after their retries, and sources that ended short of a total
        #: their responses reported (IncompleteError), with ``on_error="skip"``
        self.failures: list[Failure] = []
        #: what the stream could check of its own completeness, filled in as sources end
        self.completeness = Completeness()
        #: records on the page delivered last, as completeness counts them (into() keeps
        #: them in the checkpoint, so that a resumed run is checked as a whole)
        self._counted: int | None = None
        #: (the page's URL, its source's command URL) for the page delivered last when its
        #: source is a sequential walk: into() keeps it in the checkpoint, where a resumed
        #: walk starts again
        self._walked: tuple[URL, URL | None] | None = None
        self._engine: Engine | None = None
        #: called with the stream's PoolControl when it starts (a shard of a sharded job
        #: moves its rate and hears of its throttling through it)
        self._on_control: Callable[[PoolControl], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = False
        # ordered mode: results whose turn has come, and the walks holding early arrivals
        self._ready: deque[tuple[Walk, int, Any]] = deque()
        self._holding: set[Walk] = set()
        self._ended = False
        #: completion marks of a dependent stream (see _lineage), kept for into() only: the
        #: engine adds them as children end, into() takes them into its batches
        self._keep_marks = False
        self._marks: list[Mark] = []
        #: into()'s hook that commits the marks held, and how many it lets wait
        self._on_flush: Callable[[], None] | None = None
        self._flush_every = 1000

    # ------------------------------------------------------------------ lifecycle

    def _start(self) -> Engine:
        if self._done:
            raise StreamPageError("this stream has already ended; call stream() again")
        control = PoolControl(
            retry=self._retry,
            rate=self._rate,
            adaptive=self._adaptive,
            concurrency=self._concurrency,
            stats=self.stats,
            emit=self._emit,
        )
        if self._on_control is not None:
            self._on_control(control)
        engine = Engine(
            http=HttpClient(**self._http_args),
            control=control,
            decoder=self._decoder,
            sources=self._sources,
            concurrency=self._concurrency,
            # unordered: the pages being fetched, and as many waiting for the consumer
            # as the buffer holds
            window=self._window if self._ordered else self._concurrency + self._buffer,
            ordered=self._ordered,
            session=self._session,
            stats=self.stats,
            completeness=self.completeness,
            validate=self._validate,
            emit=self._emit,
        )
        self._engine = engine
        if self._keep_marks:
            engine.marks = self._marks
            engine.flush_every = self._flush_every
        self.stats.start()
        # The engine task holds the engine, never this Stream: see __del__.
        loop = asyncio.get_running_loop()
        if self._secret_params:
            context = contextvars.copy_context()
            context.run(stream_secret_params.set, stream_secret_params.get() | self._secret_params)
            self._task = loop.create_task(engine.main(), context=context)
        else:
            self._task = loop.create_task(engine.main())
        return engine

    async def __aenter__(self) -> Self:
        if self._engine is None:
            self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every worker, cancel in-flight requests, close the session; wait for all."""
        self._finish()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _finish(self) -> None:
        """Mark the stream ended and ask the engine task to stop (without waiting)."""
        if not self._done:
            self._done = True
            self.stats.finished_at = perf_counter()
        task = self._task
        if task is not None and not task.done():
            task.cancel()

    def __del__(self) -> None:
        task = getattr(self, "_task", None)  # absent if __init__ raised
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                task.cancel()

    # ------------------------------------------------------------------ iteration

    def __aiter__(self) -> Self:
        return self

    def records(self, extract: Extract = None) -> Records:
        """The records of the pages: ``extract`` is a dotted path into each page's data
        (``"data.items"``), a function of the data, or None (the data is one record)."""
        return Records(self, extract)

    async def into(
        self,
        sink: Sink,
        *,
        batch: int = 1000,
        checkpoint: str = "default",
        mode: Mode | None = None,
        resume: bool = False,
        incremental: Incremental | None = None,
    ) -> StreamStats:
        """Drain the pages, each page's data one record, into ``sink``; see Records.into."""
        return await Records(self, None).into(
            sink,
            batch=batch,
            checkpoint=checkpoint,
            mode=mode,
            resume=resume,
            incremental=incremental,
        )

    async def __anext__(self) -> Page[T]:
        engine = self._engine
        if engine is None:
            engine = self._start()
        elif self._done:
            raise StopAsyncIteration
        try:
            if self._ordered:
                return await self._next_ordered(engine)
            # Unordered: results as they come, taken here rather than in a method of its
            # own (one coroutine a page, not two).
            results = engine.results
            ready = results.items
            moved = engine.window_moved
            while True:
                walk, _seq, number, payload = ready.popleft() if ready else await results.get()
                if walk is None:
                    if payload is FLUSH:
                        self._flush()
                    else:
                        await self._end(engine)
                    continue
                engine.outstanding -= 1
                moved.set()
                walk.taken += 1
                if walk.exhausted and walk.taken == walk.handed:
                    walk.drained.set()
                if payload.__class__ is Page:  # the common case first
                    if not walk.run.past_end(number):
                        if not walk.spawns:
                            return self._deliver(payload, walk)
                        self._spawn(payload, walk)
                        continue
                    self.stats.past_end += 1
                    if self._emit is not None:
                        self._emit(PastEnd(number))
                elif payload is not None:
                    self._settle_other(walk, number, payload)
        except asyncio.CancelledError:
            # The consumer is being cancelled. A bare `async for` has no exit hook, and the
            # CancelledError's traceback keeps this Stream alive (so __del__ will not run):
            # stop the engine here.
            self._finish()
            raise

    async def _next_ordered(self, engine: Engine) -> Page[T]:
        """Pages in order within each source: a page waits only for its own source's head,
        so one slow source does not hold the others back (the window bounds the total)."""
        ready = self._ready
        while True:
            if ready:
                walk, number, payload = ready.popleft()
                engine.outstanding -= 1
                engine.window_moved.set()
                walk.taken += 1
                if walk.exhausted and walk.taken == walk.handed:
                    walk.drained.set()
                if payload is None:
                    continue
                if payload.__class__ is not Page:
                    self._settle_other(walk, number, payload)
                    continue
                if walk.run.past_end(number):
                    self.stats.past_end += 1
                    if self._emit is not None:
                        self._emit(PastEnd(number))
                    continue
                if walk.spawns:
                    self._spawn(payload, walk)
                    continue
                return self._deliver(payload, walk)
            if self._ended:
                if not self._holding:
                    await self._end(engine)
                # only sequence numbers that were never handed out can be missing here
                walk = self._holding.pop()
                for seq in sorted(walk.pending):
                    ready.append((walk, *walk.pending.pop(seq)))
                continue
            owner, seq, number, payload = await engine.results.get()
            if owner is None:
                if payload is FLUSH:
                    self._flush()
                else:
                    self._ended = True
                continue
            walk = owner
            if seq != walk.head:
                walk.pending[seq] = (number, payload)
                self._holding.add(walk)
                continue
            ready.append((walk, number, payload))
            walk.head += 1
            pending = walk.pending
            while walk.head in pending:
                ready.append((walk, *pending.pop(walk.head)))
                walk.head += 1
            if not pending:
                self._holding.discard(walk)

    def _settle_other(self, walk: Walk, number: int, payload: StreamPageError) -> None:
        """A result that is not a page: an error of the page (ignored past the end, where a
        failure does not matter), of the source's configuration, or of its completeness."""
        if isinstance(payload, ConfigurationError):
            self._finish()  # a wrong field name: no policy skips it
            raise payload
        if isinstance(payload, IncompleteError):
            self._fail(payload)
        elif not walk.run.past_end(number):
            walk.tally.failed = True
            self.stats.failed += 1
            self._fail(payload)  # type: ignore[arg-type]

    def _fail(self, error: PageError) -> None:
        """A page failed after its retries, or a source ended incomplete: recorded and
        passed over with on_error="skip", else the end of the stream."""
        if self._emit is not None:
            self._emit(PageFailed(error.page, error))
        if not self._skip:
            self._finish()
            raise error
        status = getattr(error, "status", None)
        source = getattr(error, "source", None)
        self.failures.append(Failure(error.page, error, error.attempts, status, source))

    def _deliver(self, payload: Any, walk: Walk) -> Page[T]:
        stats = self.stats
        stats.pages += 1
        if stats.first_page_at is None:
            stats.first_page_at = perf_counter()
        page: Page[T] = payload
        count = walk.count(page.data)
        walk.tally.observe(page, count)
        if not self._learnt:
            self._learn(walk)
        self._counted = count
        walks = walk.walks
        if walks is None:
            walks = walk.walked()
        self._walked = (page.response.url, walk.command) if walks else None
        return page

    def _spawn(self, page: Page[Any], walk: Walk) -> None:
        """A parent page in its turn: counted as evidence of the parent's size, and its
        records made into the family of children the engine starts (see _lineage)."""
        engine = self._engine
        assert engine is not None and engine.lineage is not None
        self.stats.parent_pages += 1
        count = walk.count(page.data)
        walk.tally.observe(page, count)
        walked = (page.response.url, walk.command) if walk.walked() else None
        lineage = engine.lineage
        try:
            whole = lineage.parents.extract(page)
            records = whole
            held = lineage.parents.sources.checkpoint
            if held is not None and held.reopened:  # a finished run's last page, again
                tail = held.reopened.get(source_id(page.source))
                if tail is not None and tail.number == page.number:
                    records = new_in_tail(tail, whole, page)
            lineage.family(page, records, count, walked, walk.origin, edges(whole))
        except BaseException:
            self._finish()  # a children function that fails fails the stream
            raise

    def _flush(self) -> None:
        if self._on_flush is not None:
            self._on_flush()

    def _children(
        self,
        children: Children,
        extract: Callable[[Page[Any]], list[Any]],
        spec: Any,
        *,
        pages: Paginator | None,
        params: Mapping[str, ParamValue] | None,
        decode: Any,
        cross_origin: bool,
    ) -> Stream[Any]:
        """The stream of the children of this stream's records (Records.then)."""
        if self._sources.parents is not None:
            raise ConfigurationError(
                "then() on the records of a dependent stream: one level of children is "
                "supported; fetch the grandchildren from a second run over the children's "
                "records"
            )
        if self._engine is not None:
            raise ConfigurationError("then(): this stream has started; call then() before it")
        if not callable(children):
            raise ConfigurationError(
                f"then({children!r}): pass a function of a parent record that returns a "
                "child source (a URL, a (url, params) pair or streampage.Source), a list of "
                "them, or None"
            )
        if pages is None:
            pages = Auto()
        elif not callable(getattr(pages, "begin", None)):
            raise ConfigurationError(
                f"then(pages={pages!r}) is not a paginator; pass e.g. "
                "streampage.PageNumber(start=1)"
            )
        above = self._sources
        sources = Sources(
            (),
            pages=pages,
            params=params,
            max_pages=None,
            verify=above.verifies,
            authorization=above.authorization,
            auth=above.auth,
        )
        sources.parents = Parents(above, extract, children, self._decoder, spec, cross_origin)
        options = dict(self._options)
        options.update(
            sources=sources,
            pages=pages,
            decode=decode,
            ordered=self._ordered or bool(getattr(pages, "releases_in_order", False)),
        )
        return Stream(**options)

    def _learn(self, walk: Walk) -> None:
        """The first page delivered: what pages=auto chose, and the total it reported
        (a single source; many sources each have their own)."""
        self._learnt = True
        if walk.source is not self._sources.single:
            return
        run: Any = walk.run
        emit = self._emit
        if emit is not None and run.__class__.__name__ == "_AutoRun":
            url = run.spec_url if run.spec_url is not None else walk.command
            emit(PaginatorChosen(run.spec, redact_url(url) if url is not None else ""))
        pages = None
        last = getattr(run, "last", None)
        if last is not None and not run.open_ended and walk.first is not None:
            pages = last - walk.first + 1
            done = getattr(getattr(run, "_run", run), "_done", None)  # a resume's commits
            for a, b in done.ranges() if done is not None else ():
                pages -= max(0, min(b, last) - max(a, walk.first) + 1)
        records = None
        evidence = []
        for rep in walk.tally.totals.values():
            if rep.unit == "records" and records is None:
                records = rep.hi
                evidence.append(rep.evidence)
            elif rep.unit == "pages" and pages is not None and not evidence:
                evidence.append(rep.evidence)
        if pages is None and records is None:
            return
        self.total = Total(pages, records)
        if emit is not None:
            emit(TotalDiscovered(pages, records, ", ".join(evidence) or "the paginator"))

    async def _end(self, engine: Engine) -> None:
        """The run is over: raise its own failure if it had one, else stop iterating."""
        self._done = True
        self.stats.finished_at = perf_counter()
        if self._task is not None:
            await self._task  # it has put _END, its last act: this returns at once
        error = engine.error
        if isinstance(error, StreamPageError):  # e.g. a bad source read from an iterable
            raise error
        if error is not None:
            raise StreamPageError(f"the stream failed: {error!r}") from error
        raise StopAsyncIteration


@overload
def stream(
    url: SourceLike | Iterable[SourceLike] | AsyncIterable[SourceLike],
    *,
    pages: Paginator | None = ...,
    decode: None = ...,
    concurrency: int = ...,
    ordered: bool = ...,
    buffer: int | None = ...,
    window: int | None = ...,
    params: Mapping[str, ParamValue] | None = ...,
    headers: Mapping[str, str] | None = ...,
    secret_headers: Iterable[str] = ...,
    session: aiohttp.ClientSession | None = ...,
    timeout: float | Timeout | None = ...,
    retry: RetryPolicy | bool = ...,
    rate: float | RateLimit | None = ...,
    adaptive: bool = ...,
    validate: Callable[[Page[Any]], object] | None = ...,
    max_page_bytes: int = ...,
    on_error: OnError = ...,
    verify_tls: bool = ...,
    max_pages: int | None = ...,
    verify: bool = ...,
    on_event: Callable[[Event], None] | None = ...,
    auth: Auth | None = ...,
) -> Stream[Any]: ...


@overload
def stream(
    url: SourceLike | Iterable[SourceLike] | AsyncIterable[SourceLike],
    *,
    pages: Paginator | None = ...,
    decode: type[T],
    concurrency: int = ...,
    ordered: bool = ...,
    buffer: int | None = ...,
    window: int | None = ...,
    params: Mapping[str, ParamValue] | None = ...,
    headers: Mapping[str, str] | None = ...,
    secret_headers: Iterable[str] = ...,
    session: aiohttp.ClientSession | None = ...,
    timeout: float | Timeout | None = ...,
    retry: RetryPolicy | bool = ...,
    rate: float | RateLimit | None = ...,
    adaptive: bool = ...,
    validate: Callable[[Page[Any]], object] | None = ...,
    max_page_bytes: int = ...,
    on_error: OnError = ...,
    verify_tls: bool = ...,
    max_pages: int | None = ...,
    verify: bool = ...,
    on_event: Callable[[Event], None] | None = ...,
    auth: Auth | None = ...,
) -> Stream[T]: ...


def stream(
    url: SourceLike | Iterable[SourceLike] | AsyncIterable[SourceLike],
    *,
    pages: Paginator | None = None,
    decode: Any = None,
    concurrency: int = 16,
    ordered: bool = False,
    buffer: int | None = None,
    window: int | None = None,
    params: Mapping[str, ParamValue] | None = None,
    headers: Mapping[str, str] | None = None,
    secret_headers: Iterable[str] = (),
    session: aiohttp.ClientSession | None = None,
    timeout: float | Timeout | None = None,
    retry: RetryPolicy | bool = True,
    rate: float | RateLimit | None = None,
    adaptive: bool = True,
    validate: Callable[[Page[Any]], object] | None = None,
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
    on_error: OnError = "raise",
    verify_tls: bool = True,
    max_pages: int | None = None,
    verify: bool = True,
    on_event: Callable[[Event], None] | None = None,
    auth: Auth | None = None,
) -> Stream[Any]:
    """Stream the pages of a paginated JSON API, fetched concurrently, as they arrive.

    ``url`` is one source, or many: a list or an (async) iterable of URLs, ``(url, params)``
    pairs or ``Source(url, params=, pages=, key=)``, read lazily and fetched by one worker
    pool under one set of limits; ``page.source`` says which one a page came from, and
    ``ordered=True`` orders pages within each source.

    ``pages`` says which pages to fetch and when the data ends (default: ``Auto()``, which
    picks the paginator from the first response). ``decode`` is a type for msgspec to decode and
    validate each body into (``None``: plain JSON objects). ``concurrency`` requests run at
    once over one keep-alive session. ``ordered=True`` yields pages in page order through a
    reorder window of ``window`` pages (default ``4 * concurrency``) inside which workers keep
    fetching while a slow page holds the head. Unordered, the pages fetched but not yet
    consumed are at most ``concurrency + buffer`` (``buffer``: default ``min(concurrency,
    4)``). ``params`` are added to the URL's query (never mutated); ``max_pages`` caps the
    number of pages whatever the paginator says.

    Resilience: ``retry`` (``True``: ``RetryPolicy()``, 10 attempts, equal-jitter backoff from
    20 ms, ``Retry-After`` honoured; ``False``: one attempt; or your own ``RetryPolicy``),
    ``rate`` (requests per second, or ``RateLimit(per_second, burst)``, shared by all
    workers), ``adaptive`` (default on: a 429/503 that concurrency explains lowers the
    in-flight limit to what the server accepts, and it probes upward slowly; ``False``
    keeps ``concurrency`` whatever happens), ``timeout`` (seconds for a whole attempt, or
    ``Timeout(connect=, first_byte=, attempt=, min_rate=)``: by default 10 s to connect,
    10 s of silence, 60 s an attempt, 1 KiB/s at least), ``max_page_bytes`` (larger bodies
    are refused while they stream in). ``validate`` is a function of each decoded page: a
    false answer or an exception rejects it, and it is fetched again like a body that did
    not decode, then fails with ``ValidationError``.
    ``on_error="raise"`` ends the stream with the first page that failed after its retries;
    ``"skip"`` records it in ``stream.failures`` and goes on.

    Credentials: ``headers`` go with every request to the URL's origin; those that look
    secret (Authorization, Cookie, names with key/token/secret/auth/session) and those named
    in ``secret_headers`` are dropped on a redirect to another origin, and never appear in
    errors. ``auth`` is one of ``streampage.auth``'s: ``Bearer(token)``, ``Basic(user,
    password)``, ``APIKey(name, value, where="header" | "query")`` or
    ``OAuth2ClientCredentials(token_url, client_id, client_secret)`` (one token for the
    pool, fetched again ahead of its expiry and on a 401); it goes to the URL's origin only,
    like secret headers, and never into an error, a log or a checkpoint. TLS certificates
    are verified unless ``verify_tls=False``.

    Completeness: every total a response reveals (``X-Total-Count``, ``total``, ``count``,
    ``total_pages``, ``rel="last"``, ...) is checked against what each source delivered
    when it ends; a disagreement is an ``IncompleteError`` (raised, or in ``failures`` with
    ``on_error="skip"``), and ``stream.completeness`` says what was checked and what could
    not be. ``verify=False`` checks only the totals the paginator was told to read, not
    the well-known fields and headers found by name (for an API whose ``total`` is not a
    record count).

    Events: ``on_event`` is called with what the stream learns and decides as it runs
    (``streampage.events``: the paginator pages=auto chose, the total the first page gave,
    pauses, concurrency changes, retries, failures, commits), on the event loop, in order.

    Nothing happens until the stream is iterated; arguments are checked at once.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency={concurrency!r} must be a whole number >= 1")
    if buffer is None:
        # Small on purpose: the collector's youngest generation is collected every ~700
        # objects allocated and not yet freed, and pages waiting for the consumer are such
        # objects (~30-35 each for 14 records). With 16, ~10-12 of them waited at a typical
        # collection against ~2 with 4, and with the requests started meanwhile they brought
        # the count to 700 twice as often: at concurrency 200 (20 ms) 31-32 → 61-71 young
        # collections a 10^4-page run, 7-10 → 36-46 ms, each walking the young requests in
        # flight too. The requests in flight are the slack between fetch and consumer (the
        # window is concurrency + buffer); the buffer only smooths it.
        buffer = min(concurrency, 4)
    elif isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise ConfigurationError(f"buffer={buffer!r} must be a whole number >= 1")
    if window is None:
        window = 4 * concurrency
    elif isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigurationError(
            f"window={window!r} must be a whole number >= 1 (and at least concurrency, "
            "or workers idle while the head page is slow)"
        )
    if max_pages is not None and (not isinstance(max_pages, int) or max_pages < 1):
        raise ConfigurationError(f"max_pages={max_pages!r} must be a whole number >= 1 or None")
    if not isinstance(timeout, Timeout):
        if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
            raise ConfigurationError(f"timeout={timeout!r} must be a positive number of seconds")
        timeout = Timeout() if timeout is None else Timeout(attempt=timeout)
    if rate is not None and not isinstance(rate, RateLimit):
        rate = RateLimit(rate)
    if on_error not in ("raise", "skip"):
        raise ConfigurationError(f"on_error={on_error!r} must be 'raise' or 'skip'")
    if max_page_bytes < 1:
        raise ConfigurationError(f"max_page_bytes={max_page_bytes!r} must be >= 1")
    if validate is not None and (not callable(validate) or inspect.iscoroutinefunction(validate)):
        raise ConfigurationError(
            f"validate={validate!r} must be a plain function of the page that returns true "
            "to accept it (an async function would accept every page unseen)"
        )
    if on_event is not None and (not callable(on_event) or inspect.iscoroutinefunction(on_event)):
        raise ConfigurationError(
            f"on_event={on_event!r} must be a plain function of the event (it is called on "
            "the event loop; hand slow work to a queue of your own)"
        )
    if isinstance(secret_headers, str):
        raise ConfigurationError("secret_headers= takes a list of header names, not one string")
    if pages is None:
        pages = Auto()
    elif not callable(getattr(pages, "begin", None)):
        raise ConfigurationError(
            f"pages={pages!r} is not a paginator; pass e.g. streampage.PageNumber(start=1)"
        )
    authorization = any(k.lower() == "authorization" for k in headers or {})
    if auth is not None:
        _check_auth(auth, headers or {}, params or {}, session)
    sources = Sources(
        url,
        pages=pages,
        params=params,
        max_pages=max_pages,
        verify=verify,
        authorization=authorization,
        auth=auth,
    )
    return Stream(
        sources=sources,
        pages=pages,
        decode=decode,
        concurrency=concurrency,
        ordered=ordered,
        buffer=buffer,
        window=window,
        headers=headers or {},
        secret_headers=secret_headers,
        session=session,
        timeout=timeout,
        retry=retry if isinstance(retry, RetryPolicy) else RetryPolicy() if retry else NO_RETRY,
        rate=rate,
        adaptive=adaptive,
        validate=validate,
        max_page_bytes=max_page_bytes,
        on_error=on_error,
        verify_tls=verify_tls,
        on_event=on_event,
        auth=auth,
    )


def _check_auth(
    auth: Any,
    headers: Mapping[str, str],
    params: Mapping[str, ParamValue],
    session: aiohttp.ClientSession | None,
) -> None:
    """``auth=`` is one of streampage.auth's, and no other argument sends what it sends."""
    from .auth import Auth

    if not isinstance(auth, Auth):
        raise ConfigurationError(
            f"auth={type(auth).__name__} is not one of streampage.auth's: pass Bearer(token), "
            "Basic(user, password), APIKey(name, value, where=) or OAuth2ClientCredentials(...)"
        )
    sends = {name.lower() for name in auth.header_names()}
    for name in headers:
        if name.lower() in sends:
            raise ConfigurationError(
                f"auth={auth!r} and headers= both send {name}: pass one or the other"
            )
    for name in auth.fixed_params():
        if name in params:
            raise ConfigurationError(
                f"auth={auth!r} and params= both send the query parameter {name!r}: pass "
                "one or the other"
            )
    if session is not None:
        if session.auth is not None and "authorization" in sends:
            raise ConfigurationError(
                f"auth={auth!r} and the session's own auth= both send Authorization: pass "
                "one or the other"
            )
        for name in session.headers:
            if name.lower() in sends:
                raise ConfigurationError(
                    f"auth={auth!r} and the session's default headers both send {name}: "
                    "pass one or the other"
                )

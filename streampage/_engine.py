"""The engine: a lazy producer, a bounded work queue, long-lived fetch workers, a result buffer.

    paginator run ─numbers─► producer ─► work queue ─► N workers ─► results ───► consumer
         ▲                  (waits on the  (maxsize N)  (one shared  (never blocks  (Stream)
         │                   window)                     session)     a worker)
         └────── feedback: total discovered, end found (accept / ends_at_status) ──────┘

Every number the producer hands out comes back through the result queue exactly once, as a
page, an error, or ``None`` (nothing to deliver: past the end, or cancelled because it was).
That invariant is what lets the ordered consumer advance past gaps, and what makes "nothing is
dropped silently" checkable. The window bounds memory: the producer hands out no more than
``window`` pages the consumer has not taken yet (ordered: released), N being fetched and
``buffer`` waiting unordered. The run ends by closing, not by counting: the producer puts one
``None`` per worker when the paginator is exhausted, and the runner puts ``_END`` when every
worker has returned.

The engine never holds a reference to the Stream that consumes it, so a Stream dropped by a
``break`` out of a bare ``async for`` is collected at once and can cancel the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any, NamedTuple

import aiohttp
import anyio
import anyio.abc
import msgspec
from yarl import URL

from ._decode import decode_body
from ._errors import (
    ConfigurationError,
    DecodeError,
    HTTPStatusError,
    PageError,
    PaginationError,
    RequestError,
    StreamPageError,
    ValidationError,
)
from ._evidence import Completeness, last_page_said
from ._http import HttpClient, Response, Transient
from ._lineage import ChildEnded, Family, Lineage
from ._page import Page, ResponseInfo
from ._pagination import WouldWait
from ._policy import CONGESTION_STATUSES, PoolControl, parse_retry_after, rate_limit_pause
from ._redact import redact_url
from ._sources import Source, Sources, Walk
from ._stats import StreamStats
from .events import Event, PastEnd, Retrying

logger = logging.getLogger("streampage")

# anyio imports its asyncio backend on first use, which costs ~15 ms: pay it when streampage
# is imported rather than inside the first stream's time to first page.
with contextlib.suppress(ImportError):
    importlib.import_module("anyio._backends._asyncio")

#: Payload of the last item on the result queue.
_END: Any = object()
#: Payload of an item that asks the consumer to commit the marks held (see Engine.mark).
FLUSH: Any = object()

#: A unit of work: (source walk, sequence number within the source, page number).
Job = tuple[Walk, int, int]
#: (walk, sequence, page number, payload): payload is a Page, a PageError, None (nothing to
#: deliver: past the end) or _END (then walk is None).
Result = tuple[Walk | None, int, int, Any]

#: Workers that start at once; the rest wait for the first result (or _RAMP_AFTER seconds).
#: Opening every connection before reading any response made the first page wait for all of
#: them (12 ms at concurrency 50, 55 ms at 200); a short slow start puts it at ~2 ms, and
#: costs a fast server nothing and a slow one a few milliseconds of reduced concurrency.
_INITIAL_WORKERS = 8
_RAMP_AFTER = 0.005
_BODY_EXCERPT = 200
_USER_AGENT = "streampage"


class Results:
    """Results waiting for the consumer: a deque, and the consumer's future while it waits.

    Unbounded by itself: the producer hands out no more pages than the window allows
    (Engine.outstanding), so a worker never blocks to put its result. A bounded queue
    made the workers that found it full wait in line with futures of their own, and a
    free slot went to whichever came next: at 1,000 workers, more than one wait a page.
    """

    __slots__ = ("_waiter", "items")

    def __init__(self) -> None:
        #: the results in order of arrival: the consumer pops them itself while there are
        #: any, and awaits get() only when there are none
        self.items: deque[Result] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Result) -> None:
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> Result:
        items = self.items
        while not items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return items.popleft()

    def qsize(self) -> int:
        return len(self.items)


class Work:
    """The work queue: jobs from the producer to the workers, in order, at most ``maxsize``
    of them waiting.

    A job put while workers wait goes to the first of them at once, and a worker that
    takes a job wakes the first producer waiting for room: one future and one wake-up a
    wait, no re-checks. The window lets the producer run only a few pages ahead of the
    consumer, so a worker that finishes a page mostly finds no job and waits for one (at
    concurrency 200, ~1 wait a page): asyncio.Queue spent ~150 bytecodes a page more on
    that hand-off (its waiters' re-check loops, a finished-tasks event per put).
    """

    __slots__ = ("_getters", "_items", "_maxsize", "_putters")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Job | None] = deque()
        self._maxsize = maxsize
        self._getters: deque[asyncio.Future[Job | None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()

    def offer(self, job: Job) -> bool:
        """``put`` without a coroutine when it would not wait (a worker waits, or there is
        room): the producer's common case. False when it must ``await put``."""
        if self._give(job):
            return True
        if len(self._items) < self._maxsize:
            self._items.append(job)
            return True
        return False

    async def put(self, job: Job | None) -> None:
        while True:
            if self._give(job):
                return
            if len(self._items) < self._maxsize:
                self._items.append(job)
                return
            room = asyncio.get_running_loop().create_future()
            self._putters.append(room)
            try:
                await room
            except BaseException:
                if not room.done():
                    self._putters.remove(room)
                elif not room.cancelled():
                    self._make_room()  # woken, then cancelled: the room goes to the next
                raise

    async def get(self) -> Job | None:
        items = self._items
        if self._putters:
            self._make_room()  # this take makes room (or the queue is empty: there is)
        if items:
            return items.popleft()
        fut: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._getters.append(fut)
        try:
            return await fut
        except BaseException:
            if not fut.done():
                self._getters.remove(fut)
            elif not fut.cancelled():
                # handed a job, then cancelled: the job goes to another worker, or first
                # in line, so that every job is still taken exactly once
                job = fut.result()
                if not self._give(job):
                    items.appendleft(job)
            raise

    def _give(self, job: Job | None) -> bool:
        """Hand ``job`` to the first worker waiting, if one is."""
        getters = self._getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(job)
                return True
        return False

    def _make_room(self) -> None:
        putters = self._putters
        while putters:
            room = putters.popleft()
            if not room.done():
                room.set_result(None)
                return


class Engine:
    """One run of a stream. Created by Stream on first use, run as a single task."""

    def __init__(
        self,
        *,
        sources: Sources,
        http: HttpClient,
        control: PoolControl,
        decoder: msgspec.json.Decoder[Any],
        concurrency: int,
        window: int,
        ordered: bool = False,
        session: aiohttp.ClientSession | None,
        stats: StreamStats,
        completeness: Completeness,
        validate: Callable[[Page[Any]], object] | None = None,
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        self.stats = stats
        self._emit = emit
        self._validate = validate
        self.completeness = completeness
        self.results = Results()
        #: pages handed out but not yet taken (unordered) or released (ordered) by the
        #: consumer: the producer keeps it within the window, which bounds memory
        self.outstanding = 0
        self.window_moved = asyncio.Event()
        #: a failure of the run itself (not of a page), read by the consumer at _END
        self.error: BaseException | None = None
        self._sources = sources
        self._http = http
        self._control = control
        self._decoder = decoder
        self._concurrency = concurrency
        self._window = window
        self._ordered = ordered
        self._work = Work(maxsize=concurrency)
        self._user_session = session
        self._inflight: dict[Job, anyio.CancelScope] = {}
        self._any_ok = False
        self._ramped = asyncio.Event()
        # Requests that turn out to lie past the end are cancelled when nothing else could
        # take their slot (one source: every page before the end was handed out first).
        # With many sources a freed worker would start another source's request while the
        # server still works on the abandoned one, so they are left to finish and discarded:
        # the server never sees more than `concurrency` requests at once.
        self._cancel_past_end = sources.single is not None
        #: pages waiting out a retry backoff off the workers (see _rest), and the task group
        #: their waits run in
        self._resting = 0
        self._tg: anyio.abc.TaskGroup | None = None
        #: where a dependent stream's completion marks go (into() sets it; else not kept),
        #: and how many may wait before the consumer is asked to commit them
        self.marks: list[Any] | None = None
        self.flush_every = 1000
        #: a dependent stream's families and parent walks (then())
        self.lineage = (
            None if sources.parents is None else Lineage(sources.parents, sources, concurrency)
        )

    # ------------------------------------------------------------------ lifecycle

    async def main(self) -> None:
        """Run producer and workers to completion, then mark the end on the result queue."""
        error: BaseException | None = None
        ramp = asyncio.get_running_loop().call_later(_RAMP_AFTER, self._ramped.set)
        try:
            async with self._open_session(), anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._produce)
                for index in range(self._concurrency):
                    tg.start_soon(self._worker, index >= _INITIAL_WORKERS)
        except Exception as exc:  # a failure of the run itself, not of a page
            error = exc
            while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                error = error.exceptions[0]
        finally:
            ramp.cancel()
            self._http.stop()
        self.error = error
        self.results.put((None, -1, -1, _END))

    def _open_session(self) -> aiohttp.ClientSession | _Borrowed:
        http = self._http
        if self._user_session is not None:
            http.attach(self._user_session, owned=False)
            return _Borrowed()
        connector = aiohttp.TCPConnector(
            limit=self._concurrency,
            limit_per_host=0,
            ttl_dns_cache=300,
            ssl=http.verify_tls,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": _USER_AGENT},
            timeout=http.session_timeout,
            raise_for_status=False,
            trust_env=False,
        )
        # aiohttp retries a GET once by itself when a kept-alive connection turns out dead.
        # That retry would be invisible to the RetryPolicy (attempts silently doubled, never
        # counted), so it is turned off; there is no public switch (aiohttp's own test_utils
        # sets the same attribute). A session passed by the user keeps its own behaviour.
        session._retry_connection = False
        http.attach(session, owned=True)
        return session

    # ------------------------------------------------------------------ producer

    async def _produce(self) -> None:
        sources = self._sources
        if self.lineage is not None:
            await self._produce_families(self.lineage)
        elif sources.single is not None:
            await self._feed(sources.single)
        else:
            # Sources are read lazily and at most `concurrency` are walked at once: enough
            # for 50 sequential walks to keep 50 workers busy, and memory stays bounded.
            active = asyncio.Semaphore(self._concurrency)
            async with anyio.create_task_group() as tg:
                async for source in sources:
                    await active.acquire()
                    tg.start_soon(self._feed, source, active)
        for _ in range(self._concurrency):
            await self._work.put(None)

    async def _produce_families(self, lineage: Lineage) -> None:
        """A dependent stream: the parent sources' walks, and the children of each parent
        page the consumer took, started in the order of their pages as room allows."""
        parents = lineage.parents.sources
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._spawn, lineage)
            try:
                if parents.single is not None:
                    await self._feed(parents.single, spawns=True)
                else:
                    active = asyncio.Semaphore(self._concurrency)
                    async with anyio.create_task_group() as walks:
                        async for source in parents:
                            await active.acquire()
                            walks.start_soon(self._feed, source, active, None, "", True)
            finally:
                lineage.over = True  # every parent page was taken: no family will come
                lineage.arrived.set()

    async def _spawn(self, lineage: Lineage) -> None:
        """Start the children of each family, at most ``concurrency`` walks at once; a child
        an earlier run ended (into(mode="resume")) is not started again."""
        families = lineage.families
        checkpoint = self._sources.checkpoint
        active = asyncio.Semaphore(self._concurrency)
        async with anyio.create_task_group() as tg:
            while True:
                if not families:
                    if lineage.over:
                        return
                    lineage.arrived.clear()
                    await lineage.arrived.wait()
                    continue
                family = families[0]
                sources = family.sources
                while sources:
                    child, key = sources[0]
                    if checkpoint is None or not checkpoint.ended(key):
                        await active.acquire()
                        family.running += 1
                        tg.start_soon(self._feed, child, active, family, key)
                    sources.popleft()
                    lineage.unstarted -= 1
                    self.window_moved.set()  # the parent walks may go on
                families.popleft()
                family.spawned = True
                self._family_over(family)

    def _family_over(self, family: Family) -> None:
        mark = family.mark()
        if mark is not None:
            self._mark(mark)

    def _mark(self, mark: Any) -> None:
        """Keep a completion mark for into(). Parent pages without children, or children
        without records, make marks and no records, which no batch would ever fill up: the
        consumer is asked to commit them every ``flush_every`` marks."""
        marks = self.marks
        if marks is not None:
            marks.append(mark)
            if len(marks) % self.flush_every == 0:
                self.results.put((None, -1, -1, FLUSH))

    async def _feed(
        self,
        source: Source,
        active: asyncio.Semaphore | None = None,
        family: Family | None = None,
        key: str = "",
        spawns: bool = False,
    ) -> None:
        """Hand out the pages of one source, as its paginator finds them; when it is
        exhausted and its last result has been taken, check it against the evidence.
        A parent source (``spawns``) waits while its children are behind; a child
        (``family``) tells its family when it is over."""
        lineage = self.lineage
        ok = False
        try:
            if spawns:
                assert lineage is not None
                parents = lineage.parents
                walk = parents.sources.walk(source)
                walk.spawns = True
                walk.decoder = parents.decoder
            else:
                walk = self._sources.walk(source)
            if family is not None:  # a child: credentials go to its parent's origin only
                walk.origin = family.home
                walk.may_leave_origin = True
            run = walk.run
            if self._cancel_past_end:
                run.on_end = functools.partial(self._cancel_past, walk)
            put = self._work.put
            offer = self._work.offer
            # PageNumber and Offset runs answer without a coroutine (WouldWait: only while
            # their first page is fetched alone)
            nowait = getattr(run, "next_nowait", None)
            window = self._window
            seq = 0
            while not walk.broken:
                if self.outstanding >= window:
                    blocked = perf_counter()
                    while self.outstanding >= window:
                        self.window_moved.clear()
                        await self.window_moved.wait()
                    if not self._ordered:  # ordered: the head page is slow, not the consumer
                        self.stats.consumer_wait_seconds += perf_counter() - blocked
                if spawns:
                    assert lineage is not None
                    # a parent runs ahead of its children by a few pages at most
                    while (
                        walk.handed - walk.taken >= lineage.ahead
                        or lineage.unstarted >= lineage.concurrency
                    ):
                        self.window_moved.clear()
                        await self.window_moved.wait()
                try:
                    if nowait is not None:
                        try:
                            number = nowait()
                        except WouldWait:
                            number = await run.next()
                    else:
                        number = await run.next()
                except PageError as error:  # the paginator cannot go on (a loop, a foreign link)
                    error.source = source
                    walk.broken = True
                    await self._result(walk, seq, error)
                    break
                if number is None or walk.broken:
                    break
                if walk.first is None:
                    walk.first = number
                self.outstanding += 1
                walk.handed += 1
                job = (walk, seq, number)
                if not offer(job):
                    await put(job)
                seq += 1
            if active is not None:
                active.release()  # the walk's pages are out: another source may start
                active = None
            ok = await self._check(walk, seq)
        finally:
            if active is not None:
                active.release()
            if family is not None:
                family.running -= 1
                if ok:
                    self._mark(ChildEnded(key))
                else:
                    family.failed = True
                self._family_over(family)

    async def _result(self, walk: Walk, seq: int, payload: StreamPageError) -> None:
        """Put a result of the source itself (not of a fetched page) in its turn."""
        self.outstanding += 1
        walk.handed += 1
        page = payload.page if isinstance(payload, PageError) else -1
        self.results.put((walk, seq, page, payload))

    async def _check(self, walk: Walk, seq: int) -> bool:
        """The source is over: once the consumer has taken its every page, hold what was
        delivered against the totals its responses reported. True when it agrees."""
        walk.exhausted = True
        if walk.taken < walk.handed:
            await walk.drained.wait()
        tally = walk.tally
        if walk.broken or tally.failed:
            self.completeness.add((None, "pages failed: see the errors", False), "", failed=True)
            return False
        tally.capped = tally.capped or self._sources.max_pages is not None
        tally.capped = tally.capped or bool(getattr(walk.run, "bounded", False))
        if tally.capped:
            self.completeness.bounded += 1
        verdict = tally.verdict()
        error = verdict[0]
        named = "" if self._sources.single is not None else repr(walk.source)
        self.completeness.add(verdict, named)
        if error is not None:
            error.source = walk.source
            logger.info("%s", error)  # delivered as an error too: raised, or in failures
            await self._result(walk, seq, error)
            return False
        return True

    # ------------------------------------------------------------------ workers

    async def _worker(self, late: bool) -> None:
        ramped = self._ramped
        if late:
            await ramped.wait()
        get = self._work.get
        put = self.results.put
        fetch = self._fetch
        inflight = self._inflight
        slot = self._http.watch()  # this worker's deadlines, for all its requests
        try:
            while True:
                job = await get()
                if job is None:
                    return
                walk, seq, number = job
                run = walk.run
                payload: Page[Any] | StreamPageError | _Rest | None = None
                if walk.broken or run.past_end(number):
                    pass
                elif run.open_ended and self._cancel_past_end:
                    # The end is unknown, so this fetch may turn out to be past it: make it
                    # cancellable by _cancel_past. Known ranges skip a cancel scope's cost.
                    with anyio.CancelScope() as scope:
                        inflight[job] = scope
                        try:
                            payload = await fetch(walk, number, slot)
                        finally:
                            del inflight[job]
                    if scope.cancelled_caught:
                        self._past_end(number)
                else:
                    payload = await fetch(walk, number, slot)
                if payload.__class__ is _Rest:
                    # the page waits out its backoff off this worker, which takes the next
                    assert self._tg is not None and isinstance(payload, _Rest)
                    self._resting += 1
                    self._tg.start_soon(self._rest, job, payload)
                    continue
                if walk.on_settle is not None:
                    walk.on_settle(number)
                put((walk, seq, number, payload))  # never blocks: the window bounds the pages
                if not ramped.is_set():
                    ramped.set()  # after the put: the consumer is woken before the late workers
        finally:
            self._http.unwatch(slot)

    async def _rest(self, job: Job, rest: _Rest) -> None:
        """A page's retry backoff, waited out away from the workers: a worker that slept
        through it would leave its slot idle while other pages wait (5% of pages retried
        cost a fifth of the throughput that way). Its next attempts still go through the
        adaptive limit, so the requests in flight stay within it."""
        walk, seq, number = job
        payload: Page[Any] | StreamPageError | _Rest | None = None
        slot = None
        try:  # resting until its result is in: at most `concurrency` pages rest at once
            await asyncio.sleep(rest.wait)
            if not walk.broken and not walk.run.past_end(number):  # the end may have moved
                slot = self._http.watch()
                payload = await self._fetch(walk, number, slot, rest, hand_off=False)
        finally:
            self._resting -= 1
            self._http.unwatch(slot)
        assert not isinstance(payload, _Rest)
        if walk.on_settle is not None:
            walk.on_settle(number)
        self.results.put((walk, seq, number, payload))

    def _cancel_past(self, walk: Walk, last: int) -> None:
        for (owner, _seq, number), scope in self._inflight.items():
            if owner is walk and number > last:
                scope.cancel()

    async def _fetch(
        self,
        walk: Walk,
        number: int,
        slot: list[Any] | None,
        rest: _Rest | None = None,
        hand_off: bool = True,
    ) -> Page[Any] | StreamPageError | _Rest | None:
        """Fetch and decode one page, with retries; every failure comes back as a value.
        A backoff before a retry comes back as a _Rest (to be waited out off the worker)
        when ``hand_off`` allows and there is room; ``rest`` resumes after one. ``slot``
        is the calling task's deadline slot (HttpClient.watch)."""
        run = walk.run
        url = run.url(number) if rest is None else rest.url
        control = self._control
        policy = control.retry
        stats = self.stats
        adaptive = control.adaptive
        if rest is None:
            attempt = decode_failures = 0
            waited = 0.0
        else:
            attempt, decode_failures, waited = rest.attempt, rest.decode_failures, rest.waited
        renewals = 0  # 401s answered by renewing auth='s token (twice at most: a guard)
        while True:
            attempt += 1
            if not control.steady and control.must_wait:
                await control.before_attempt()
            # a free slot is taken without a coroutine; acquire() waits for one
            ticket = (0, 0) if adaptive is None else adaptive.take() or await adaptive.acquire()
            status = 0
            retry_after: float | None = None
            stats.requests += 1
            try:
                resp = await self._http.get(url, number, walk.origin, walk.may_leave_origin, slot)
                status = resp.status
            except Transient as exc:
                error: PageError = self._request_error(number, url, exc)
                reason = exc.reason
            except PageError as exc:
                error, reason = exc, ""
            finally:
                if adaptive is not None:
                    adaptive.release(ticket, status)
            if status:
                stats.bytes += len(resp.body)
                stats.network_seconds += resp.elapsed
                # An exhausted budget pauses the pool until it resets, before any 429.
                pause = rate_limit_pause(resp.headers)
                if pause is not None:
                    control.pause(min(pause, policy.max_retry_after), "rate-limit budget gone")
                    control.throttled(min(pause, policy.max_retry_after))
                if status == 200 or 200 <= status < 300:  # (200 itself: one comparison)
                    self._any_ok = True
                    try:
                        decoder = walk.decoder or self._decoder
                        data = decode_body(decoder, resp.body, page=number, url=resp.url)
                        info = ResponseInfo(status, resp.elapsed, resp.url, resp.headers)
                        page = Page(number, data, info, walk.source)
                        return self._accept(walk, page, hash(resp.body))
                    except DecodeError as exc:  # ValidationError too: validate= said no
                        decode_failures += 1
                        error = exc
                        retry = decode_failures < policy.decode_attempts
                        why = "invalid" if isinstance(exc, ValidationError) else "decode"
                        reason = why if retry else ""
                    except ConfigurationError as exc:  # a field the user named is not there
                        walk.broken = True
                        run.failed(number)
                        return exc
                    except PageError as exc:  # the page shows the pagination is wrong
                        walk.broken = True
                        return self._give_up(walk, number, exc, attempt)
                elif (
                    status == 401
                    and resp.credential is not None
                    and renewals < 2
                    and await self._http.renewed(resp)
                ):
                    # auth='s token expired or was revoked: the same request again with
                    # the new one, not another attempt (a new token refused is final)
                    renewals += 1
                    attempt -= 1
                    continue
                elif run.ends_at_status(number, status):
                    self._past_end(number)
                    return None
                else:
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    if retry_after is None and status in CONGESTION_STATUSES:
                        retry_after = pause
                    error = self._status_error(number, resp, retry_after)
                    reason = f"status {status}" if status in policy.statuses else ""
            # -- the attempt failed: retry, or give the page up
            if not reason or attempt >= policy.attempts:
                return self._give_up(walk, number, error, attempt)
            wait = policy.backoff_for(attempt - 1)
            if retry_after is not None:
                if retry_after > policy.max_retry_after:
                    return self._give_up(walk, number, error, attempt)
                wait = max(wait, retry_after)
                if status in CONGESTION_STATUSES:
                    control.throttled(retry_after)
                    if retry_after >= policy.pool_pause:
                        # a long wait: the whole pool, not one page
                        control.pause(retry_after, f"Retry-After on page {number}")
            if waited + wait > policy.max_total:
                return self._give_up(walk, number, error, attempt)
            stats.retries[reason] = stats.retries.get(reason, 0) + 1
            logger.info("retrying page %d in %.2f s after %s: %s", number, wait, reason, error)
            if self._emit is not None:
                self._emit(Retrying(number, attempt, reason, wait))
            waited += wait
            stats.backoff_seconds += wait
            if hand_off and adaptive is not None and self._resting < self._concurrency:
                return _Rest(wait, url, attempt, decode_failures, waited)
            await asyncio.sleep(wait)

    def _validated(self, page: Page[Any], walk: Walk | None = None) -> None:
        """``validate=`` on a decoded page: a false answer or an exception rejects it, and it
        is fetched again like a body that did not decode (a cache or a proxy that served
        another page's body, say)."""
        assert self._validate is not None
        try:
            ok = self._validate(page)
            why = "validate= returned False"
        except Exception as exc:
            ok, why = False, f"validate= raised {type(exc).__name__}: {exc}"
        if not ok:
            if walk is not None:
                walk.forget(page.number)
            shown = redact_url(page.response.url)
            raise ValidationError(
                f"page {page.number} was rejected: {why} (url: {shown})",
                page=page.number,
                url=shown,
                path=None,
                reason=why,
            )

    def _past_end(self, number: int) -> None:
        """Page ``number`` lies past the end: counted, told, not delivered."""
        self.stats.past_end += 1
        if self._emit is not None:
            self._emit(PastEnd(number))

    def _accept(self, walk: Walk, page: Page[Any], digest: int) -> Page[Any] | None:
        """Pass a decoded page to its paginator, after comparing its body with its
        neighbours' and the first page's (whichever arrived first): a page that repeats
        another is never delivered twice. Runs whose end is unknown release pages in order,
        so that the repeat of a page past the end is found before it could be released."""
        number = page.number
        run = walk.run
        if walk.broken:
            return None
        if run.past_end(number):
            self._past_end(number)
            return None
        pair = walk.repeated(number, digest)
        try:
            ended = pair is not None and self._repeat(walk, pair, page)
            # validate= after the end is known (a page past it is no error), and before a
            # repeat is reported (another page's body is the server's slip, fetched again)
            if self._validate is not None and not (ended and pair and pair[0] == number):
                self._validated(page)
        except PaginationError:
            if self._validate is not None:
                self._validated(page, walk)
            raise
        except ValidationError:
            walk.forget(number)
            raise
        if ended and pair is not None and pair[0] == number:
            self._past_end(number)
            return None
        if run.accept(page):
            return page
        if not run.past_end(number):  # (a page past the end may say "total: 0")
            walk.tally.witness(page)  # committed by an earlier run: its totals still count
        return None

    def _repeat(self, walk: Walk, pair: tuple[int, int], page: Page[Any]) -> bool:
        """Page ``pair[0]`` has the same body as page ``pair[1]`` (``page`` is one of them).
        True when that marks the end of the data (the later page lies past it); False when
        it does not matter (two empty pages duplicate nothing: continuation APIs send them);
        else a PaginationError, since a page would be delivered twice."""
        later, earlier = pair
        run = walk.run
        if walk.count(page.data) == 0:
            return False
        end_at = getattr(run, "end_at", None)
        said = last_page_said(page, walk.first or 1)
        if said is not None and said < later and end_at is not None:
            end_at(said)  # the body itself says the data ends before the repeat
            return True
        ends = getattr(run, "repeats", None)
        if later - 1 == earlier and ends is not None and ends(later):
            logger.info(
                "page %d is page %d again: the data ends at page %d (a server that answers "
                "pages past the end with the last one)",
                later,
                earlier,
                earlier,
            )
            return True
        shown = redact_url(page.response.url)
        param = getattr(run, "param", None)
        where = f"({shown} is page {page.number})"
        if earlier == walk.first:
            named = f"the parameter {param!r}" if param else "the page parameter"
            message = (
                f"page {later} has the same body as page {earlier} {where}: the server "
                f"ignores {named}, so every page would be the first again. Check the "
                "paginator and its page parameter against the API's documentation "
                "(streampage fetch: --pages, --page-param)."
            )
        else:
            message = (
                f"page {later} has the same body as page {earlier} {where}, before the end "
                "of the data: a page would be delivered twice. The server's paging is "
                "inconsistent (or its total counts more pages than it has)."
            )
        raise PaginationError(message, page=later, url=shown)

    def _give_up(self, walk: Walk, number: int, error: PageError, attempts: int) -> PageError:
        # tagged: a program that reports failures itself (PageFailed) can leave these out
        logger.warning(
            "page %d failed after %d attempt(s): %s",
            number,
            attempts,
            error,
            extra={"streampage_failure": True},
        )
        error.attempts = attempts
        error.source = walk.source
        walk.run.failed(number)
        return error

    def _status_error(
        self, number: int, resp: Response, retry_after: float | None
    ) -> HTTPStatusError:
        status = resp.status
        shown = redact_url(resp.url)
        excerpt = resp.body[:_BODY_EXCERPT].decode("utf-8", "replace")
        policy = self._control.retry
        hint = ""
        if retry_after is not None and retry_after > policy.max_retry_after:
            hint = (
                f" The server asks to wait {retry_after:.0f} s, more than"
                f" RetryPolicy(max_retry_after={policy.max_retry_after:g}); raise that bound"
                " to wait it out, or try again later."
            )
        elif status in (401, 403):
            hint = self._http.refused_hint() or (
                " Check the credentials (headers=) and that they grant access to this URL."
            )
        elif status == 429:
            hint = (
                " The server throttles: lower concurrency= or set rate=, and give retries"
                " more time (RetryPolicy)."
            )
        elif status == 503:
            hint = (
                " The server is unavailable (an outage, or overload): try again later, or"
                " give retries more time (RetryPolicy)."
            )
        elif status in policy.statuses:
            hint = " The server failed to answer: a transient fault, tried again if retries allow."
        elif 400 <= status < 500 and not self._any_ok:
            hint = (
                " No page has succeeded yet, so this is likely the request itself, not a"
                " transient fault: check the URL, params= and the paginator's parameter names."
            )
        return HTTPStatusError(
            f"page {number}: HTTP {status} {resp.reason} from {shown}; "
            f"body starts with {excerpt!r}.{hint}",
            page=number,
            url=shown,
            status=status,
            body_excerpt=excerpt,
            retry_after=retry_after,
        )

    def _request_error(self, number: int, url: URL, exc: Transient) -> RequestError:
        shown = redact_url(url)
        return RequestError(
            f"page {number}: request to {shown} failed: {exc}", page=number, url=shown
        )


class _Rest(NamedTuple):
    """A page between attempts: how long to wait, and where its retry loop stands."""

    wait: float
    url: URL
    attempt: int
    decode_failures: int
    waited: float


class _Borrowed:
    """The user's own session: used, never closed by the stream."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None

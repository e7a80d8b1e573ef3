"""Records out of pages, and the drain loop of ``.into(sink)``: batches, checkpoints, resume.

Exactly-once rests on one rule: a page's key enters the checkpoint only in the commit that
makes all of its records durable, and a page's records never straddle two commits (batches
close on page boundaries). After a crash, whatever the sink holds is named by its last
checkpoint, and a resumed stream delivers every other page.

A sink may take its records staged (the built-in sinks do), by two methods looked up by
name: ``stage(records)``, called on the event loop with each page's records as the page
arrives, returns them in the form the sink will write (encoded JSON lines, COPY text; it
writes nothing), and ``async commit_staged(name, checkpoint, batches)`` writes batches
(each the list of what ``stage`` returned for its pages) and commits them with the
checkpoint, as ``write`` then ``commit`` would, in one call. A batch then waits for its
commit as bytes rather than as Python objects (which the garbage collector would walk
again and again while the batch fills), the sink's thread or database is reached once a
commit, and the batches that fill while a commit runs wait for it whole and go together
in the next one, as soon as it ends (a group commit: the fetch waits only when GROUPED
batches do). Either way a batch is whole pages of ``batch`` records (a page's more), a
commit holds whole batches and the checkpoint that names exactly their pages, and commits
run one at a time, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec

from ._checkpoint import Checkpoint, Tail, legacy_source_id, source_id
from ._decode import count_records, get_path, has_path, keys_of
from ._errors import ConfigurationError, PaginationError, SinkError, StreamPageError
from ._fingerprint import auto_unchecked, chosen_differs, differences, fingerprint
from ._incremental import Incremental, Pass, check_stored, next_pass
from ._lineage import Mark
from ._page import Page
from ._redact import redact_url
from ._stats import StreamStats
from .events import BatchCommitted

if TYPE_CHECKING:
    from ._stream import Stream
    from .sinks import Sink

Extract = str | Callable[[Any], Any] | None
#: a page of a batch: its source, number, walk, count, records written, digest of its edges
PageRow = tuple[str, int, Any, int | None, int, str | None]
#: a batch: its records (or the chunks a sink staged them as), how many, its pages, and
#: the completion marks of a dependent stream that came with them (see _lineage)
Batch = tuple[list[Any], int, list[PageRow], list[Mark]]
#: what into() does with a target that holds the checkpoint already
Mode = Literal["new", "resume", "replace"]


def as_records(found: Any) -> list[Any]:
    """What a record path found, as a list of records: nothing, a list, or one record."""
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def path_records(path: str) -> Callable[[Any], list[Any]]:
    """Records of a body at a dotted path. The path must exist on the first body it sees when
    that body holds records elsewhere (a null or empty list there is fine): a wrong name
    would otherwise read as "no records" on every page, and a run would commit nothing and
    call itself complete."""
    checked = False

    def records(data: Any) -> list[Any]:
        nonlocal checked
        found = get_path(data, path)
        if not checked:
            checked = True
            # Absent beside other records is a wrong name; absent from a page that holds
            # none (proto3 JSON leaves empty lists out) is an empty page.
            if found is None and not has_path(data, path) and count_records(data):
                raise ConfigurationError(
                    f"records {path!r}: the first page has no field {path!r}; its keys are: "
                    f"{keys_of(data)}. Name the list that holds the records (records(path), "
                    "streampage fetch --records PATH)."
                )
        return as_records(found)

    return records


def extractor(extract: Extract) -> Callable[[Page[Any]], list[Any]]:
    """Records of a page: a dotted path into its data, a function of its data, or (None)
    the data itself as one record."""
    if extract is None:
        return lambda page: [page.data]
    if isinstance(extract, str):
        at_path = path_records(extract)
        return lambda page: at_path(page.data)
    if callable(extract):

        def by_call(page: Page[Any]) -> list[Any]:
            found = extract(page.data)
            return [] if found is None else found if isinstance(found, list) else list(found)

        return by_call
    raise ConfigurationError(f"records({extract!r}): pass a dotted path or a function")


class Records:
    """The records of a stream's pages, as an async iterator, or drained into a sink."""

    def __init__(self, stream: Stream[Any], extract: Extract) -> None:
        self._stream = stream
        self._spec = extract
        self._extract = extractor(extract)

    @property
    def stats(self) -> StreamStats:
        return self._stream.stats

    async def __aenter__(self) -> Records:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._stream.aclose()

    def then(
        self,
        children: Callable[[Any], Any],
        *,
        pages: Any = None,
        params: Mapping[str, str | int | float] | None = None,
        decode: Any = None,
        cross_origin: bool = False,
    ) -> Stream[Any]:
        """The stream of the children of these records: ``children(record)`` returns a
        child source (a URL, a ``(url, params)`` pair or ``streampage.Source``, whose
        ``key`` tells its pages apart), a list of them, or None. Each child is paginated
        with ``pages`` (default: pages=auto), its query merged with ``params`` and its
        pages decoded as ``decode`` says; parent and children are fetched by one pool,
        under this stream's concurrency, rate, retries, headers and auth, the children
        of a parent page as soon as it arrives. Parent pages are not delivered.
        A child URL comes from the API's data: one on another origin than its parent is
        an error, unless ``cross_origin=True``, which fetches it without the stream's
        credentials. ``validate=`` sees parent pages too; ``max_pages`` caps the parents.

        Drained by ``.into()``, its checkpoint covers both: a resume fetches no parent
        page whose children are all committed, and starts no child already committed."""
        return self._stream._children(
            children,
            self._extract,
            self._spec,
            pages=pages,
            params=params,
            decode=decode,
            cross_origin=cross_origin,
        )

    async def __aiter__(self) -> AsyncIterator[Any]:
        extract = self._extract
        stats = self._stream.stats
        async for page in self._stream:
            records = extract(page)
            stats.records += len(records)
            for record in records:
                yield record

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
        """Drain the stream into ``sink`` in batches of about ``batch`` records, each batch
        committed with the checkpoint ``checkpoint`` (a name scoped to the sink's target).
        A batch commits while the next one fills; with a built-in sink, the batches that
        fill while a commit still runs are committed together as soon as it ends (up to
        8 of them wait; then the fetch does), so that a slow commit does not stall it.

        ``mode``: ``"new"`` (the default) refuses a target that holds this checkpoint;
        ``"resume"`` (or ``resume=True``) goes on from it: committed pages are not fetched
        or delivered again, and a resume of a finished run only looks for new pages;
        ``"replace"`` starts the target over (the old records go when the first batch is
        committed, or when the new output is complete). Returns the stream's stats.

        ``incremental=Incremental(field, param)``: fetch only what is new since the last
        run, by the highest value of ``field`` among the committed records, kept in the
        checkpoint and sent as the query parameter ``param`` (see streampage.Incremental).
        Its runs go on from the checkpoint unless ``mode`` says otherwise (``"replace"``:
        everything again, from ``Incremental.start``)."""
        if resume and mode not in (None, "resume"):
            raise ConfigurationError(f"into(resume=True, mode={mode!r}): pass one or the other")
        if incremental is not None and not isinstance(incremental, Incremental):
            raise ConfigurationError(
                f"into(incremental={incremental!r}): pass streampage.Incremental(field, param)"
            )
        again = resume or incremental is not None  # a nightly job runs the same call again
        chosen: Mode = mode or ("resume" if again else "new")
        if chosen not in ("new", "resume", "replace"):
            raise ConfigurationError(f"into(mode={mode!r}): pass 'new', 'resume' or 'replace'")
        source = fingerprint(self._stream._sources, self._spec)  # before a since value is sent
        if incremental is not None:
            source["incremental"] = incremental.field
        return await drain(
            self._stream,
            self._extract,
            sink,
            batch,
            checkpoint,
            chosen,
            source,
            incremental,
        )


async def drain(
    stream: Stream[Any],
    extract: Callable[[Page[Any]], list[Any]],
    sink: Sink,
    batch: int,
    name: str,
    mode: Mode,
    source: dict[str, str],
    incremental: Incremental | None = None,
) -> StreamStats:
    if batch < 1:
        raise ConfigurationError(f"into(batch={batch}) must be at least 1")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"into(checkpoint={name!r}): name the checkpoint (every commit carries one)"
        )
    stats = stream.stats
    progress = Checkpoint(fingerprint=source)
    earlier_source: dict[str, str] | None = None
    committing: asyncio.Task[None] | None = None
    keep_newest = getattr(sink, "keep_newest", None)
    if incremental is not None and keep_newest is not None:
        # pages arrive in any order: an upsert keeps the newest version by the field, not
        # the one committed last (a sink with primary_key; its own version= comes first)
        keep_newest(incremental.field)
    try:
        stored = await _sinking(sink, "open", _to_the_end(sink.open(name)), 0)
        if mode == "replace":
            replace = getattr(sink, "replace", None)
            if replace is None:
                raise ConfigurationError(f"{sink!r} cannot be replaced: it has no replace()")
            await _sinking(sink, "replace", _to_the_end(replace(name)), 0)
        elif stored is not None:
            earlier = Checkpoint.from_json(stored)
            _check_resume(sink, name, mode, earlier, source, stream._sources.single is None)
            if incremental is not None or earlier.incremental is not None:
                check_stored(sink, name, incremental, earlier)
                assert incremental is not None
                earlier = next_pass(earlier, incremental)  # a new pass after a finished one
                stored = earlier.to_json()
            earlier_source = earlier.fingerprint
            progress = Checkpoint.from_json(stored)
            progress.fingerprint, progress.finished = dict(source), False
            if source.get("pages") == "Auto()" and earlier_source and "chose" in earlier_source:
                progress.fingerprint["chose"] = earlier_source["chose"]  # until Auto chooses
            stats.resumed_pages = len(earlier)
            earlier.held(stats)
            stats.resumed_finished = earlier.finished
            for held in (earlier, progress):
                _adopt_legacy(held, stream)
                if earlier.finished:
                    held.reopen_tails()
            stream._sources.resume_from(earlier)
        # an incremental run's pass: what it sends, what it leaves out (before the start)
        tracker = None if incremental is None else Pass(incremental, progress, stream)
        # Records wait for their commit in the sink's own form when the sink can stage
        # them (stage(): the built-in sinks encode a page's records as it arrives), so
        # that none of them outlives its page as Python objects: a batch of live records
        # is what the garbage collector would otherwise walk, again and again, while the
        # batch fills. Other sinks get them as they are, in write().
        stage = getattr(sink, "stage", None)
        commit_staged = getattr(sink, "commit_staged", None)
        if stage is None or commit_staged is None:
            stage = commit_staged = None
        batched: list[Any] = []  # the records of the batch, or its chunks (staged)
        count = 0  # records in the batch
        pages: list[PageRow] = []
        # A dependent stream's marks (a child ended, a parent page done) are added by the
        # engine once the pages they speak of were taken, and a batch takes those there are
        # when it closes: each is committed with its pages or after them, never before.
        # Before a batch closes, the checks of children whose last page it holds run (one
        # turn of the loop), so that their marks go with it: a kill between the two commits
        # would make a resume check those children again.
        dependent = stream._sources.parents is not None
        stream._keep_marks = dependent
        stream._flush_every = max(1, min(batch, 1000))
        # the last page of each source in the batch, for the digest of its edges (Tail):
        # only a source's highest committed page keeps one, so only it needs one
        last: dict[str, tuple[int, int, list[Any]]] = {}
        # Full batches not handed to the sink yet: a sink that stages takes every batch
        # that filled while its previous commit ran in its next one (a group commit), when
        # that ends; the fetch goes on meanwhile, and waits only when GROUPED batches do.
        # Each batch is still whole pages of ``batch`` records (a page's more).
        waiting: list[Batch] = []
        ending = False  # from here on, the last commit takes what is left
        keys: dict[int, tuple[Any, str]] = {}  # source_id by source object: a hash a page
        id_of = stream._sources.id_of

        def source_key(src: Any) -> str:
            known = keys.get(id(src))
            if known is not None and known[0] is src:
                return known[1]
            if len(keys) >= 4096:
                keys.clear()
            key = id_of(src)
            keys[id(src)] = (src, key)  # kept, so that its id names no other object
            return key

        def flush() -> None:
            # Marks and no records (parents without children, children without records):
            # committed when enough wait, between two pages, when no commit runs.
            if ending or (committing is not None and not committing.done()):
                return  # they go with the next batch
            if committing is not None and (committing.cancelled() or committing.exception()):
                return  # the failure is raised by the next settle()
            close_batch()
            start()

        stream._on_flush = flush

        def close_batch() -> None:
            nonlocal batched, count, pages
            for number, at, found in last.values():
                key, _, walked, counted, written, _ = pages[at]
                pages[at] = (key, number, walked, counted, written, edges(found))
            last.clear()
            if tracker is not None:
                tracker.close_batch()
            marks = stream._marks  # the engine's own list: emptied, never replaced
            waiting.append((batched, count, pages, marks[:]))
            marks.clear()
            batched, count, pages = [], 0, []

        async def commit(group: list[Batch]) -> None:
            durable = len(progress)
            if commit_staged is None:
                for records, _, _, _ in group:  # one batch: a sink that does not stage
                    if records:
                        await _sinking(sink, "write", sink.write(records), durable)
            for _, _, rows, done in group:
                for key, number, walked, counted, written, whole in rows:
                    progress.commit(key, number, walked, counted, written, whole)
                for mark in done:
                    mark.apply(progress)
            records_in = sum(n for _, n, _, _ in group)
            pages_in = sum(len(rows) for _, _, rows, _ in group)
            progress.written += records_in
            if tracker is not None:
                tracker.committed(len(group))  # its highest value, in the same commit
            if commit_staged is not None:
                call = commit_staged(name, progress.to_json(), [b for b, _, _, _ in group])
            else:
                call = sink.commit(name, progress.to_json())
            await _sinking(sink, "commit", call, durable)
            stats.committed_pages += pages_in
            progress.held(stats)
            emit = stream._emit
            if emit is not None:
                emit(BatchCommitted(pages_in, records_in, name, len(progress)))

        def start() -> None:
            # Commits run one at a time and in order (start() only runs when none does),
            # so the checkpoint only ever names pages whose records are durable.
            nonlocal committing
            group = waiting[:]
            waiting.clear()
            committing = asyncio.ensure_future(commit(group))
            if commit_staged is not None:
                committing.add_done_callback(freed)

        def freed(task: asyncio.Future[None]) -> None:
            # The sink is free: the batches that filled meanwhile commit now, not when the
            # next one fills (the stream may wait a long time for its next page).
            ok = not task.cancelled() and task.exception() is None
            if task is committing and waiting and not ending and ok:
                start()

        async def settle() -> None:
            # Wait for the commit running (and those it started on its way): its failure
            # is raised here.
            while committing is not None:
                current = committing
                await current
                if committing is current:
                    return

        async with stream:
            reopened = progress.reopened
            sources = stream._sources
            unchosen = source.get("pages") == "Auto()" and sources.single is not None
            async for page in stream:
                if unchosen and sources.chosen is not None:
                    unchosen = False  # pages=auto has chosen: the same numbering as before?
                    _check_choice(sink, name, earlier_source, sources.chosen)
                    progress.fingerprint = {**source, "chose": sources.chosen}
                found = extract(page)
                key = source_key(page.source)
                number = page.number
                whole = found  # the page's records, before a reopened tail is sliced
                if reopened:
                    tail = reopened.get(key)
                    if tail is not None and tail.number == number:
                        found = new_in_tail(tail, found, page)
                if tracker is not None:
                    found = tracker.keep(found, page)
                n = len(found)
                stats.records += n
                if n:
                    if stage is None:
                        batched.extend(found)
                    else:
                        try:
                            batched.append(stage(found))
                        except StreamPageError:
                            raise
                        except Exception as exc:  # as a failed write(): nothing committed
                            raise _sink_error(sink, "write", exc, len(progress)) from exc
                    count += n
                seen = last.get(key)
                if seen is None or number >= seen[0]:
                    last[key] = (number, len(pages), whole)
                pages.append((key, number, stream._walked, stream._counted, n, None))
                if count >= batch or len(pages) >= batch:
                    # A batch commits while the next one fills: a sink's fsync or
                    # transaction does not stall the fetch. (Pages without records close
                    # one too: the checkpoint keeps up, and the batch holds no more rows.)
                    if dependent:
                        await asyncio.sleep(0)  # (see stream._keep_marks above)
                    close_batch()
                    if committing is None or committing.done():
                        await settle()  # a failed commit stops the run here
                        start()
                    elif commit_staged is None or len(waiting) >= GROUPED:
                        await asyncio.wait([committing])  # freed() takes the batches
                        if waiting:
                            await settle()
                            start()
            # Every page was delivered (a failure under on_error="skip" leaves the run
            # unfinished: a resume fetches the failed pages). The last commit says so, and
            # only the last: the one before it must be durable first.
            if unchosen and sources.chosen is not None:
                # nothing delivered: what Auto chose is checked now (it chose nothing only
                # when page 1 failed, which the run reports: then nothing is finished)
                _check_choice(sink, name, earlier_source, sources.chosen)
                progress.fingerprint = {**source, "chose": sources.chosen}
            ending = True
            await settle()
            progress.finished = not stream.failures
            if tracker is not None and stream.completeness.bounded:
                # a pass cut short on purpose (max_pages, stop=) is not over: the next run
                # goes on with it, from the same value, and fetches the rest
                progress.finished = False
                tracker.bounded()
            close_batch()
            start()
            await settle()
            finish = getattr(sink, "finish", None)
            if progress.finished and finish is not None:
                await _sinking(sink, "finish", _to_the_end(finish(name)), len(progress))
    finally:
        ending = True
        if committing is not None:
            # Leaving early (an error, a cancellation): the batch being committed holds
            # whole pages, so it is let finish rather than thrown away, and so are the full
            # batches that waited for it. A failure gives way to the error already on its
            # way out (and a commit that failed is followed by none).
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await settle()
                if waiting:
                    start()
                    await settle()
        await _close(sink, len(progress))
    return stats


async def _to_the_end(call: Any) -> Any:
    """Await a sink call to its end, even when this task is cancelled meanwhile (Ctrl-C, a
    sharded job's stop): a file sink opens in a thread, which a cancellation does not stop,
    and a close that ran before the open ended would leave its lock and journal open."""
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # its own failure gives way to the cancellation
            await task
        raise


async def _close(sink: Sink, durable: int) -> None:
    """Close the sink; its failure is a SinkError, unless an error is on its way out
    already: then it is a note on that one, which says what went wrong first."""
    leaving = sys.exc_info()[1]
    try:
        # Shielded: a run cancelled (Ctrl-C, a sharded job's stop) while its sink opened
        # must still let go of the sink's lock and files; anyio would otherwise cancel the
        # close at once.
        with anyio.CancelScope(shield=True):
            await _sinking(sink, "close", sink.close(), durable)
    except SinkError as exc:
        if leaving is None:
            raise
        leaving.add_note(str(exc))


def _check_choice(sink: Sink, name: str, stored: dict[str, str] | None, chosen: str) -> None:
    """Resumed with pages=auto: Auto's choice must number pages as the earlier run did, or
    the committed page numbers would name other pages. Checked before anything of this
    run is committed."""
    changed = None if stored is None else chosen_differs(stored, chosen)
    if changed:
        raise ConfigurationError(
            f"{sink!r} holds checkpoint {name!r} of another source: {changed}. Name the "
            "paginator the earlier run used (pages=...), or start the target over with "
            "mode='replace' (--replace)"
        )


def edges(records: list[Any]) -> str | None:
    """A digest of a page's first and last records: enough to tell, when the page is
    fetched again, whether it still starts with what was written of it."""
    if not records:
        return None
    try:
        ends = encode(records[0]) + b"\n" + encode(records[-1])
    except (TypeError, msgspec.EncodeError):
        return None
    return hashlib.blake2b(ends, digest_size=8).hexdigest()


def new_in_tail(tail: Tail, found: list[Any], page: Page[Any]) -> list[Any]:
    """The records of a finished run's last page that it did not write: those after the
    ones it did, if the page still starts with them. Records inserted before them, or
    removed, cannot be told apart by position: that is an error, not a guess."""
    if tail.edges is not None and (
        len(found) < tail.written or edges(found[: tail.written]) != tail.edges
    ):
        shown = redact_url(page.response.url)
        raise PaginationError(
            f"page {page.number} ({shown}), the last page of the finished run, no longer "
            f"starts with the {tail.written} records written of it (records were inserted "
            "before them, reordered or removed), so the new ones cannot be told apart. "
            "Start the target over with mode='replace' (streampage fetch --replace)",
            page=page.number,
            url=shown,
        )
    return found[tail.written :]


encode = msgspec.json.Encoder().encode

#: full batches that may wait for a sink that stages while its previous commit runs, to be
#: committed together in its next one (see drain); the fetch waits when this many do
GROUPED = 8


def _adopt_legacy(checkpoint: Checkpoint, stream: Stream[Any]) -> None:
    """A version 1 checkpoint names a single source as version 1 did: rename it."""
    single = stream._sources.single
    if checkpoint.legacy and single is not None:
        command = stream._sources.url(single)
        checkpoint.adopt_legacy(legacy_source_id(single), source_id(single), command)


def _check_resume(
    sink: Sink,
    name: str,
    mode: Mode,
    earlier: Checkpoint,
    source: dict[str, str],
    many: bool = False,
) -> None:
    """A stored checkpoint is gone on from only when asked to, and only for its own source."""
    if mode != "resume":
        state = "a finished run" if earlier.finished else "an earlier run"
        raise ConfigurationError(
            f"{sink!r} holds checkpoint {name!r} from {state} ({len(earlier):,} pages): "
            "pass mode='resume' (streampage fetch --resume) to go on from it, "
            "mode='replace' (--replace) to start the target over, or write to a new target"
        )
    if earlier.fingerprint is None:
        return  # written before checkpoints had fingerprints
    changed = differences(earlier.fingerprint, source)
    unchecked = auto_unchecked(earlier.fingerprint, source, many)
    if unchecked:
        changed.append(unchecked)
    if changed:
        raise ConfigurationError(
            f"{sink!r} holds checkpoint {name!r} of another source: {'; '.join(changed)}. "
            "Resume with the same source, start the target over with mode='replace' "
            "(--replace), or write to a new target"
        )


async def _sinking(sink: Sink, step: str, call: Any, durable: int) -> Any:
    """Await a sink call, turning its failure into a SinkError that says what to do."""
    try:
        return await call
    except StreamPageError:
        raise
    except Exception as exc:
        raise _sink_error(sink, step, exc, durable) from exc


def _sink_error(sink: Sink, step: str, exc: Exception, durable: int) -> SinkError:
    """The error for a sink's failure to ``step``: what failed, and what to do."""
    notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))
    return SinkError(
        f"{sink!r} failed to {step}: {type(exc).__name__}: {exc}{notes}. {durable} pages "
        "are committed; fix the cause and run again with resume=True (streampage fetch "
        "--resume): committed pages are not fetched again."
    )

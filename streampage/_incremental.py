"""Incremental runs: only what changed since the last run, by a value carried from run to run.

``into(sink, checkpoint=..., incremental=Incremental(field="updated_at",
param="updated_since"))`` keeps, in the checkpoint and so in the same transaction as the
rows, the highest value of ``field`` among the committed records. A run is a *pass*: it
fetches from one value of the field on, ``since``, sent as the query parameter ``param``.
When the stored checkpoint's pass had finished, the next run begins a new pass from the
highest value committed so far (the pages of the last pass are forgotten: the query from
another value is another page space); when it was cut short, the run goes on with the same
pass and the same ``since``, as any resume does, so that its page numbers still name the
same pages.

Values are compared as JSON values: numbers as numbers, strings as strings (ISO 8601
timestamps written in one format and one time zone sort as the times they name). A record
without the field, with null there, or with a value of another kind than the pass's is an
error naming the page and the field, and the record's keys (never its values).

What a pass writes:

- records whose value is below ``since`` are left out here. A server that honours the
  parameter sends none; one that sent some while the parameter was sent ignores it, and
  the run says so once (then every pass fetches every page, and the filter is here).
  ``param=None`` says the API has no such parameter: every page is fetched every pass and
  the filter is here, which the run also says;
- records whose value is ``since`` itself (a server's ``updated_since`` is usually
  inclusive) are written again unless they are unchanged: a digest of each committed record
  whose value is the highest is kept (``BOUNDARY`` of them at most), and a record of the
  next pass that has that value and one of those digests is left out. An append-only sink
  (a JSON Lines file) so holds a record once for each version of it, never the same
  version twice. Past ``BOUNDARY`` records of one value, the ones not kept are written
  again (with a primary key they are upserted; appended, they are there twice): the run
  warns, and ``stats.incremental_unchecked`` counts them;
- every other record.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from ._checkpoint import Checkpoint, IncrementalState
from ._decode import get_path, has_path, keys_of
from ._errors import ConfigurationError, DecodeError
from ._redact import redact_url

if TYPE_CHECKING:
    from ._page import Page
    from ._stats import StreamStats
    from ._stream import Stream

__all__ = ["BOUNDARY", "Incremental"]

logger = logging.getLogger("streampage")

#: digests of records of one value kept (boundary records): a checkpoint is written with
#: every commit, and this many cost it about 19 kB
BOUNDARY = 1000

Value = str | int | float


@dataclass(frozen=True)
class Incremental:
    """An incremental run: into() fetches only the records whose ``field`` (a dotted path
    into each record, ``"updated_at"``, ``"meta.id"``) is at least the highest value the
    records committed by earlier runs had, and keeps that value in its checkpoint.

    ``param``: the query parameter the API takes that value in (``"updated_since"``), sent
    with every request; None when it has none: then every page is fetched and the records
    are filtered here (the run says so). ``start``: the value the first run fetches from
    (None: everything); later runs go on from their checkpoint."""

    field: str
    param: str | None = None
    start: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not self.field or "" in self.field.split("."):
            raise ConfigurationError(
                f"Incremental(field={self.field!r}) must name a field of the records, a "
                "dotted path like 'updated_at' or 'meta.updated_at'"
            )
        if self.param is not None and (not isinstance(self.param, str) or not self.param):
            raise ConfigurationError(
                f"Incremental(param={self.param!r}) must name a query parameter (leave it "
                "out when the API has none)"
            )
        if self.start is not None and _kind(self.start) is None:
            raise ConfigurationError(
                f"Incremental(start={self.start!r}) must be a string or a number, like the "
                "values of the field"
            )


def _kind(value: Any) -> type | None:
    """``str`` or ``float`` (any number): what a value is compared as; None: neither."""
    if isinstance(value, str):
        return str
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float
    return None


_KINDS = {str: "strings", float: "numbers"}

_encode = msgspec.json.Encoder(order="sorted").encode


def digest(record: Any) -> str:
    """A record's digest: its JSON with keys sorted (a server that reorders them still
    sends the same record)."""
    try:
        text = _encode(record)
    except (TypeError, msgspec.EncodeError):
        text = repr(record).encode()
    return hashlib.blake2b(text, digest_size=8).hexdigest()


def _top(
    high: Any, digests: list[str], over: bool, value: Any, more: list[str], more_over: bool
) -> tuple[Any, list[str], bool]:
    """The highest value of two sets of records, with the digests of its records (at most
    BOUNDARY: ``over`` says there were more)."""
    if value is None:
        return high, digests, over
    if high is None or value > high:
        high, digests, over = value, [], more_over
    elif value == high:
        over = over or more_over
    else:
        return high, digests, over
    merged = list(dict.fromkeys([*digests, *more]))
    if len(merged) > BOUNDARY:
        merged, over = merged[:BOUNDARY], True
    return high, merged, over


def check_stored(
    sink: Any, name: str, incremental: Incremental | None, earlier: Checkpoint
) -> None:
    """A stored checkpoint is gone on from incrementally only when it was written so, on
    the same field, and an unfinished pass only with the parameter it sent."""
    state = earlier.incremental
    if incremental is None:
        if state is None:
            return
        said = f"--incremental {state.field}" + (
            f" --since-param {state.param}" if state.param is not None else ""
        )
        raise ConfigurationError(
            f"{sink!r} holds checkpoint {name!r} of incremental runs on {state.field!r}: go "
            f"on with them with {_call(state.field, state.param)} (streampage fetch "
            f"{said}), or start the target over with mode='replace' (--replace)"
        )
    if state is None:
        raise ConfigurationError(
            f"{sink!r} holds checkpoint {name!r} of a run that was not incremental: the "
            f"highest {incremental.field!r} of its records is unknown, so nothing tells what "
            "is new. Start the target over with mode='replace' (--replace), or write to a "
            "new target"
        )
    if state.field != incremental.field:
        raise ConfigurationError(
            f"{sink!r} holds checkpoint {name!r} of incremental runs on {state.field!r}, "
            f"not {incremental.field!r}. Start the target over with mode='replace' "
            "(--replace), or write to a new target"
        )
    if not earlier.finished and state.since is not None and state.param != incremental.param:
        was = "in no parameter" if state.param is None else f"as the parameter {state.param!r}"
        now = "in none" if incremental.param is None else f"as {incremental.param!r}"
        said = f"--incremental {state.field}" + (
            f" --since-param {state.param}" if state.param is not None else ""
        )
        raise ConfigurationError(
            f"{sink!r} holds checkpoint {name!r} of an incremental run cut short, which sent "
            f"its since value {was}, and this run {now}; its committed pages are pages of "
            f"that query. End it with {_call(state.field, state.param)} (streampage fetch "
            f"{said}), or start the target over with mode='replace' (--replace)"
        )


def _call(field: str, param: str | None) -> str:
    return f"Incremental(field={field!r}" + (f", param={param!r})" if param else ")")


def next_pass(earlier: Checkpoint, incremental: Incremental) -> Checkpoint:
    """The checkpoint a run goes on from: after a finished pass, a new one from the highest
    value committed (the last pass's pages forgotten, what was written still counted);
    after one cut short, the same pass."""
    state = earlier.incremental
    assert state is not None  # check_stored
    if earlier.finished:
        earlier.forget_pages()
        earlier.finished = False
        if earlier.fingerprint is not None:
            # what pages=auto chose numbered the last pass's pages, which are forgotten
            earlier.fingerprint.pop("chose", None)
        if state.high is not None:
            state.since = state.high
        state.seen, state.seen_over = list(state.boundary), state.boundary_over
        state.passes += 1
    state.param = incremental.param
    return earlier


class Pass:
    """One pass of an incremental run, in into()'s drain: the records of each page that are
    new (keep), and the highest value among those of each batch, merged into the
    checkpoint when the batch commits (batches commit in the order they close)."""

    def __init__(self, incremental: Incremental, progress: Checkpoint, stream: Stream[Any]):
        state = progress.incremental
        if state is None:  # the first run, or a replace
            state = progress.incremental = IncrementalState(
                incremental.field, incremental.param, since=incremental.start
            )
        self.state = state
        self.field = incremental.field
        self.param = incremental.param
        self._since = state.since
        self._seen = frozenset(state.seen)
        self._kind = _kind(state.since if state.since is not None else state.high)
        #: the highest value of the batch filling, its records' digests, and whether there
        #: were more than those; then of each closed batch, until it commits
        self._high: Any = None
        self._digests: list[str] = []
        self._over = False
        self._closed: deque[tuple[Any, list[str], bool]] = deque()
        self._values = 0  # records whose value was read, this run
        self._aware: bool | None = None  # decoded datetimes: with a time zone or without
        self._warned_ignored = False
        self._warned_over = False
        self._stats: StreamStats = stream.stats
        stats = self._stats
        stats.incremental_since = state.since
        stats.incremental_high = state.high
        stats.incremental_client_side = incremental.param is None
        since = state.since
        sources = stream._sources
        if incremental.param is not None:
            self._check_param(stream)
        if since is None:
            return
        if incremental.param is None:
            logger.info(
                "incremental: no parameter sends the server the value of %r to fetch from "
                "(param=, --since-param): every page is fetched, and records before %r are "
                "left out here",
                self.field,
                since,
                extra={"streampage_decision": True},
            )
            return
        sources.send({incremental.param: since})

    def _check_param(self, stream: Stream[Any]) -> None:
        """The parameter is the pass's own: params= or the URL giving it too is an error."""
        sources, param = stream._sources, self.param
        given = param in sources.params
        if sources.single is not None:
            given = given or param in sources.url(sources.single).query
        if given:
            raise ConfigurationError(
                f"the query parameter {param!r} is given (params= or the URL) and "
                f"{_call(self.field, param)} (streampage fetch --incremental {self.field} "
                f"--since-param {param}) sends it too: give it one way"
            )
        sources.reserve([param] if param is not None else [])

    def keep(self, found: list[Any], page: Page[Any]) -> list[Any]:
        """The records of a page that are new: ``field`` from ``since`` on, and not the
        unchanged records at ``since`` an earlier pass committed."""
        if not found:
            return found
        since, seen = self._since, self._seen
        kept: list[Any] = []
        values: list[Any] = []
        high: Any = None
        older = unchanged = unchecked = 0
        for record in found:
            value = self._value(record, page)
            if since is not None and value <= since:
                if value < since:
                    older += 1
                    continue
                if seen and digest(record) in seen:
                    unchanged += 1
                    continue
                if self.state.seen_over:
                    unchecked += 1
            kept.append(record)
            values.append(value)
            if high is None or value > high:
                high = value
        stats = self._stats
        stats.incremental_skipped += older + unchanged
        if older and self.param is not None:
            self._ignored(page)
        if unchecked:
            stats.incremental_unchecked += unchecked
            self._too_many()
        if kept:
            at = [r for r, v in zip(kept, values, strict=True) if v == high]
            digests = [digest(r) for r in at[: BOUNDARY + 1]]
            self._high, self._digests, self._over = _top(
                self._high, self._digests, self._over, high, digests, len(at) > BOUNDARY
            )
        return kept

    def close_batch(self) -> None:
        """The batch filling is closed: what it holds waits for its commit."""
        self._closed.append((self._high, self._digests, self._over))
        self._high, self._digests, self._over = None, [], False

    def committed(self, batches: int) -> None:
        """The first ``batches`` closed batches are in the commit being made: their highest
        values go into the checkpoint it writes."""
        state = self.state
        for _ in range(batches):
            high, digests, over = self._closed.popleft()
            state.high, state.boundary, state.boundary_over = _top(
                state.high, state.boundary, state.boundary_over, high, digests, over
            )
        self._stats.incremental_high = state.high

    def _value(self, record: Any, page: Page[Any]) -> Any:
        value = get_path(record, self.field)
        kind = _kind(value)
        if kind is None and isinstance(value, datetime.date | datetime.time):
            value = self._timestamp(value, record, page)  # decode= a type with datetimes
            kind = str
        if kind is None:
            if value is None:
                what = "is null" if has_path(record, self.field) else "is missing"
            else:
                what = f"is {type(value).__name__}, neither a string nor a number"
            self._fail(page, record, what)
        elif self._kind is None:
            self._kind = kind
        elif kind is not self._kind:
            if self.state.high is None and self._since is not None:  # only start= to go by
                raise ConfigurationError(
                    f"page {page.number} ({redact_url(page.response.url)}): the incremental "
                    f"field {self.field!r} holds {_KINDS[kind]}, and Incremental(start=...) "
                    f"is one of {_KINDS[self._kind]}: give start a value of the field's kind"
                )
            what = (
                f"holds {_KINDS[kind]}, where the values it is compared with are "
                f"{_KINDS[self._kind]}"
            )
            self._fail(page, record, what)
        self._values += 1
        return value

    def _timestamp(self, value: datetime.date | datetime.time, record: Any, page: Page[Any]) -> str:
        """A decoded date, time or datetime as text of one width, so that text order is
        time order: an aware datetime in UTC with microseconds and ``Z``, a naive one
        with microseconds, a date as YYYY-MM-DD. (msgspec writes a zero fraction out,
        and ``09:30:00Z`` sorts after ``09:30:00.500000Z``.) Naive beside aware values
        cannot be ordered: an error."""
        if isinstance(value, datetime.datetime):
            aware = value.tzinfo is not None and value.utcoffset() is not None
            if self._aware is None:
                self._aware = aware
            elif aware != self._aware:
                self._fail(page, record, "mixes a time zone with none: they cannot be ordered")
            if aware:
                utc = value.astimezone(datetime.UTC).replace(tzinfo=None)
                return utc.isoformat(timespec="microseconds") + "Z"
            return value.isoformat(timespec="microseconds")
        if isinstance(value, datetime.time):
            return value.isoformat(timespec="microseconds")
        return value.isoformat()

    def _fail(self, page: Page[Any], record: Any, what: str) -> NoReturn:
        shown = redact_url(page.response.url)
        text = (
            f"page {page.number} ({shown}): the incremental field {self.field!r} of a record "
            f"{what}; the record's keys are: {keys_of(record)}"
        )
        if not self._values and self.state.high is None:  # none had it: a wrong name?
            raise ConfigurationError(
                f"{text}. Name the field that says when a record changed with "
                "Incremental(field=...)"
            )
        raise DecodeError(
            f"{text}. Nothing of page {page.number} is written; every record needs a value "
            "there to be fetched incrementally",
            page=page.number,
            url=shown,
            path=self.field,
        )

    def _ignored(self, page: Page[Any]) -> None:
        self._stats.incremental_client_side = True
        if self._warned_ignored:
            return
        self._warned_ignored = True
        logger.warning(
            "incremental: the server ignores the parameter %r (or does not filter by it as "
            "sent): page %d (%s) holds records whose %r is before the value sent; they are "
            "left out here, after being fetched",
            self.param,
            page.number,
            redact_url(page.response.url),
            self.field,
            extra={"streampage_decision": True},
        )

    def bounded(self) -> None:
        """The run was cut short on purpose (max_pages, stop=): the pass is not over. Its
        highest value would pass over the records it did not fetch (an API that lists the
        newest first), so the next run goes on with this pass, from the same value."""
        logger.warning(
            "incremental: the run was bounded (max_pages, stop=), so this pass is not over: "
            "the next run goes on with it from %r and fetches the rest",
            self._since,
            extra={"streampage_decision": True},
        )

    def _too_many(self) -> None:
        if self._warned_over:
            return
        self._warned_over = True
        logger.warning(
            "incremental: more than %d records committed by the last pass have %r = %r, "
            "more than the checkpoint keeps digests of: those with that value it cannot "
            "tell from the ones written then are written again (a sink with a primary key "
            "upserts them; a file holds them twice)",
            BOUNDARY,
            self.field,
            self._since,
            extra={"streampage_decision": True},
        )

"""The Sink protocol: where ``stream(...).into(sink)`` puts records."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any, Protocol, runtime_checkable

import msgspec

from .._decode import keys_of
from .._errors import ConfigurationError

__all__ = ["Configured", "Sink", "check_keys", "key_fields", "missing_extra"]


@runtime_checkable
class Sink(Protocol):
    """A target for records, with a checkpoint committed atomically with them.

    The stream calls ``open(name)`` once (it returns the checkpoint last committed under
    ``name``, or None), then ``write(records)`` and ``commit(name, checkpoint)`` in turns, and
    ``close()`` at the end, also after a failure. ``commit`` must make every record written
    since the previous commit durable *together with* the checkpoint: in one transaction, or
    a journal entry written after the data. Whatever was written and not committed when the
    process dies is discarded by the next ``open``. That is the whole of exactly-once.
    See ``examples/custom_sink.py``.

    One writer per checkpoint: ``open`` takes a lock on the checkpoint ``name`` of this
    target, held until ``close`` and released by the system if the process dies (an
    advisory lock, a file lock), and raises ``CheckpointInUseError`` when another run holds
    it. Checkpoint names are scoped to the target (a table, a file, a folder): the same name
    on two tables is two checkpoints.

    Two optional methods, looked up by name:

    ``async replace(name)``
        Called after ``open`` and before any ``write`` when the run starts the target over
        (``into(mode="replace")``): the old records and checkpoints go away in the same
        transaction as the first commit, or (no transactions) the old output is kept until
        ``finish``. A sink without it cannot be replaced (a ConfigurationError says so).
    ``async finish(name)``
        Called after the last ``commit`` of a run that delivered every page: a file target
        is made whole (merged, renamed into place). Not called after a failure.

    And one optional pair, for speed (the built-in sinks have it): ``stage(records)``,
    called on the event loop with each page's records as the page arrives, returns them
    in the sink's own form (encoded lines, rows) without writing anything; then
    ``async commit_staged(name, checkpoint, batches)`` writes the staged batches and
    commits them with the checkpoint at once, with the guarantee of ``commit``. A sink
    with both is never called with ``write``/``commit``.
    """

    async def open(self, name: str) -> bytes | None: ...

    async def write(self, records: Sequence[Any]) -> None: ...

    async def commit(self, name: str, checkpoint: bytes) -> None: ...

    async def close(self) -> None: ...


def missing_extra(module: str, extra: str) -> ConfigurationError:
    """The error for an optional dependency that is not installed, naming the pip command."""
    return ConfigurationError(
        f"this sink needs {module}, which is not installed: pip install 'streampage[{extra}]'"
    )


def key_fields(primary_key: str | Sequence[str] | None, sink: str) -> tuple[str, ...]:
    """A sink's ``primary_key=`` as the names of its fields (none: records are appended).
    A name is a top-level key of each record; several make a composite key."""
    if primary_key is None:
        return ()
    names = (primary_key,) if isinstance(primary_key, str) else tuple(primary_key)
    if (
        not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) < len(names)
    ):
        raise ConfigurationError(
            f"{sink} primary_key={primary_key!r}: name a field of the records (a str), or "
            "the fields of a composite key (a tuple of str, each once)"
        )
    return names


@functools.lru_cache(maxsize=64)
def _attributes(struct: type[msgspec.Struct]) -> dict[str, str]:
    """A Struct type's attribute names by their encoded names (a record's keys)."""
    return {f.encode_name: f.name for f in msgspec.structs.fields(struct)}


_dict_get = dict.get


def check_keys(records: Sequence[Any], fields: tuple[str, ...]) -> None:
    """Raise ValueError for the first of ``records`` (dicts or Structs) that lacks one of the
    key ``fields``, or holds null in it: an upsert needs every record's key. The message
    names the field and the record's keys, never its values (they may be secrets)."""
    if len(fields) == 1:
        # The common case at C speed (the loop below costs ~1 µs a page of 14 records, a
        # few % of an upsert's client CPU): one key, and every record a dict holding a
        # value there. Anything else (a missing key, a null, a record that is not a dict:
        # TypeError) goes on to the loop, which says which record and why.
        try:
            values = list(map(_dict_get, records, repeat(fields[0])))
            # identity first: a value equal to None goes on too, and one whose comparison
            # with None raises (an array, pd.NA) is for the loop to judge
            if None not in values:
                return
        except Exception:  # TypeError: a record that is not a dict
            pass
    for at, record in enumerate(records):
        if type(record) is dict:  # the common case: a dict lookup a field
            for f in fields:
                if record.get(f) is None:
                    break
            else:
                continue
            found: Mapping[str, Any] = record
        elif isinstance(record, Mapping):
            found = record
        elif isinstance(record, msgspec.Struct):
            names = _attributes(type(record))
            found = {f: getattr(record, names[f]) for f in fields if f in names}
        else:
            raise ValueError(
                f"record {at + 1} of {len(records)} of a page is {type(record).__name__}, not "
                f"an object: it has no field {fields[0]!r}, its primary_key"
            )
        for f in fields:
            if f not in found:
                said = f"has no field {f!r}"
            elif found[f] is None:
                said = f"has {f!r}: null"
            else:
                continue
            raise ValueError(
                f"record {at + 1} of {len(records)} of a page {said}, and "
                f"{f!r} is its primary_key: a record without its key cannot be upserted. "
                f"Its keys: {keys_of(record)}"
            )


class Configured:
    """A sink that pickles as its configuration: what a sharded job sends to its workers is
    the sink as it was made, never an open file, lock or connection pool, and ``renamed``
    makes the same sink for another target (a shard's own folder)."""

    _config: tuple[tuple[Any, ...], dict[str, Any]]

    def _configured(self, *args: Any, **kwargs: Any) -> None:
        self._config = (args, kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._config
        return (_rebuild, (type(self), args, kwargs))

    def renamed(self, path: Any) -> Any:
        """The same sink, unopened, for the target ``path`` (its first argument)."""
        args, kwargs = self._config
        make: Any = type(self)
        return make(path, *args[1:], **kwargs)


def _rebuild(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)

"""The Sink protocol: where ``stream(...).into(sink)`` puts records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .._errors import ConfigurationError

__all__ = ["Configured", "Sink", "missing_extra"]


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

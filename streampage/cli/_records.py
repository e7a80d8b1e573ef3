"""``--records``: where a page's records are, a dotted path, the whole body, or decided on
the first page (auto)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._decode import get_path
from .._into import as_records, path_records
from . import UsageError


class _Spec:
    """Records of a page, with the ``--records`` text they came from: a checkpoint's
    fingerprint names it, so that a resume with another records path is refused."""

    def __init__(self, records: Callable[[Any], list[Any]], spec: str) -> None:
        self._records = records
        self.spec = spec

    def __call__(self, data: Any) -> list[Any]:
        return self._records(data)


class _AutoRecords:
    """``--records auto``: where the records are is decided on the first page, then kept,
    so that every page of a run is split the same way."""

    def __init__(self, announce: Callable[[str], None] | None) -> None:
        # None: a shard's, sent to a worker (it pickles while undecided); logged there
        self._announce = announce or logging.getLogger("streampage").info
        self._sent = announce is None
        self._split: Callable[[Any], list[Any]] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        if not self._sent:
            raise TypeError("--records auto pickles only as a shard's, before it decides")
        return (_AutoRecords, (None,))

    def __call__(self, data: Any) -> list[Any]:
        if self._split is None:
            self._split = self._decide(data)
        return self._split(data)

    def _decide(self, data: Any) -> Callable[[Any], list[Any]]:
        if isinstance(data, list):
            self._announce("records: the elements of each page's list body (--records auto)")
            return as_records
        path = _record_path(data)
        if path is None:
            self._announce(
                "records: each page's whole body is one record (--records auto found no "
                "single list field; name one with --records PATH)"
            )
            return lambda body: [body]
        self._announce(f"records: the items of {path!r} in each page (--records auto)")
        return lambda body: as_records(get_path(body, path))


def _record_path(data: Any) -> str | None:
    """The path of the only list field of an object, at the top or one level down."""
    if not isinstance(data, dict):
        return None
    top = [k for k, v in data.items() if isinstance(v, list)]
    if top:
        return str(top[0]) if len(top) == 1 else None
    nested = [
        f"{k}.{k2}"
        for k, v in data.items()
        if isinstance(v, dict)
        for k2, v2 in v.items()
        if isinstance(v2, list)
    ]
    return nested[0] if len(nested) == 1 else None


def _records_of(spec: str, announce: Callable[[str], None]) -> Callable[[Any], list[Any]]:
    """The records of a page's body, per ``--records``."""
    if spec == "auto":
        return _AutoRecords(announce)
    if spec == ".":
        return lambda body: [body]
    if not spec or spec.startswith(".") or spec.endswith(".") or ".." in spec:
        raise UsageError(f"--records {spec!r} is not a dotted path like data.items (or . or auto)")
    return path_records(spec)  # a path absent from the first page is an error, not 0 records

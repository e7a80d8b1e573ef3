"""What a checkpoint belongs to: a fingerprint of the source, compared on resume.

A checkpoint names pages by number or URL, which mean nothing against another source: a
resume of ``/users`` from the checkpoint of ``/items`` would skip the pages ``/items`` had
committed and call ``/users`` complete. So a checkpoint records the URL (without
credentials: a rotated key is the same source), the paginator and the records path, and a
resume with any of them changed is refused with the difference named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._auto import describe
from ._redact import redact_url

if TYPE_CHECKING:
    from ._sources import Sources

__all__ = ["differences", "fingerprint"]

_SHOWN = {"url": "URL", "pages": "paginator", "records": "records"}


def fingerprint(sources: Sources, extract: Any) -> dict[str, str]:
    """The source as text: ``url``, ``pages`` and ``records``."""
    pages: Any = sources.paginator
    single = sources.single
    if single is None:
        url = "many sources"  # an iterable is read lazily; its items are checked by key
    else:
        url = redact_url(sources.url(single).with_user(None))
        pages = single.pages if single.pages is not None else pages
    return {"url": url, "pages": describe(pages), "records": _records(extract)}


def _records(extract: Any) -> str:
    if extract is None:
        return "each page whole"
    if isinstance(extract, str):
        return extract
    spec = getattr(extract, "spec", None)  # the CLI's --records, for one
    if isinstance(spec, str):
        return spec
    return str(getattr(extract, "__qualname__", type(extract).__qualname__))


def differences(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    """What changed, one phrase per field: ``URL was '...', now '...'``."""
    return [
        f"{_SHOWN.get(key, key)} was {stored.get(key)!r}, now {current.get(key)!r}"
        for key in current
        if key in stored and stored[key] != current[key]
    ]

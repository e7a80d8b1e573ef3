"""What a checkpoint belongs to: a fingerprint of the source, compared on resume.

A checkpoint names pages by number or URL, which mean nothing against another source: a
resume of ``/users`` from the checkpoint of ``/items`` would skip the pages ``/items`` had
committed and call ``/users`` complete. So a checkpoint records the URL (without
credentials: a rotated key is the same source), the paginator and the records path, and a
resume with any of them changed is refused with the difference named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from yarl import URL

from ._auto import describe
from ._redact import REDACTED, looks_secret

if TYPE_CHECKING:
    from ._sources import Sources

__all__ = ["auto_unchecked", "chosen_differs", "differences", "fingerprint", "numbering"]

_SHOWN = {
    "url": "URL",
    "pages": "paginator",
    "records": "records",
    "incremental": "incremental field",
}


def fingerprint(sources: Sources, extract: Any) -> dict[str, str]:
    """The source as text: ``url``, ``pages`` and ``records``; a dependent stream's are its
    parents', with what makes the children (``children``: the function, the children's
    paginator and params; ``parent records``)."""
    parents = sources.parents
    if parents is not None:
        above = fingerprint(parents.sources, parents.spec)
        params = sorted((str(k), str(v)) for k, v in sources.params.items())
        made = f"{_records(parents.children)} paged by {numbering(sources.paginator)}"
        return {
            "url": above["url"],
            "pages": above["pages"],
            "parent records": above["records"],
            "children": made + (f" with {_shown(params)}" if params else ""),
            "records": _records(extract),
        }
    pages: Any = sources.paginator
    single = sources.single
    if single is None:
        # an iterable is read lazily: its items are told apart by their keys or URLs
        params = sorted((str(k), str(v)) for k, v in sources.params.items())
        url = "many sources" + (f" with {_shown(params)}" if params else "")
    else:
        url = _url(sources.url(single))
        pages = single.pages if single.pages is not None else pages
    return {"url": url, "pages": numbering(pages), "records": _records(extract)}


def numbering(paginator: Any, shift: int = 0) -> str:
    """What a checkpoint's page numbers mean under ``paginator``: its kind, the parameter
    it sends and the value page ``n`` sends (``n + shift``: pages=auto numbers from 1 and
    shifts a 0-based parameter), the page size that sets page boundaries, an offset's
    start and step. Other options (where a total is read) do not renumber pages, so
    spelling them otherwise is the same source."""
    name = type(paginator).__name__
    if name == "Auto":
        return "Auto()"
    if name == "PageNumber":  # a size the server is not sent is the server's own
        sent = paginator.size if paginator.size_param is not None else None
        return f"PageNumber(param={paginator.param!r}, size={sent!r}, value=n{shift:+d})"
    if name == "Offset":
        return (
            f"Offset(param={paginator.param!r}, start={paginator.start!r}, "
            f"limit={paginator.limit!r})"
        )
    if name == "Cursor":
        return f"Cursor(param={paginator.param!r})"
    if name in ("NextURL", "LinkHeader"):
        return f"{name}()"
    return describe(paginator)


def _url(url: URL) -> str:
    """The URL without userinfo, its query sorted (order means nothing to a server that
    reads parameters by name), credential values left out."""
    query = sorted(url.query.items())
    base = str(url.with_user(None).with_query(None).with_fragment(None))
    return base + ("?" + _shown(query) if query else "")


def _shown(params: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={REDACTED if looks_secret(k) else v}" for k, v in params)


def _records(extract: Any) -> str:
    if extract is None:
        return "each page whole"
    if isinstance(extract, str):
        return extract
    spec = getattr(extract, "spec", None)  # the CLI's --records, for one
    if isinstance(spec, str):
        return spec
    return str(getattr(extract, "__qualname__", type(extract).__qualname__))


#: values that stand for "decided on the first page": they match whatever was decided
_DECIDED_LATER = {"pages": "Auto()", "records": "auto"}


def differences(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    """What changed, one phrase per field: ``URL was '...', now '...'``. A paginator is
    compared by its numbering, Auto by what it chose (``chose``, recorded once it did; a
    resume with Auto is checked when Auto chooses again: see chosen_differs);
    ``--records auto`` matches any records path."""
    changed = []
    if ("children" in stored) != ("children" in current):  # then(): one level more or less
        kinds = ("a plain stream", "a dependent stream (then())")
        stored_kind, current_kind = (kinds[1], kinds[0]) if "children" in stored else kinds
        changed.append(f"the checkpoint is of {stored_kind}, this one is {current_kind}")
    for key, now in current.items():
        was = stored.get(key)
        if key == "pages" and was == "Auto()":
            was = stored.get("chose")
        if was is None or was == now or _DECIDED_LATER.get(key) in (was, now):
            continue
        changed.append(f"{_SHOWN.get(key, key)} was {was!r}, now {now!r}")
    return changed


def chosen_differs(stored: dict[str, str], chosen: str) -> str | None:
    """The difference when pages=auto, resumed, chose another numbering than the run that
    wrote the checkpoint used (its paginator, or Auto's choice then)."""
    was = stored.get("pages")
    if was == "Auto()":
        was = stored.get("chose")
        if was == "one page":
            return None  # page 1, the URL as given, is page 1 of whatever Auto chooses now
    if was is None or was == chosen:
        return None
    return f"paginator was {was!r}, now pages=auto chose {chosen!r}"


def auto_unchecked(stored: dict[str, str], current: dict[str, str], many: bool) -> str | None:
    """Many sources resumed with pages=auto after a named paginator, or the reverse:
    Auto's choice for each source is not kept, so it cannot be compared with what
    numbered the committed pages."""
    was, now = stored.get("pages"), current.get("pages")
    if many and was is not None and was != now and "Auto()" in (was, now):
        return f"paginator was {was!r}, now {now!r} (Auto's choice is not kept per source)"
    return None

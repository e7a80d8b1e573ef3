"""Decoding bodies with msgspec, and reading values out of decoded bodies by dotted path."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
from yarl import URL

from ._errors import ConfigurationError, DecodeError
from ._redact import redact_url

_PATH_IN_MESSAGE = re.compile(r" - at `(\$[^`]*)`$")


def decoder_for(type_: Any) -> msgspec.json.Decoder[Any]:
    """One decoder per type, built once: building a typed decoder is far costlier than using it."""
    try:
        return _cached_decoder(type_)
    except TypeError as exc:  # unhashable, or a type msgspec cannot decode into
        raise ConfigurationError(
            f"decode={type_!r} is not a type msgspec can decode JSON into ({exc}). "
            "Pass a msgspec.Struct subclass, a dataclass, a TypedDict or a builtin type."
        ) from None


@functools.cache
def _cached_decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(type_) if type_ is not None else msgspec.json.Decoder()


def decode_body(decoder: msgspec.json.Decoder[Any], body: bytes, *, page: int, url: URL) -> Any:
    """Decode a page body, turning every msgspec and Unicode failure into our DecodeError."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        shown = redact_url(url)
        text = str(exc)
        match = _PATH_IN_MESSAGE.search(text)
        raise DecodeError(
            f"page {page} does not match the expected type: {text} (url: {shown})",
            page=page,
            url=shown,
            path=match.group(1) if match else "$",
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        shown = redact_url(url)
        excerpt = body[:120].decode("utf-8", "replace")
        raise DecodeError(
            f"page {page} is not valid JSON: {exc} (url: {shown}); body starts with {excerpt!r}",
            page=page,
            url=shown,
            path=None,
        ) from None


def get_path(obj: Any, path: str) -> Any:
    """Follow a dotted path (``"meta.total"``, ``"data.items.0"``) through mappings, structs
    and sequences. A missing step gives ``None``, because a missing total means "unknown"."""
    for part in path.split("."):
        if obj is None:
            return None
        if isinstance(obj, Mapping):
            obj = obj.get(part)
        elif isinstance(obj, Sequence) and not isinstance(obj, str | bytes) and part.isdigit():
            index = int(part)
            obj = obj[index] if index < len(obj) else None
        else:
            obj = getattr(obj, part, None)
    return obj


_MISSING = object()


def has_path(obj: Any, path: str) -> bool:
    """Does every step of a dotted path exist (its value may be null)? Tells a field that
    is absent (a wrong name) from one that is present and empty (the end of the data)."""
    for part in path.split("."):
        if isinstance(obj, Mapping):
            obj = obj.get(part, _MISSING)
        elif isinstance(obj, Sequence) and not isinstance(obj, str | bytes) and part.isdigit():
            index = int(part)
            obj = obj[index] if index < len(obj) else _MISSING
        elif isinstance(obj, msgspec.Struct) and part in obj.__struct_fields__:
            obj = getattr(obj, part)
        else:
            return False
        if obj is _MISSING:
            return False
    return True


def keys_of(data: Any) -> str:
    """The top-level keys of a body, for messages that say what *is* there."""
    if isinstance(data, msgspec.Struct):
        keys = list(data.__struct_fields__)
    elif isinstance(data, Mapping):
        keys = [str(k) for k in data]
    elif isinstance(data, list):
        return "none: the body is a JSON list"
    else:
        return f"none: the body is {type(data).__name__}"
    shown = ", ".join(keys[:20]) + (", ..." if len(keys) > 20 else "")
    return shown or "none: the body is an empty object"


def is_empty(data: Any) -> bool:
    """Does a decoded body hold no records? The default end-of-data test when no total is known.

    Empty: ``None``, an empty list or object, or an object (mapping or struct) whose list of
    records (see find_records) is empty, or, when that list cannot be told, whose list
    fields are all empty (``{"items": [], "page": 7}``). An object with no list field is
    never empty: there is nothing to tell by, so pass ``items=`` to the paginator.
    """
    return count_records(data) == 0


def find_records(data: Any) -> Any:
    """The list of records in a body: the body itself if it is a list, else the only list
    field of an object (``{"items": [...], "page": 3}``), else one level down when the top
    has none (Elasticsearch's ``hits.hits``); among several, the one with a name records go
    by (``data`` beside Laravel's ``links``). None when that is still ambiguous."""
    if isinstance(data, list):
        return data
    lists = _list_fields(data)
    if len(lists) == 1:
        return lists[0][1]
    for name, value in lists:
        if name in _RECORD_NAMES:
            return value
    return None


def count_records(data: Any) -> int | None:
    """Records on a page by the default rule (0 when empty), or None when it cannot tell:
    the list find_records finds; 0 when it finds none but every list field is empty."""
    if isinstance(data, list):
        return len(data)
    if not data:
        return 0
    if type(data) is dict:
        # a JSON object decoded without a type, on every page: one pass, no pairs built,
        # for the common body whose only list field holds the records
        found = None
        for value in data.values():
            if isinstance(value, _LISTS):
                if found is not None:
                    break  # several lists: chosen by name below
                found = value
        else:
            if found is not None:
                return len(found)
    lists = _list_fields(data)
    if len(lists) == 1:
        return len(lists[0][1])
    for name, value in lists:
        if name in _RECORD_NAMES:
            return len(value)
    return 0 if lists and not any(value for _name, value in lists) else None


#: Names a body's list of records goes by, to choose among several lists.
_RECORD_NAMES = frozenset(
    ("items", "data", "results", "records", "value", "content", "hits", "entries", "rows")
)


def _list_fields(data: Any) -> list[tuple[str, Any]]:
    """The list-valued fields of an object (a mapping or a msgspec Struct), by name; when
    it has none, those of the objects it holds, one level down."""
    if type(data) is dict:  # a JSON object decoded without a type: every page, so no ABCs
        found = [(name, v) for name, v in data.items() if isinstance(v, _LISTS)]
        if found:
            return found
        return [pair for _name, value in data.items() for pair in _lists_of(value)]
    found = _lists_of(data)
    if found or not isinstance(data, Mapping | msgspec.Struct):
        return found
    return [pair for _name, value in _fields_of(data) for pair in _lists_of(value)]


#: what counts as a list of records (a constant: ``list | tuple`` would be built per test)
_LISTS = (list, tuple)


def _lists_of(data: Any) -> list[tuple[str, Any]]:
    return [(name, v) for name, v in _fields_of(data) if isinstance(v, _LISTS)]


def _fields_of(data: Any) -> Any:
    if isinstance(data, msgspec.Struct):
        return ((f, getattr(data, f)) for f in data.__struct_fields__)
    if isinstance(data, Mapping):
        return data.items()
    return ()


PathOrCallable = str | Callable[[Any], Any]

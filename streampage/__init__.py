"""streampage: fetch paginated HTTP APIs concurrently and stream the pages as they arrive.

pages = streampage.PageNumber(start=1)
async with streampage.stream(url, pages=pages, concurrency=32) as stream:
    async for page in stream:
        handle(page.number, page.data)
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below load on first use (see __getattr__)
    from . import auth, events, sinks
    from ._auto import Auto
    from ._errors import (
        CheckpointInUseError,
        ConfigurationError,
        DecodeError,
        HTTPStatusError,
        IncompleteError,
        PageError,
        PaginationError,
        RequestError,
        ResponseTooLargeError,
        SinkError,
        StreamPageError,
        ValidationError,
    )
    from ._evidence import Completeness
    from ._incremental import Incremental
    from ._into import Records
    from ._page import Page, ResponseInfo
    from ._pagination import Header, Offset, PageNumber, Paginator, PaginatorRun
    from ._policy import RateLimit, RetryPolicy, Timeout
    from ._runner import run
    from ._sources import Source
    from ._stats import StreamStats
    from ._stream import Failure, Stream, stream
    from ._walks import Cursor, LinkHeader, NextURL

#: public name -> the module that defines it. Loaded on first use: ``streampage --version``
#: and a script that only needs the errors do not pay for aiohttp (~0.15 s).
_LAZY = {
    "Auto": "._auto",
    "CheckpointInUseError": "._errors",
    "Completeness": "._evidence",
    "ConfigurationError": "._errors",
    "Cursor": "._walks",
    "DecodeError": "._errors",
    "Failure": "._stream",
    "HTTPStatusError": "._errors",
    "Header": "._pagination",
    "IncompleteError": "._errors",
    "Incremental": "._incremental",
    "LinkHeader": "._walks",
    "NextURL": "._walks",
    "Offset": "._pagination",
    "Page": "._page",
    "PageError": "._errors",
    "PageNumber": "._pagination",
    "PaginationError": "._errors",
    "Paginator": "._pagination",
    "PaginatorRun": "._pagination",
    "RateLimit": "._policy",
    "Records": "._into",
    "RequestError": "._errors",
    "ResponseInfo": "._page",
    "ResponseTooLargeError": "._errors",
    "RetryPolicy": "._policy",
    "SinkError": "._errors",
    "Source": "._sources",
    "Stream": "._stream",
    "StreamPageError": "._errors",
    "StreamStats": "._stats",
    "Timeout": "._policy",
    "ValidationError": "._errors",
    "run": "._runner",
    "stream": "._stream",
    "sinks": ".",
    "events": ".",
    "auth": ".",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streampage' has no attribute {name!r}")
    import importlib

    if module == ".":  # a public submodule
        value: Any = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "Auto",
    "CheckpointInUseError",
    "Completeness",
    "ConfigurationError",
    "Cursor",
    "DecodeError",
    "Failure",
    "HTTPStatusError",
    "Header",
    "IncompleteError",
    "Incremental",
    "LinkHeader",
    "NextURL",
    "Offset",
    "Page",
    "PageError",
    "PageNumber",
    "PaginationError",
    "Paginator",
    "PaginatorRun",
    "RateLimit",
    "Records",
    "RequestError",
    "ResponseInfo",
    "ResponseTooLargeError",
    "RetryPolicy",
    "SinkError",
    "Source",
    "Stream",
    "StreamPageError",
    "StreamStats",
    "Timeout",
    "ValidationError",
    "auth",
    "events",
    "run",
    "sinks",
    "stream",
]

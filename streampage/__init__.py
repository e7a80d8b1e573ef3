"""streampage: fetch paginated HTTP APIs concurrently and stream the pages as they arrive.

pages = streampage.PageNumber(start=1)
async with streampage.stream(url, pages=pages, concurrency=32) as stream:
    async for page in stream:
        handle(page.number, page.data)
"""

from . import sinks
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
from ._into import Records
from ._page import Page, ResponseInfo
from ._pagination import Header, Offset, PageNumber, Paginator, PaginatorRun
from ._policy import RateLimit, RetryPolicy, Timeout
from ._runner import run
from ._sources import Source
from ._stats import StreamStats
from ._stream import Failure, Stream, stream
from ._walks import Cursor, LinkHeader, NextURL

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
    "run",
    "sinks",
    "stream",
]

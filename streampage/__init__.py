"""streampage: fetch paginated HTTP APIs concurrently and stream the pages as they arrive.

pages = streampage.PageNumber(start=1)
async with streampage.stream(url, pages=pages, concurrency=32) as stream:
    async for page in stream:
        handle(page.number, page.data)
"""

from ._errors import (
    ConfigurationError,
    DecodeError,
    HTTPStatusError,
    PageError,
    RequestError,
    StreamPageError,
)
from ._page import Page, ResponseInfo
from ._pagination import Header, PageNumber, Paginator, PaginatorRun
from ._runner import run
from ._stats import StreamStats
from ._stream import Stream, stream

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "DecodeError",
    "HTTPStatusError",
    "Header",
    "Page",
    "PageError",
    "PageNumber",
    "Paginator",
    "PaginatorRun",
    "RequestError",
    "ResponseInfo",
    "Stream",
    "StreamPageError",
    "StreamStats",
    "run",
    "stream",
]

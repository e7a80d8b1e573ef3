"""The exceptions streampage raises.

Users catch these, never aiohttp's or msgspec's: foreign errors are translated where a page
is fetched and decoded (``_engine.py``), so every error names the page it belongs to.

    StreamPageError
     ├── ConfigurationError   bad arguments, raised before any request (also a ValueError)
     ├── SinkError            a sink could not write or commit (full disk, lost database)
     │    └── CheckpointInUseError  another run holds the target's checkpoint (its lock)
     └── PageError            one page could not be delivered; carries .page and .url
          ├── PaginationError  a loop, a next link to another origin, a page that repeats
          │                    the one before it, a server that caps the page size
          ├── IncompleteError  the run ended short of (or past) a total the server reported
          ├── HTTPStatusError the server answered with a non-2xx status; .status, .body_excerpt
          ├── DecodeError     the body is not valid JSON or does not match decode=; .path
          │    └── ValidationError  validate= rejected the decoded page; .reason
          ├── RequestError    no response: connection refused or reset, DNS failure, timeout
          └── ResponseTooLargeError  the body exceeds max_page_bytes (refused while streaming in)

URLs in messages and attributes are redacted (passwords and secret query parameters).
``attempts`` on a PageError is how many attempts the page had when it failed.
"""

from __future__ import annotations

__all__ = [
    "CheckpointInUseError",
    "ConfigurationError",
    "DecodeError",
    "HTTPStatusError",
    "IncompleteError",
    "PageError",
    "PaginationError",
    "RequestError",
    "ResponseTooLargeError",
    "SinkError",
    "StreamPageError",
    "ValidationError",
]


class StreamPageError(Exception):
    """Root of every error streampage raises."""


class ConfigurationError(StreamPageError, ValueError):
    """An argument to stream() or a paginator is invalid; raised before any request is made."""


class PageError(StreamPageError):
    """A page could not be delivered. ``page`` is its number, ``url`` the redacted URL."""

    def __init__(self, message: str, *, page: int, url: str) -> None:
        super().__init__(message)
        self.page = page
        self.url = url
        self.attempts = 1
        #: the streampage.Source the page belongs to (set by the stream)
        self.source: object = None


class HTTPStatusError(PageError):
    """The server answered a page with a status outside 2xx.

    ``retry_after`` is the wait in seconds the server asked for (``Retry-After``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        page: int,
        url: str,
        status: int,
        body_excerpt: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, page=page, url=url)
        self.status = status
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after


class DecodeError(PageError):
    """A page's body is not valid JSON, or does not match the type given as ``decode=``.

    ``path`` is msgspec's path to the offending field (``$.items[3].id``), or ``None`` when
    the body is not JSON at all.
    """

    def __init__(self, message: str, *, page: int, url: str, path: str | None) -> None:
        super().__init__(message, page=page, url=url)
        self.path = path


class ValidationError(DecodeError):
    """``validate=`` rejected a decoded page (returned false or raised), on every attempt.

    ``reason`` says why: the exception's text, or that it returned False.
    """

    def __init__(self, message: str, *, page: int, url: str, path: str | None, reason: str) -> None:
        super().__init__(message, page=page, url=url, path=path)
        self.reason = reason


class RequestError(PageError):
    """No usable response arrived for a page: connection refused or reset, DNS, timeout."""


class ResponseTooLargeError(PageError):
    """A page's body is larger than ``max_page_bytes``; refused while it streamed in."""


class PaginationError(PageError):
    """The pagination cannot go on: a cursor or next link seen before (a loop), a next link
    to another origin, a page whose body repeats the page before it (the server ignores the
    page parameter), or a page size the server capped. ``page`` is the page concerned."""


class IncompleteError(PageError):
    """A source ended, but what it delivered disagrees with a total its responses reported.

    Transport reliability guarantees every page *asked for*; this error is what catches the
    pages never asked for (a wrong or guessed paginator, a page-size cap, a parameter the
    server ignores). ``expected`` and ``delivered`` count ``unit`` ("records" or "pages");
    ``evidence`` says where the total came from (``"header X-Total-Count"``). ``page`` is
    the first page number past what was delivered, ``url`` the source's redacted URL.
    """

    def __init__(
        self,
        message: str,
        *,
        page: int,
        url: str,
        expected: int,
        delivered: int,
        unit: str,
        evidence: str,
    ) -> None:
        super().__init__(message, page=page, url=url)
        self.expected = expected
        self.delivered = delivered
        self.unit = unit
        self.evidence = evidence


class SinkError(StreamPageError):
    """A sink could not take or commit records (a full disk, a lost database). Pages whose
    records were committed before it are in the checkpoint: run again with resume."""


class CheckpointInUseError(SinkError):
    """Another run holds the lock of the checkpoint this run would write: two writers would
    each commit the same pages. Raised by a sink's ``open``, before anything is written.
    ``holder`` says who holds it (``since T, pid P on host H``) when that can be told."""

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder

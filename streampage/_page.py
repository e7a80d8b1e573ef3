"""What the stream yields: one decoded page with the metadata of its response."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
from multidict import CIMultiDictProxy
from yarl import URL

T = TypeVar("T")

__all__ = ["Page", "ResponseInfo"]


class ResponseInfo(msgspec.Struct, frozen=True):
    """Metadata of the response a page came from.

    ``elapsed`` is seconds from sending the request to having read the whole body.
    ``url`` is the URL that was requested, with its query (it may hold credentials: redact
    it before logging it; errors do so themselves).
    """

    status: int
    elapsed: float
    url: URL
    headers: CIMultiDictProxy[str]


class Page(msgspec.Struct, Generic[T], frozen=True):
    """One page: its number, its decoded body, its response metadata, and its source
    (a ``streampage.Source``: the URL, params and key it came from)."""

    number: int
    data: T
    response: ResponseInfo
    source: Any = None

"""Keep credentials out of messages: URLs are redacted before they reach an error or a log."""

from __future__ import annotations

import re
from contextvars import ContextVar

from yarl import URL

#: Query parameter names whose values are never shown (compared case-insensitively).
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "api-key",
        "auth",
        "client_secret",
        "key",
        "password",
        "refresh_token",
        "secret",
        "sig",
        "signature",
        "token",
        "x-api-key",
    }
)

REDACTED = "REDACTED"

#: Query parameter names (lower case) that one stream makes secret besides SECRET_PARAMS:
#: an API key sent in the query under a name of the API's choosing (``appid``). A stream
#: runs its engine in a context where this is set, so that every message made while it
#: runs (its workers', its paginators') redacts them.
stream_secret_params: ContextVar[frozenset[str]] = ContextVar(
    "streampage_secret_params", default=frozenset()
)

_SECRET_HEADER = re.compile(
    r"authorization|cookie|api[-_]?key|token|secret|password|passwd|session|signature|auth",
    re.IGNORECASE,
)


def is_secret_header(name: str) -> bool:
    """Authorization, Cookie, and anything named like a key, token, secret or session."""
    return _SECRET_HEADER.search(name) is not None


#: Words that make a parameter name look like a credential, for what is stored
#: (checkpoints), when they are a whole part of the name (``private_token``,
#: ``X-Amz-Signature``): looser than SECRET_PARAMS, never a substring (``author``,
#: ``keyword`` and ``sort_key`` are filters, and ``pageToken`` is a cursor).
_SECRET_WORDS = frozenset(
    {"token", "secret", "password", "passwd", "signature", "credential", "credentials"}
)
#: ``<word>_key`` names that hold keys (``access_key``, ``client_key``)
_KEY_OWNERS = frozenset({"api", "access", "secret", "private", "client", "subscription", "auth"})


def looks_secret(name: str) -> bool:
    """A query parameter whose name says its value may be a credential."""
    lowered = name.lower()
    if lowered in SECRET_PARAMS:
        return True
    parts = re.split(r"[-_.]", lowered)
    if any(part in _SECRET_WORDS for part in parts):
        return True
    return len(parts) >= 2 and parts[-1] == "key" and parts[-2] in _KEY_OWNERS


def redact_url(url: URL | str) -> str:
    """The URL as text with its password and secret query values replaced by ``REDACTED``."""
    u = URL(url) if isinstance(url, str) else url
    if u.password is not None:
        u = u.with_password(REDACTED)
    secret = SECRET_PARAMS
    extra = stream_secret_params.get()
    if extra:
        secret = secret | extra
    if u.query_string and any(k.lower() in secret for k in u.query):
        u = u.with_query([(k, REDACTED if k.lower() in secret else v) for k, v in u.query.items()])
    return str(u)

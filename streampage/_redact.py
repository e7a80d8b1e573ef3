"""Keep credentials out of messages: URLs are redacted before they reach an error or a log."""

from __future__ import annotations

import re

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

#: Names that look like a credential, for what is stored (checkpoints): looser than
#: SECRET_PARAMS (private_token, access_key, X-Amz-Signature), since storing a value that
#: is not a secret costs nothing when it is put back from the command's own URL.
_LOOKS_SECRET = re.compile(
    r"key|token|secret|passw|session|signature|auth|credential|^sig$", re.IGNORECASE
)


def looks_secret(name: str) -> bool:
    """A query parameter whose name says its value may be a credential."""
    return name.lower() in SECRET_PARAMS or _LOOKS_SECRET.search(name) is not None


def redact_url(url: URL | str) -> str:
    """The URL as text with its password and secret query values replaced by ``REDACTED``."""
    u = URL(url) if isinstance(url, str) else url
    if u.password is not None:
        u = u.with_password(REDACTED)
    if u.query_string and any(k.lower() in SECRET_PARAMS for k in u.query):
        u = u.with_query(
            [(k, REDACTED if k.lower() in SECRET_PARAMS else v) for k, v in u.query.items()]
        )
    return str(u)

"""Secrets: the credentials the user gave are kept out of every line the command prints, and
the library's log records reach stderr scrubbed."""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit

from .._redact import REDACTED, SECRET_PARAMS, is_secret_header
from . import PROG, _one_line
from ._speak import speak

#: Header names whose values are shown as they are (never credentials).
_PLAIN_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "content-type", "user-agent", "cache-control"}
)


#: options that name an environment variable holding a secret (--auth)
_SECRET_ENV = ("token_env", "password_env", "api_key_env", "client_secret_env")


class _Scrubber:
    """Replaces every credential the user gave (header values, secret parameters, URL
    passwords) by REDACTED in text about to be printed: defence in depth, since the library
    redacts URLs itself and never prints headers, but a server may echo them in a body."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self._auth: Any = None

    @classmethod
    def of(cls, args: argparse.Namespace) -> _Scrubber:
        found: list[str] = []
        for name, value in args.headers:
            if name.lower() not in _PLAIN_HEADERS:
                found.append(value)
                scheme, _, credential = value.partition(" ")
                if credential and scheme.isalpha():
                    found.append(credential.strip())  # "Bearer <token>": the token alone too
        for key, value in args.params:
            if key.lower() in SECRET_PARAMS or is_secret_header(key):
                found.append(value)
        user = getattr(args, "user", None)
        if user is not None and ":" in user:
            found.append(user.partition(":")[2])
        # --auth: the secrets the environment holds (--token-env, --client-secret-env...)
        for dest in _SECRET_ENV:
            var = getattr(args, dest, None)
            value = os.environ.get(var) if var else None
            if value:
                found += [value, quote_plus(value)]
                if user is not None and dest == "password_env":
                    basic = f"{user.partition(':')[0]}:{value}".encode()
                    found.append(base64.b64encode(basic).decode("ascii"))
        for target in (args.url, args.output or ""):
            with contextlib.suppress(ValueError):
                parts = urlsplit(target)
                if parts.password:
                    found.append(parts.password)
                found += [v for k, v in parse_qsl(parts.query) if k.lower() in SECRET_PARAMS]
        return cls(found)

    def watch(self, auth: Any) -> None:
        """Scrub what ``auth`` holds as the run goes on too (an OAuth2 token)."""
        self._auth = auth

    def __call__(self, text: str) -> str:
        secrets = self._secrets
        if self._auth is not None:
            more = {s for s in self._auth.secrets() if len(s) >= 4}
            secrets = sorted(more.union(secrets), key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        return text


class _LogHandler(logging.Handler):
    """The library's log records on stderr (looked up at each record, so that a progress
    bar that wraps stderr keeps them above it), scrubbed."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        super().__init__()
        self._scrub = scrub

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = _one_line(speak(self._scrub(record.getMessage())))
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def _setup_logging(verbose: int, quiet: bool, scrub: Callable[[str], str]) -> Callable[[], None]:
    logger = logging.getLogger("streampage")
    handler = _LogHandler(scrub)
    if quiet:
        level = logging.ERROR
    elif verbose:
        level = logging.INFO if verbose == 1 else logging.DEBUG
    else:
        # warnings, and the decisions no event tells (the library tags both); not the
        # failed pages: they are listed at the end, or are the error. What pages=auto
        # chose comes as an event, said as options (fetch's _Listener).
        level = logging.INFO
        handler.addFilter(
            lambda r: (
                getattr(r, "streampage_decision", False)
                if r.levelno < logging.WARNING
                else not getattr(r, "streampage_failure", False)
            )
        )
    handler.setLevel(level)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate

    return undo

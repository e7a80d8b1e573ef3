"""The library's messages in the command line's language: where a message names a keyword
argument (``resume=True``, ``pages=...``, ``headers=``), a paginator or a sink as Python
(``PageNumber(size=3)``, ``SQLite('x.db', table='t')``), the shell user reads the option or
the target that says the same (``--resume``, ``--pages``, ``-H``, ``--pages page --size 3``,
``sqlite:///x.db?table=t``). Where a message gives both forms, ``X (streampage fetch
--opt)``, only the option is kept. Where an argument has no option, the hint is reworded so
that it does not ask a shell user for Python.

``speak`` runs on every error and log line the command prints (not per page): a list of
regular expressions tried in order over the text outside URLs and body excerpts, which are
the server's and are never rewritten. A text without a Python form is returned as it is.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Callable

__all__ = ["speak"]

#: A Python value as the library's messages write it: a repr'd string, a constant, a number.
_VALUE = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|True|False|None|\.\.\.|-?\d+(?:\.\d+)?)"""

#: Left as they are: the server's text (URLs, a body excerpt may say anything) and what the
#: user wrote after options whose values hold "=" (--expect FIELD=PARAM, -p KEY=VALUE).
_PROTECTED = re.compile(
    r"""https?://[^\s'"]+|body starts with (?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    r"|(?<![\w-])(?:--expect|--param|-p) \S+"
)

#: A keyword argument of stream(), into(), the paginators or run_sharded, by the option of
#: ``streampage fetch`` that sets it (streampage/cli/_parser.py, by dest): a value maps to
#: a flag, or None: the option takes the value.
_OPTIONS: dict[str, dict[str, str] | str] = {
    "headers": "-H",
    "params": "-p",
    "auth": "--auth",
    "token_url": "--token-url",
    "client_id": "--client-id",
    "client_secret": "--client-secret-env",
    "scope": "--scope",
    "audience": "--audience",
    "pages": "--pages",
    "items": "--records",
    "concurrency": "-c/--concurrency",
    "rate": "--rate",
    "max_pages": "--max-pages",
    "max_page_bytes": "--max-page-bytes",
    "on_error": "--on-error",
    "timeout": "--timeout",
    "secret_headers": "--secret-header",
    "validate": "--expect",
    "start": "--start",
    "stop": "--stop",
    "size": "--size",
    "limit": "--limit",
    "checkpoint": "--checkpoint",
    "incremental": "--incremental",
    "primary_key": "--primary-key",
    "batch": "--batch",
    "job": "--job",
    "cluster": "--cluster",
    "shard_size": "--shards",
    "verify": {"False": "--no-verify"},
    "verify_tls": {"False": "--insecure"},
    "adaptive": {"False": "--no-adaptive"},
    "ordered": {"True": "--ordered"},
    "resume": {"True": "--resume"},
    "mode": {"'resume'": "--resume", "'replace'": "--replace"},
    "cross_origin": {"True": "--cross-origin"},
    "fan_out": {"False": "--no-fan-out"},
}

#: Each paginator: its --pages style, its fields' options, and the fields' CLI defaults
#: (left out of the options that pin it, as cli._plan.as_options does).
_PAGINATORS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "PageNumber": (
        "page",
        {
            "param": "--page-param",
            "start": "--start",
            "stop": "--stop",
            "size": "--size",
            "size_param": "--size-param",
            "total_pages": "--total-pages",
            "total_items": "--total-items",
            "has_more": "--has-more",
            "items": "--records",
        },
        {"param": "page", "start": "1", "size_param": "per_page"},
    ),
    "Offset": (
        "offset",
        {
            "param": "--page-param",
            "start": "--start",
            "stop": "--stop",
            "limit": "--size",
            "limit_param": "--size-param",
            "total_items": "--total-items",
            "has_more": "--has-more",
            "items": "--records",
        },
        {"param": "offset", "start": "0", "limit": "100", "limit_param": "limit"},
    ),
    "Cursor": (
        "cursor",
        {"field": "--cursor-field", "param": "--cursor-param", "initial": "--initial-cursor"},
        {"field": "next_cursor", "param": "cursor"},
    ),
    "NextURL": ("next-url", {"field": "--next-field"}, {"field": "next"}),
    "LinkHeader": ("link", {}, {}),
    "Auto": ("auto", {}, {}),
}
_FLAGS = {"cross_origin": ("True", "--cross-origin"), "fan_out": ("False", "--no-fan-out")}

#: Timeout(), RetryPolicy(), RateLimit() and into() arguments with an option.
_CALLED = {
    "Timeout": {
        "connect": "--connect-timeout",
        "first_byte": "--read-timeout",
        "attempt": "--timeout",
        "min_rate": "--min-rate",
    },
    "RetryPolicy": {"attempts": "--retries"},
    "RateLimit": {"burst": "--burst"},
    "Incremental": {"field": "--incremental", "param": "--since-param"},
}

_ARG = re.compile(r"""(\w+)=(Header\([^()]*\)|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,()]+)""")
_KINDS = "|".join(_PAGINATORS)
_CALL_ARGS = r"\((?P<args>(?:[^()]|\([^()]*\))*)\)"  # one level inside: Header('X')


def _plain(value: str) -> str:
    """A Python value as the shell takes it: 'x' -> x, Header('X') -> header:X."""
    value = value.strip()
    header = re.fullmatch(r"""Header\((?:name=)?['"](.*)['"]\)""", value)
    if header:
        value = "header:" + header[1]
    elif len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return shlex.quote(value)


def _args(text: str) -> list[tuple[str, str]]:
    return [(name, value.strip()) for name, value in _ARG.findall(text)]


def _said(option: str, value: str) -> str:
    """``--opt VALUE``; the option alone for ``...`` or an argument named bare."""
    return option if value in ("", "...") else f"{option} {_plain(value)}"


def _pinned(kind: str, text: str) -> str:
    """A paginator's repr (describe(), or a checkpoint's numbering) as the options that
    pin it: ``PageNumber(total_pages='total_pages')`` -> ``--pages page --total-pages
    total_pages``. A field without an option is kept in words, not dropped."""
    style, options, defaults = _PAGINATORS[kind]
    args = dict(_args(text))
    said = [f"--pages {style}"]
    value = args.pop("value", None)  # numbering: page n sends n+K, i.e. --start 1+K
    if value is not None and re.fullmatch(r"n[+-]\d+", value):
        args.setdefault("start", str(1 + int(value[1:])))
    if args.get("size_param") == "None" and "total_items" not in args:
        args.pop("size", None)  # a size not sent, and not counted with: the server's own
    for name, value in args.items():
        if value == "None" or _plain(value) == defaults.get(name):
            continue
        if name in _FLAGS:
            if value == _FLAGS[name][0]:
                said.append(_FLAGS[name][1])
        elif name in options:
            said.append(_said(options[name], value))
        else:
            said.append(f"({name} {_plain(value)})")
    return " ".join(said)


def _named(kind: str, text: str) -> str:
    """The options a message about some of a paginator's fields names:
    ``Offset(param=..., limit_param=...)`` -> ``--page-param and --size-param``."""
    options = _PAGINATORS[kind][1]
    said = []
    for name, value in _args(text):
        if name in _FLAGS:
            said.append(_FLAGS[name][1])
        else:
            said.append(_said(options.get(name, name), value))
    return " and ".join(said)


def _paginator(match: re.Match[str]) -> str:
    return _pinned(match["kind"], match["args"])


def _fields(match: re.Match[str]) -> str:
    return _named(match["kind"], match["args"])


def _called(match: re.Match[str]) -> str:
    options = _CALLED[match["kind"]]
    args = _args(match["args"])
    if not args or any(name not in options for name, _ in args):
        return match[0]
    return " and ".join(_said(options[name], value) for name, value in args)


#: What a keyword argument never follows: a word (``per_page=``), a query string, a path.
_NOT_AFTER = frozenset(string.ascii_letters + string.digits + "_?&./:='\"-")


def _sqlite(match: re.Match[str]) -> str:
    path = match[1]
    return f"sqlite:///{path}?table={match[2]}"  # an absolute path gives sqlite:////abs


def _postgres(match: re.Match[str]) -> str:
    dsn = match[1]
    return f"{dsn}{'&' if '?' in dsn else '?'}table={match[2]}"


def _keyword(match: re.Match[str]) -> str:
    at = match.start()
    if at and match.string[at - 1] in _NOT_AFTER:
        return match[0]  # part of a longer name, a query string, a path or a quoted text
    option = _OPTIONS[match["name"]]
    value = match["value"] or ""
    if isinstance(option, dict):
        return option.get(value, match[0])
    return _said(option, value)


#: A rule: the literal text it needs (any of them; checked first, which is cheap), the
#: pattern, and its replacement.
Rule = tuple[tuple[str, ...], re.Pattern[str], str | Callable[[re.Match[str]], str]]

_KIND_CALLS = tuple(kind + "(" for kind in _PAGINATORS)

_RULES: list[Rule] = [
    # _walks.py, Cursor holding a URL: "... Use NextURL(field='x') (streampage fetch --pages
    # next-url), which follows it": the field goes with the style (before the both-forms rule)
    (
        ("Use NextURL(",),
        re.compile(
            r"Use (?P<kind>NextURL)" + _CALL_ARGS + r" \(streampage fetch --pages next-url\)"
        ),
        lambda m: "Use " + _pinned(m["kind"], m["args"]),
    ),
    # Both forms given, "X (streampage fetch --opt ...)" or "X (--opt ...)": the option alone.
    # _into.py "pass mode='resume' (streampage fetch --resume)", "mode='replace' (--replace)",
    # "run again with resume=True (streampage fetch --resume)"; _evidence.py "pass
    # verify=False (streampage fetch --no-verify)"; _pagination.py "Ask for
    # PageNumber(size=3, ...) (streampage fetch --size 3)"; sinks/_layout.py "Pass
    # checkpoint='x' (--checkpoint x)", "JSONLines('out/', gzip=True) (--format jsonl.gz)"
    (
        (" (--", " (streampage fetch --"),
        re.compile(
            r"(?:\b[a-z_]+=" + _VALUE + r"|\b[A-Z]\w*" + _CALL_ARGS + r")"
            r" \((?:streampage fetch )?(--[a-z][^()]*)\)"
        ),
        r"\2",
    ),
    # sqlite.py, postgres.py "start the table over (mode='replace', --replace)";
    # distributed/_dask.py "(shard_size=, --shards)", "another job name (job=, --job)"
    (
        ("=, --", "', --"),
        re.compile(r"\(\b[a-z_]+=(?:" + _VALUE + r")?, (--[a-z][a-z-]*)\)"),
        r"(\1)",
    ),
    # _sources.py "... and headers= has an Authorization header too: send one or the other
    # (streampage fetch: -H 'Authorization: ...' or the URL's user:password@, not both)"
    (
        ("headers= has",),
        re.compile(r"headers= has an Authorization header too: (.*?)\(streampage fetch: "),
        r"-H gives an Authorization header too: \1(",
    ),
    # sinks/_layout.py, a file holding another format: "Go on with it as Parquet('x.jsonl'),
    # or write JSON Lines to another file": a file's name says its format on the command line
    (
        ("Go on with it as ",),
        re.compile(
            r"Go on with it as (?:(?:JSONLines|Parquet)\('[^']*'(?:, gzip=True)?\)(?: or )?)+,"
            r" or write\b"
        ),
        "Write",
    ),
    # _pagination.py "PageNumber(stop=2) is before start=5; stop is the last page number";
    # "Offset(stop=2) is before start=5; stop is the offset past the last item"
    (
        ("is before start=",),
        re.compile(r"(?:PageNumber|Offset)\(stop=(-?\d+)\) is before start=(-?\d+); stop is"),
        r"--stop \1 is before --start \2; --stop is",
    ),
    # _pagination.py "PageNumber(total_items=...) needs size= to turn an item count into a
    # page count, e.g. PageNumber(total_items='meta.total', size=100)"
    (
        ("needs size=",),
        re.compile(
            r"PageNumber\(total_items=\.\.\.\) needs size= (.*?), e\.g\. "
            r"PageNumber\(total_items='([^']*)', size=(\d+)\)"
        ),
        r"--total-items needs --size \1, e.g. --total-items \2 --size \3",
    ),
    # A message about some fields of a paginator: _pagination.py "PageNumber(total_pages=
    # 'x'): the first page ... has no field 'x'", "...(total_items=Header('X')): the first
    # response"; _walks.py "Cursor(field='x'): the first page", "Cursor(field='x') holds a
    # whole URL", "Check that Cursor(field='x') names the field"; "PageNumber(size=0) must
    # be at least 1", "Offset(param=..., limit_param=...) must name parameters"
    (
        _KIND_CALLS,
        re.compile(
            rf"\b(?P<kind>{_KINDS}){_CALL_ARGS}"
            r"(?=: the first | must | holds a whole URL| names the field)"
        ),
        _fields,
    ),
    # A paginator as a whole: _auto.py "pages=auto chose PageNumber(total_pages=
    # 'total_pages') for URL", "the first response fits NextURL() and Cursor()"; _walks.py
    # "it looks paginated as Cursor()"; _fingerprint.py (checkpoint of another source)
    # "paginator was \"PageNumber(param='page', size=None, value=n+0)\", now 'Cursor()'"
    (
        _KIND_CALLS,
        re.compile(rf"""(?P<q>["']?)\b(?P<kind>{_KINDS}){_CALL_ARGS}(?P=q)"""),
        _paginator,
    ),
    # Sinks as the -o target that makes them: _into.py "SQLite('x.db', table='t') holds
    # checkpoint ...", "Postgres('postgresql://...', table='t') failed to commit: ...",
    # "JSONLines('x.jsonl') holds checkpoint ... from a finished run"
    (("SQLite(",), re.compile(r"\bSQLite\('((?:[^'\\]|\\.)*)', table='([^']*)'\)"), _sqlite),
    (
        ("Postgres(",),
        re.compile(r"\bPostgres\('((?:[^'\\]|\\.)*)', table='([^']*)'\)"),
        _postgres,
    ),
    (
        ("JSONLines(", "Parquet("),
        re.compile(r"\b(?:JSONLines|Parquet)\('((?:[^'\\]|\\.)*)'\)"),
        r"\1",
    ),
    # _engine.py, a Retry-After too long: "more than RetryPolicy(max_retry_after=60); raise
    # that bound to wait it out, or try again later" (no option raises the bound)
    (
        ("max_retry_after=",),
        re.compile(
            r"more than RetryPolicy\(max_retry_after=([\d.e+]+)\); raise that bound to wait"
            r" it out, or try again later"
        ),
        r"more than the longest wait allowed (\1 s); try again later",
    ),
    # _engine.py 429 and 503: "give retries more time (RetryPolicy)"
    (
        ("(RetryPolicy)",),
        re.compile(r"give retries more time \(RetryPolicy\)"),
        "allow more attempts (--retries)",
    ),
    # _engine.py 4xx before any page: "check the URL, params= and the paginator's parameter
    # names"
    (
        ("params= and",),
        re.compile(r"check the URL, params= and the paginator's parameter names"),
        "check the URL, -p and the paginator's parameter names (--page-param, "
        "--size-param, --cursor-param)",
    ),
    # _engine.py, a page --expect rejected: "validate= raised ValueError: --expect a=b: ..."
    # (the --expect text is protected: this segment ends before it)
    (("validate= raised",), re.compile(r"validate= raised \w+: (?=--expect |$)"), ""),
    # _evidence.py "(name it with items= or records)"
    (
        ("items= or records",),
        re.compile(r"name it with items= or records\b"),
        "name it with --records PATH",
    ),
    # _http.py "larger than max_page_bytes=N (...); raise max_page_bytes if such pages are
    # expected" (the first half by the keyword table below)
    (("raise max_page_bytes",), re.compile(r"raise max_page_bytes\b"), "raise --max-page-bytes"),
    # sinks/parquet.py (in a SinkError) "the records do not fit one Parquet schema (...);
    # pass Parquet(schema=...), a pyarrow.Schema or a msgspec.Struct type"
    (
        ("Parquet(schema=...),",),
        re.compile(r"pass Parquet\(schema=\.\.\.\), a pyarrow\.Schema or a msgspec\.Struct type"),
        "write JSON Lines instead (-o FILE.jsonl), or give the library's Parquet sink a "
        "schema (a pyarrow.Schema or a msgspec.Struct type)",
    ),
    # distributed/_dask.py "cluster='x': say 'local:N' for a local cluster of N workers";
    # "cluster='x': pass None (a local cluster), 'local:N', a scheduler address
    # ('tcp://host:8786') or a distributed.Client"
    (("say 'local:N'",), re.compile(r"say 'local:N'"), "write local:N"),
    (
        ("distributed.Client",),
        re.compile(
            r"pass None \(a local cluster\), 'local:N', a scheduler address \('([^']*)'\) or a"
            r" distributed\.Client"
        ),
        r"write local, local:N or a scheduler's address (\1)",
    ),
    # Timeout(min_rate=1024) (_http.py, a body that drips), Timeout(connect=0),
    # RetryPolicy(attempts=0), RateLimit(burst=0) (_policy.py); _incremental.py "Name the
    # field ... with Incremental(field=...)", "Incremental(param='') must name"
    (
        ("Timeout(", "RetryPolicy(", "RateLimit(", "Incremental("),
        re.compile(r"\b(?P<kind>Timeout|RetryPolicy|RateLimit|Incremental)" + _CALL_ARGS),
        _called,
    ),
    # into(batch=0) must be at least 1; into(checkpoint=''): name the checkpoint (_into.py)
    (("into(",), re.compile(r"\binto\(([a-z_]+=[^()]*)\)"), r"\1"),
    # Every other keyword argument with an option: "pages=auto", "Name one with pages=...",
    # "(or leave pages= out", "check the credentials (headers=)", "lower concurrency= or set
    # rate=", "max_page_bytes=100", "where size=10 was asked", "job='x' must be a name",
    # "cross_origin=True", "concurrency=0 must be", "on_error='x' must be"... (what comes
    # before the name is checked in _keyword: a lookbehind here would make it slow)
    (
        ("=",),
        re.compile(
            r"(?P<name>" + "|".join(_OPTIONS) + r")="
            r"(?P<value>" + _VALUE + r"|auto(?!\w)|(?=[\s),;.]|$))"
        ),
        _keyword,
    ),
    # _walks.py "Pass cross_origin=True to the paginator to follow it anyway"
    (
        ("--cross-origin to the paginator",),
        re.compile(r"--cross-origin to the paginator\b"),
        "--cross-origin",
    ),
]


def speak(text: str) -> str:
    """``text`` (a library message) as the command line says it: options, not keyword
    arguments. The server's text (URLs, body excerpts) is left as it is."""
    out = []
    at = 0
    for protected in _PROTECTED.finditer(text):
        out.append(_translate(text[at : protected.start()]))
        out.append(protected[0])
        at = protected.end()
    out.append(_translate(text[at:]))
    return "".join(out)


def _translate(text: str) -> str:
    if "=" not in text and "(" not in text:
        return text  # every rule's text holds a keyword argument or a call
    for needles, pattern, replacement in _RULES:
        if any(needle in text for needle in needles):
            text = pattern.sub(replacement, text)
    return text

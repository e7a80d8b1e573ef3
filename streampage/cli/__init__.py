"""The ``streampage`` command line (also ``python -m streampage``). The library never imports it.

streampage fetch URL    stream every page of a paginated API into a file, a database or stdout
streampage demo         start the demo API in a subprocess and stream every page of it
streampage serve-demo   run the demo API alone, to try every option of ``fetch`` by hand

Exit codes: 0 every page was fetched (and committed); 1 some pages failed (they are listed)
or the run stopped on an error; 2 bad usage (options, URL, output target); 130 interrupted.
Errors are one line, ``streampage: error: ...``; credentials given with ``-H`` or in the URL
never appear in the output.

One module a job; a command imports what it uses when it runs, so that ``--version`` and
``--help`` load neither aiohttp nor the demo server:

_parser    the argument parser and its option types
_plan      the options of ``fetch`` as the stream's arguments, checked
_targets   output targets (``-o``): which sink, checked before anything is fetched
_records   ``--records``: where a page's records are
_secrets   the credentials the user gave, kept out of every line printed; logging set-up
_fetch     the ``fetch`` command: runs the stream into its target or stdout
_progress  the progress bar (rich, on a terminal) or plain lines
_summary   the summary table, the result line, failed pages, ``--stats-json``
_shards    ``fetch --shards N``: a sharded job on Dask
_demo      the ``demo`` and ``serve-demo`` commands
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from .._errors import ConfigurationError, StreamPageError

__all__ = ["main"]

PROG = "streampage"

#: subcommand -> (its module, its function), imported when the command runs
_COMMANDS = {
    "fetch": ("._fetch", "fetch"),
    "demo": ("._demo", "demo"),
    "serve-demo": ("._demo", "serve_demo"),
}


class UsageError(Exception):
    """Bad usage found after argument parsing: one line on stderr, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    from ._parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_command(args.command)(args))
    except KeyboardInterrupt:
        return 130
    except (UsageError, ConfigurationError) as exc:
        _error(str(exc))
        return 2
    except StreamPageError as exc:
        _error(str(exc))
        return 1


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    module, function = _COMMANDS[name]
    command: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(module, __name__), function
    )
    return command


def _error(message: str) -> None:
    from ._speak import speak

    print(f"{PROG}: error: {_one_line(speak(message))}", file=sys.stderr, flush=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())

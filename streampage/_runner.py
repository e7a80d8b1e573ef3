"""Run a coroutine on the fastest event loop installed: uvloop when the ``speed`` extra is there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory if uvloop is importable, else None (asyncio's default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool | None = None) -> T:
    """Like ``asyncio.run``, on uvloop when it is installed (``pip install streampage[speed]``).

    A library cannot pick its caller's event loop; this is the entry point for scripts that
    want the faster one without a line of set-up. ``use_uvloop=False`` forces asyncio's loop;
    ``True`` fails if uvloop is missing.
    """
    factory = loop_factory() if use_uvloop is not False else None
    if use_uvloop and factory is None:
        raise RuntimeError("uvloop is not installed: pip install 'streampage[speed]'")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)

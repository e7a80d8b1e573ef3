"""Fallback delayed page server, used only when nginx's echo module (``echo_sleep``) is missing.

Serves ``/slow/items?page=N`` from the same page files as nginx, after ``--delay`` seconds,
and ``/slow/cursor?src=K[&cursor=C]`` from the cursor files (no cursor: page 1), on aiohttp +
uvloop. It is much slower per request than nginx: at high concurrency it can
become the bottleneck, which ``bench.py`` says in its output when this server is in use.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages-dir", type=Path, required=True)
    parser.add_argument("--cursor-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    delay: float = args.delay
    pages_dir: Path = args.pages_dir
    cursor_dir: Path = args.cursor_dir
    cache: dict[str, bytes] = {}
    cursor_cache: dict[tuple[str, str], bytes] = {}

    async def items(request: web.Request) -> web.Response:
        number = request.query.get("page", "")
        body = cache.get(number)
        if body is None:
            path = pages_dir / f"{number}.json"
            if not number.isdigit() or not path.is_file():
                raise web.HTTPNotFound()
            body = cache[number] = path.read_bytes()
        await asyncio.sleep(delay)
        return web.Response(body=body, content_type="application/json")

    async def cursor(request: web.Request) -> web.Response:
        key = (request.query.get("src", ""), request.query.get("cursor", "1"))
        body = cursor_cache.get(key)
        if body is None:
            path = cursor_dir / key[0] / f"{key[1]}.json"
            if not (key[0].isdigit() and key[1].isdigit()) or not path.is_file():
                raise web.HTTPNotFound()
            body = cursor_cache[key] = path.read_bytes()
        await asyncio.sleep(delay)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/slow/items", items)
    app.router.add_get("/slow/cursor", cursor)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        backlog=4096,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()

"""A paginated JSON API in a process of its own, for tests/test_distributed.py.

    python tests/page_server.py [--records X] [--per-page M] [--latency S] [--slow-once N:S]

serves on 127.0.0.1, on a free port, and prints ``port P`` (then flushes) once it listens:

- ``GET /items?page=N&per_page=M`` answers ``{"items": [...], "page": N, "total_pages": T,
  "total": X}``: the records ``{"id": i, "name": "item-i"}`` with ids ``(N-1)*M+1 ..
  min(N*M, X)`` (so ids 1..X, each on exactly one page; none past the last page). ``per_page``
  defaults to ``--per-page``. Every page waits ``--latency`` seconds; ``--slow-once N:S``
  makes the *first* request of page N wait S seconds more (a shard that is surely mid-way).
- ``GET /_stats`` answers what the server saw: ``counts`` (requests per page, keys are page
  numbers as text), ``requests`` (one ``[t, page, run, port]`` per page request in arrival
  order: ``t`` is ``time.monotonic()`` at arrival, the same clock as every process of the
  machine on Linux; ``run`` is the ``X-Run`` request header; ``port`` the client's TCP port,
  to find the process that sent it) and ``in_flight`` (page requests being answered now).
- ``POST /_config`` with a JSON object changes ``latency`` while it runs.

It runs until it is terminated (SIGTERM or SIGKILL: it holds nothing worth a clean exit).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import time
from typing import Any

from aiohttp import web


class API:
    def __init__(self, records: int, per_page: int, latency: float, slow: dict[int, float]):
        self.records = records
        self.per_page = per_page
        self.latency = latency
        self.slow = slow
        self.counts: collections.Counter[int] = collections.Counter()
        self.requests: list[tuple[float, int, str, int]] = []
        self.in_flight = 0

    async def items(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        try:
            n = int(request.query.get("page", "1"))
            per_page = int(request.query.get("per_page", str(self.per_page)))
        except ValueError:
            return web.json_response({"error": "page and per_page are whole numbers"}, status=400)
        if per_page < 1:
            return web.json_response({"error": "per_page must be at least 1"}, status=400)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = int(peer[1]) if peer else 0
        self.counts[n] += 1
        self.requests.append((arrived, n, request.headers.get("X-Run", ""), port))
        self.in_flight += 1
        try:
            wait = self.latency
            if self.counts[n] == 1:
                wait += self.slow.get(n, 0.0)
            if wait:
                await asyncio.sleep(wait)
            total_pages = math.ceil(self.records / per_page)
            first = (n - 1) * per_page + 1
            last = min(n * per_page, self.records)
            ids = range(first, last + 1) if n >= 1 else range(0)
            return web.json_response(
                {
                    "items": [{"id": i, "name": f"item-{i}"} for i in ids],
                    "page": n,
                    "total_pages": total_pages,
                    "total": self.records,
                }
            )
        finally:
            self.in_flight -= 1

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "counts": {str(k): v for k, v in sorted(self.counts.items())},
                "requests": self.requests,
                "in_flight": self.in_flight,
            }
        )

    async def config(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        if "latency" in body:
            self.latency = float(body["latency"])
        return web.json_response({"latency": self.latency})


async def serve(api: API) -> None:
    app = web.Application()
    app.router.add_get("/items", api.items)
    app.router.add_get("/_stats", api.stats)
    app.router.add_post("/_config", api.config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(f"port {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()  # until terminated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000, help="records in all (ids 1..X)")
    parser.add_argument("--per-page", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--slow-once", action="append", default=[], metavar="PAGE:SECONDS",
        help="the first request of PAGE waits SECONDS more (may be repeated)",
    )  # fmt: skip
    args = parser.parse_args()
    slow = {int(p): float(s) for p, s in (item.split(":") for item in args.slow_once)}
    asyncio.run(serve(API(args.records, args.per_page, args.latency, slow)))


if __name__ == "__main__":
    main()

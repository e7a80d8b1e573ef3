"""Stream every page of the demo API, typed, in page order.

python examples/basic.py                     # starts the demo API in this process
python examples/basic.py http://127.0.0.1:8080/items   # against `streampage serve-demo`
"""

from __future__ import annotations

import sys

import msgspec

import streampage


class Item(msgspec.Struct):
    id: int
    name: str
    price: float


class ItemsPage(msgspec.Struct):
    total_pages: int
    items: list[Item]


async def main(url: str | None) -> None:
    server = None
    if url is None:
        from streampage.demo import serve

        server, url = await serve(items=5_000, latency=0.005)
    try:
        pages = streampage.PageNumber(start=1, size=50, total_pages="total_pages")
        total = 0.0
        async with streampage.stream(url, pages=pages, decode=ItemsPage, ordered=True) as s:
            async for page in s:
                total += sum(item.price for item in page.data.items)
        print(f"{s.stats.pages} pages in {s.stats.elapsed:.2f} s; sum of prices {total:,.2f}")
    finally:
        if server is not None:
            await server.cleanup()


if __name__ == "__main__":
    streampage.run(main(sys.argv[1] if len(sys.argv) > 1 else None))

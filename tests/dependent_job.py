"""A dependent fetch for tests/test_dependent.py to SIGKILL: for every customer, every page
of its orders, into a sink, resumable.

    python tests/dependent_job.py API KIND TARGET --parents cursor|total --run TAG
        [--resume] [--batch N] [--concurrency N] [--table NAME]

streams the customers of ``API`` (``/customers``, a Cursor walk over ``next``, or
``/customer-pages``, page numbers up to the total ``pages`` of the first page), and for each
customer the pages of ``/customers/{id}/orders`` (page numbers up to its ``pages``), with
``.records("data").into(sink, batch=N, checkpoint="orders", mode="new" | "resume")`` under
``streampage.run``. ``KIND`` is jsonl or sqlite (``TARGET`` a path) or postgres (``TARGET``
a DSN, ``--table`` the table).

``--run`` is sent as the ``X-Run`` header of every request, parents' and children's, so
that the API counts the requests of each run apart (a killed run's requests may still be
answered). After each commit returns, the job prints ``commit`` and flushes, so that the
test can tell how far it got; at the end ``done <records> <resumed_finished>``.
"""

from __future__ import annotations

import argparse

from crash_job import Reporting, make_sink

import streampage
from streampage import Cursor, PageNumber, Source

KINDS = ("jsonl", "sqlite", "postgres")


async def job(args: argparse.Namespace) -> None:
    api = args.api
    if args.parents == "cursor":
        parents = streampage.stream(
            f"{api}/customers",
            pages=Cursor(field="next"),
            concurrency=args.concurrency,
            headers={"X-Run": args.run},
        )
    else:
        parents = streampage.stream(
            f"{api}/customer-pages",
            pages=PageNumber(total_pages="pages"),
            concurrency=args.concurrency,
            headers={"X-Run": args.run},
        )
    orders = (
        parents.records("data")
        .then(
            lambda customer: Source(f"{api}/customers/{customer['id']}/orders", key=customer["id"]),
            pages=PageNumber(total_pages="pages"),
        )
        .records("data")
    )
    sink = Reporting(make_sink(args.kind, args.target, args.table))
    stats = await orders.into(
        sink, batch=args.batch, checkpoint="orders", mode="resume" if args.resume else "new"
    )
    print("done", stats.records, stats.resumed_finished, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("api")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("target")
    parser.add_argument("--parents", choices=("cursor", "total"), required=True)
    parser.add_argument("--run", required=True, help="sent as the X-Run header")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--table", default="orders")
    args = parser.parse_args(argv)
    streampage.run(job(args))


if __name__ == "__main__":
    main()

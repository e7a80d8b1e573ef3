"""streampage at several git revisions and the hand-written loop, in the same interleaved rounds.

``bench.py --rev REV`` measures one revision a run: two runs back to back, minutes apart,
differ by as much as the change being measured (on a shared 2-core machine, ±10% in CPU a
page between runs). This script runs ``clients.py``'s ``streampage`` client from a snapshot
of each revision (``git archive``; ``.`` is the working tree) and the ``handloop`` client,
one after the other in every round, starting with a different one each round, against
servers that ``bench.py --serve`` keeps up, and prints medians::

    python benchmarks/bench.py --serve &          # prints the URLs; SIGTERM stops it
    python benchmarks/versus.py URL/slow/items --revs 0b7cfc7,. --concurrency 50,200,1000

Each run is a fresh process pinned to CPU 1 (``bench.py`` pins nginx to CPU 0), importing
its snapshot only: run from outside the repository, so that no ``streampage`` of the work
tree comes first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from servers import add_allocator_option, allocator_env  # (this folder is first on sys.path)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: added to every client's environment (``--allocator``: servers.allocator_env)
ALLOCATOR: dict[str, str] = {}


def snapshot(rev: str, into: Path) -> Path:
    """streampage as of ``rev`` (``.``: the working tree) in a folder of its own."""
    dest = into / ("work-tree" if rev == "." else rev.replace("/", "_"))
    dest.mkdir(parents=True)
    if rev == ".":
        files = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "streampage"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.split()
        for name in files:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((REPO / name).read_bytes())
    else:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "streampage"], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
    return dest


def run(
    client: str, src: Path | None, url: str, pages: int, concurrency: int
) -> tuple[float, float]:
    """(CPU µs a page, pages/s) of one run in a fresh process."""
    env = {**os.environ, **ALLOCATOR}
    env.pop("PYTHONPATH", None)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    argv = [sys.executable, str(HERE / "clients.py"), client, "--url", url]
    argv += ["--pages", str(pages), "--concurrency", str(concurrency), "--cpu", "1"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd="/")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["cpu_s"] / pages * 1e6, pages / result["wall_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="a page URL of bench.py --serve (without ?page=)")
    parser.add_argument("--revs", default=".", help="git revisions, comma-separated; . = work tree")
    parser.add_argument("--concurrency", default="50", help="comma-separated")
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=6)
    add_allocator_option(parser)
    args = parser.parse_args()
    ALLOCATOR.update(allocator_env(args))
    with tempfile.TemporaryDirectory() as work:
        clients: list[tuple[str, str, Path | None]] = [("hand-written loop", "handloop", None)]
        for rev in args.revs.split(","):
            clients.append((f"streampage {rev}", "streampage", snapshot(rev, Path(work))))
        fixed = "allocator threshold fixed" if ALLOCATOR else "allocator as-is"
        print(
            f"{args.url}, {args.pages:,} pages, medians of {args.rounds} interleaved rounds, "
            f"{fixed}"
        )
        print("| concurrency | client | CPU µs/page | x hand loop | pages/s | x hand loop |")
        print("|--:|---|--:|--:|--:|--:|")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            found: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in clients}
            for round_ in range(args.rounds):
                turn = round_ % len(clients)
                for name, client, src in clients[turn:] + clients[:turn]:
                    found[name].append(run(client, src, args.url, args.pages, concurrency))
            hand_cpu = statistics.median(c for c, _ in found["hand-written loop"])
            hand_rate = statistics.median(r for _, r in found["hand-written loop"])
            for name, _, _ in clients:
                cpu = statistics.median(c for c, _ in found[name])
                rate = statistics.median(r for _, r in found[name])
                print(
                    f"| {concurrency:,} | {name} | {cpu:.0f} | {cpu / hand_cpu:.2f}x "
                    f"| {rate:,.0f} | {rate / hand_rate:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

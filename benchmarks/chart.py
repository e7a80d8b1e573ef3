"""Draw the results file of ``bench.py`` as one PNG: ``make bench-chart`` (``make bench`` too).

Reads ``results/latest.json`` (``--results``: another results file of bench.py) and writes
``results/bench.png`` (``--out``), two panels from the same medians as the tables:

1. pages/s of each client in each throughput and latency scenario, over the hand-written
   loop's (asyncio) in the same scenario: the tables' "x hand (asyncio)" column, as bars
   labelled with the ratio; the whiskers span the client's slowest and fastest round;
2. peak RSS of each client against the page count (the throughput scenarios), log-log.

Nothing is measured here: redrawing takes a second, and needs only matplotlib (the ``bench``
extra), drawn with the Agg backend (no display).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import FuncFormatter, NullFormatter

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: the clients in the order of the tables, with short names for the legend
#: (runs.py's LABELS, shortened to fit); the reference is the hand-written loop on asyncio
REFERENCE = "handloop"
CLIENTS = {
    "streampage": "streampage (asyncio)",
    "streampage-uvloop": "streampage (uvloop)",
    "handloop": "hand-written loop (asyncio)",
    "handloop-uvloop": "hand-written loop (uvloop)",
    "gather": "gather + resp.json()",
    "threads": "threads + requests",
}
#: streampage in blues, the hand-written loop in greys, the other peers in their own colours
COLOURS = {
    "streampage": "#1f5fa8",
    "streampage-uvloop": "#7fb2e5",
    "handloop": "#4d4d4d",
    "handloop-uvloop": "#b3b3b3",
    "gather": "#e0802a",
    "threads": "#3f9b5a",
}
MARKERS = {
    "streampage": "o",
    "streampage-uvloop": "o",
    "handloop": "s",
    "handloop-uvloop": "s",
    "gather": "^",
    "threads": "D",
}


def load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: no results file; run `make bench` first") from None
    return data


def group_label(s: dict[str, Any], ref_pps: float) -> str:
    """The x label of one scenario's bars: what it is, and the reference's pages/s."""
    if s["kind"] == "throughput":
        what = f"{s['pages']:,} pages\nno delay"
    else:
        latency = s["title"].split(" ms", 1)[0]
        what = f"{latency} ms latency\nconcurrency {s['concurrency']}"
    return f"{what}\n(hand loop: {ref_pps:,.0f} pages/s)"


def draw_ratios(ax: Axes, data: dict[str, Any]) -> list[str]:
    """Panel 1: pages/s over the hand-written loop's, per scenario; the clients drawn."""
    scenarios = [s for s in data["scenarios"] if s["kind"] in ("throughput", "latency")]
    drawn: list[str] = []
    if not scenarios:
        ax.text(
            0.5,
            0.5,
            "no throughput or latency scenario in this results file",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return drawn
    width = 0.8 / len(CLIENTS)
    labels, top = [], 1.0
    for i, s in enumerate(scenarios):
        stats = data["summary"].get(s["key"], {})
        ref = stats.get(REFERENCE, {}).get("pages_per_s")
        labels.append(group_label(s, ref) if ref else s["key"])
        present = [c for c in CLIENTS if c in s["clients"]]
        for j, client in enumerate(present):
            st = stats.get(client, {})
            if not ref or "pages_per_s" not in st:
                continue
            ratio = st["pages_per_s"] / ref
            low, high = st["pages_per_s_min"] / ref, st["pages_per_s_max"] / ref
            x = i + (j - (len(present) - 1) / 2) * width
            ax.bar(
                x,
                ratio,
                width * 0.92,
                color=COLOURS[client],
                label=CLIENTS[client] if client not in drawn else None,
            )
            ax.errorbar(
                x,
                ratio,
                yerr=[[ratio - low], [high - ratio]],
                fmt="none",
                ecolor="black",
                elinewidth=0.7,
                capsize=1.5,
            )
            ax.text(
                x, high + 0.02, f"{ratio:.2f}x", ha="center", va="bottom", rotation=90, fontsize=8.5
            )
            top = max(top, high)
            if client not in drawn:
                drawn.append(client)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", zorder=0)
    ax.set_xticks(range(len(scenarios)), labels, fontsize=9)
    ax.set_xlim(-0.55, len(scenarios) - 0.45)
    ax.set_ylim(0, top + 0.3)
    ax.set_ylabel("pages/s ÷ hand-written loop (asyncio)")
    ax.set_title(
        "Pages/s over the hand-written worker loop's, same scenario "
        "(median of rounds; whiskers: slowest-fastest round)",
        fontsize=11,
        loc="left",
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return drawn


def draw_rss(ax: Axes, data: dict[str, Any]) -> None:
    """Panel 2: peak RSS against the page count (throughput scenarios), per client."""
    scenarios = [s for s in data["scenarios"] if s["kind"] == "throughput"]
    if not scenarios:
        ax.text(
            0.5,
            0.5,
            "no throughput scenario in this results file",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return
    pages = sorted({s["pages"] for s in scenarios})
    drawn: list[float] = []
    for client in CLIENTS:
        points = [
            (s["pages"], data["summary"][s["key"]][client]["peak_rss_mb"])
            for s in scenarios
            if "peak_rss_mb" in data["summary"].get(s["key"], {}).get(client, {})
        ]
        if not points:
            continue
        xs, ys = zip(*sorted(points), strict=True)
        drawn += ys
        ax.plot(
            xs,
            ys,
            marker=MARKERS[client],
            color=COLOURS[client],
            linewidth=1.6,
            markersize=5,
            label=CLIENTS[client],
        )
        if client in ("streampage", "gather", "threads"):
            ax.annotate(
                f"{ys[-1]:,.0f} MB" + (" (not run beyond)" if xs[-1] < pages[-1] else ""),
                (xs[-1], ys[-1]),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=8.5,
                color=COLOURS[client],
            )
    ax.set_xscale("log")
    ax.set_xticks(pages, [f"{p:,}" for p in pages])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(pages[0] / 1.6, pages[-1] * 2.5)
    # log RSS too when one client's memory grows by orders of magnitude (gather keeps every
    # page); a linear axis from 0 when they all stay within a few times of each other
    wide = bool(drawn) and max(drawn) >= 4 * min(drawn)
    if wide:
        ax.set_yscale("log")
        minor = {20, 30, 40, 50, 60, 80, 200, 300, 500}
        ax.yaxis.set_minor_formatter(
            FuncFormatter(lambda v, _: f"{v:,.0f}" if round(v) in minor else "")
        )
        ax.tick_params(axis="y", which="minor", labelsize=7.5)
    else:
        ax.set_ylim(0, max(drawn, default=1) * 1.15)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel(f"pages fetched (no delay, concurrency {scenarios[0]['concurrency']})")
    ax.set_ylabel("peak RSS, MB" + (" (log)" if wide else ""))
    ax.set_title("Peak RSS against pages fetched", fontsize=11, loc="left")
    ax.grid(which="both", alpha=0.25)


def subtitle(data: dict[str, Any]) -> str:
    meta = data.get("meta", {})
    rounds = sorted({s["rounds"] for s in data["scenarios"] if s["kind"] == "throughput"})
    packages = meta.get("packages", {})
    parts = [
        f"Python {meta.get('python', '?')}",
        f"{meta.get('cpus', '?')} CPUs ({meta.get('cpu', '?')})",
        f"aiohttp {packages.get('aiohttp', '?')}",
        (meta.get("nginx") or "").replace("nginx version: ", ""),
        f"run {meta.get('started', '?')[:10]}",
    ]
    if rounds:
        parts.append(f"{' or '.join(map(str, rounds))} interleaved rounds")
    return ", ".join(p for p in parts if p)


def shown(path: Path) -> str:
    """``path`` from the repository's root, when it is inside it."""
    path = path.resolve()
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path)


def draw(data: dict[str, Any], source: Path, out: Path) -> None:
    if not any(s["kind"] in ("throughput", "latency") for s in data["scenarios"]):
        raise SystemExit(
            f"{source}: no throughput or latency scenario to draw (a run with --sections?)"
        )
    # constrained layout below the title and the subtitle (drawn by hand at the top)
    layout = ConstrainedLayoutEngine(rect=(0, 0, 1, 0.95))
    fig = plt.figure(figsize=(11, 10.5), layout=layout)
    grid = fig.add_gridspec(2, 2, height_ratios=[1.25, 1], width_ratios=[1.35, 1])
    ratios = fig.add_subplot(grid[0, :])
    rss = fig.add_subplot(grid[1, 0])
    legend = fig.add_subplot(grid[1, 1])
    drawn = draw_ratios(ratios, data)
    draw_rss(rss, data)
    legend.set_axis_off()
    handles, labels = rss.get_legend_handles_labels()
    bar_handles, bar_labels = ratios.get_legend_handles_labels()
    known = dict(zip(labels, handles, strict=True))
    known.update(zip(bar_labels, bar_handles, strict=True))
    order = [CLIENTS[c] for c in CLIENTS if CLIENTS[c] in known]
    if order:
        legend.legend(
            [known[name] for name in order],
            order,
            loc="center left",
            frameon=False,
            fontsize=10.5,
            title="client",
            title_fontproperties={"weight": "bold"},
        )
    if drawn and REFERENCE in drawn:
        legend.text(
            0.02,
            0.08,
            f"Medians from {shown(source)}\n(the tables: {shown(source.with_suffix('.md'))}).\n"
            "Each run is a fresh process, pinned to its own CPU,\n"
            "against nginx (one worker) on the other.",
            transform=legend.transAxes,
            fontsize=9,
            color="#444444",
        )
    fig.suptitle(
        "streampage against the hand-written loop and the usual peers",
        fontsize=14,
        fontweight="bold",
    )
    fig.text(0.5, 0.955, subtitle(data), ha="center", fontsize=9.5, color="#444444")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS / "latest.json",
        help="a results file of bench.py (default results/latest.json)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "bench.png",
        help="the PNG to write (default results/bench.png)",
    )
    args = parser.parse_args()
    draw(load(args.results), args.results, args.out)
    print(f"wrote {args.out} from {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()

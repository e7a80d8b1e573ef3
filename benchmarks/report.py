"""What a benchmark run reports: the markdown tables (medians and ratios, each over its
scenario's reference), the targets with PASS/FAIL, the notes, and the results file
(``results/latest.json``, every run plus the summary; the tables in ``latest.md``), which
``chart.py`` draws.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from runs import LABELS, REFERENCE, SINK_REFERENCE, SINKS_DIR, SOURCES_REFERENCE, label
from scenarios import CLEAN, Scenario
from servers import (
    FIXED_ALLOCATOR,
    HERE,
    PAGE_BYTES,
    PER_PAGE,
    PG_DIR,
    RECORDS_PATH,
    WORK,
    Servers,
    fs_type,
    log,
    server_problems,
)

RESULTS = HERE / "results"

#: what the sources section expects of streampage's wall time over the hand-written loop's
SOURCES_GOAL = 1.05
#: the client each one is compared with "on the same loop"
#: the client each one is compared with "on the same loop"
SAME_LOOP_REFERENCE = {
    "streampage": "handloop",
    "streampage-uvloop": "handloop-uvloop",
    "handloop": "handloop",
    "handloop-uvloop": "handloop-uvloop",
    "gather": "handloop",
}


# ---------------------------------------------------------------------- tables


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render_table(s: Scenario, stats: dict[str, dict[str, Any]]) -> str:
    ref = stats.get(REFERENCE, {}).get("pages_per_s")
    lines = [
        f"### {s.title}",
        "",
        "| client | pages/s | spread | x hand (asyncio) | x hand (same loop) | CPU µs/page "
        "| TTFP ms | peak RSS MB | RSS growth MB | lost | server CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for client in s.clients:
        st = stats.get(client, {})
        if "pages_per_s" not in st:
            lines.append(
                f"| {LABELS[client]} | failed ({st.get('failed_runs', '?')} runs) |" + " |" * 9
            )
            continue
        pps = st["pages_per_s"]
        spread = (st["pages_per_s_max"] - st["pages_per_s_min"]) / pps * 100
        same_ref = SAME_LOOP_REFERENCE.get(client)
        same = stats.get(same_ref or "", {}).get("pages_per_s") if same_ref else None
        lines.append(
            f"| {LABELS[client]} | {pps:,.0f} | ±{spread / 2:.0f}% "
            f"| {_num(pps / ref if ref else None, 2)}x "
            f"| {_num(pps / same if same else None, 2)}{'x' if same else ''} "
            f"| {st['cpu_us_per_page']:.0f} | {_num(st['ttfp_ms'])} | {st['peak_rss_mb']:.1f} "
            f"| {st['rss_growth_mb']:.1f} | {st['lost_max']} | {st['server_cpu_pct']:.0f}% |"
        )
    return "\n".join(lines)


def render_faults_table(s: Scenario, stats: dict[str, dict[str, Any]]) -> str:
    """Pages/s with faults, over the same client's fault-free pages/s; pages lost; retries."""
    lines = [
        f"### {s.title}",
        "",
        "| client | pages/s | spread | x own fault-free | pages lost (worst round) | retries "
        "| CPU µs/page | server CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key in s.run_keys:
        st = stats.get(key, {})
        if "pages_per_s" not in st:
            lines.append(
                f"| {label(key)} | failed ({st.get('failed_runs', '?')} runs) |" + " |" * 6
            )
            continue
        pps = st["pages_per_s"]
        spread = (st["pages_per_s_max"] - st["pages_per_s_min"]) / pps * 100
        clean = stats.get(key + CLEAN, {}).get("pages_per_s") if CLEAN not in key else None
        ratio = f"{pps / clean:.2f}x" if clean else "—"
        retries = f"{st['retries']:,.0f}" if key.startswith("streampage") else "— (none)"
        lines.append(
            f"| {label(key)} | {pps:,.0f} | ±{spread / 2:.0f}% | {ratio} | {st['lost_max']:,} "
            f"| {retries} | {st['cpu_us_per_page']:.0f} | {st['server_cpu_pct']:.0f}% |"
        )
    return "\n".join(lines)


def wall_floor(s: Scenario, latency_ms: float) -> float:
    """The sources scenario's lower bound on wall time: every request takes the latency and
    at most ``concurrency`` are in flight (200 x 20 x 20 ms / 50 = 1.6 s)."""
    return s.pages * latency_ms / 1000 / s.concurrency


def render_sources_table(s: Scenario, stats: dict[str, dict[str, Any]], latency_ms: float) -> str:
    """Wall time, over the hand-written loop's and over the floor; pages/s; CPU; RSS; loss."""
    ref = stats.get(SOURCES_REFERENCE, {}).get("wall_s")
    floor = wall_floor(s, latency_ms)
    lines = [
        f"### {s.title}",
        "",
        "| client | wall s | spread | wall ÷ hand-written | floor ÷ wall | pages/s | CPU µs/page "
        "| TTFP ms | peak RSS MB | pages lost (worst round) | server CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for client in s.clients:
        st = stats.get(client, {})
        if "wall_s" not in st:
            lines.append(
                f"| {LABELS[client]} | failed ({st.get('failed_runs', '?')} runs) |" + " |" * 9
            )
            continue
        wall = st["wall_s"]
        spread = (st["wall_s_max"] - st["wall_s_min"]) / wall * 100
        lines.append(
            f"| {LABELS[client]} | {wall:.3f} | ±{spread / 2:.1f}% "
            f"| {_num(wall / ref if ref else None, 3)}{'x' if ref else ''} "
            f"| {floor / wall * 100:.0f}% | {st['pages_per_s']:,.0f} "
            f"| {st['cpu_us_per_page']:.0f} | {_num(st['ttfp_ms'])} | {st['peak_rss_mb']:.1f} "
            f"| {st['lost_max']:,} | {st['server_cpu_pct']:.0f}% |"
        )
    return "\n".join(lines)


def render_sinks_table(s: Scenario, stats: dict[str, dict[str, Any]]) -> str:
    """Pages/s and records/s into each sink, over the no-sink stream's; CPU; RSS; records."""
    ref = stats.get(SINK_REFERENCE, {}).get("pages_per_s")
    expected = s.pages * PER_PAGE
    lines = [
        f"### {s.title}",
        "",
        "| sink | pages/s | spread | x no sink | records/s | CPU µs/page | peak RSS MB "
        "| RSS growth MB | records in target (fewest) | records lost (worst round) "
        "| extra rows | server CPU | PostgreSQL CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for client in s.clients:
        st = stats.get(client, {})
        if "pages_per_s" not in st:
            lines.append(
                f"| {LABELS[client]} | failed ({st.get('failed_runs', '?')} runs) |" + " |" * 11
            )
            continue
        pps = st["pages_per_s"]
        spread = (st["pages_per_s_max"] - st["pages_per_s_min"]) / pps * 100
        in_target = f"{st['records_in_target_min']:,}"
        if client == SINK_REFERENCE:
            in_target += " (counted)"
        pg = st.get("pg_cpu_pct")
        lines.append(
            f"| {LABELS[client]} | {pps:,.0f} | ±{spread / 2:.0f}% "
            f"| {_num(pps / ref if ref else None, 2)}{'x' if ref else ''} "
            f"| {st['records_per_s']:,.0f} | {st['cpu_us_per_page']:.0f} "
            f"| {st['peak_rss_mb']:.1f} | {st['rss_growth_mb']:.1f} | {in_target} / {expected:,} "
            f"| {st['records_lost_max']:,} | {st['records_extra_max']:,} "
            f"| {st['server_cpu_pct']:.0f}% | {'—' if pg is None else f'{pg:.0f}%'} |"
        )
    return "\n".join(lines)


def observed_fault_rate(stats: dict[str, dict[str, Any]]) -> str:
    """503s over requests as the clients saw them: streampage's retries (+ pages given up)
    over its responses; the non-retrying clients' failed pages over pages asked for."""
    parts = []
    sp = stats.get("streampage", {})
    if sp.get("requests"):
        parts.append(f"{sp['retries_total'] / sp['requests'] * 100:.2f}% of streampage's requests")
    for client in ("handloop", "gather"):
        st = stats.get(client, {})
        if st.get("runs"):
            parts.append(f"{st['lost_median'] / st['pages'] * 100:.2f}% of {client}'s pages")
    return ", ".join(parts) or "—"


# ---------------------------------------------------------------------- targets


def evaluate_targets(
    scenarios: list[Scenario], summary: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and PASS/FAIL."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, ok: bool | None) -> None:
        out.append({"target": target, "measured": measured, "ok": ok})

    def pps(key: str, client: str) -> float | None:
        value = summary.get(key, {}).get(client, {}).get("pages_per_s")
        return float(value) if value is not None else None

    throughput = [s for s in scenarios if s.kind == "throughput"]
    for s in throughput:
        ref = pps(s.key, REFERENCE)
        for client, goal in (("streampage", 0.95), ("streampage-uvloop", 1.15)):
            value = pps(s.key, client)
            if ref and value:
                add(
                    f"{LABELS[client]} ≥ {goal}x hand (asyncio), {s.pages:,} pages",
                    f"{value / ref:.2f}x",
                    value / ref >= goal,
                )
    for s in throughput:
        for client in ("streampage", "streampage-uvloop"):
            st = summary.get(s.key, {}).get(client, {})
            if st.get("ttfp_ms") is not None:
                add(
                    f"{LABELS[client]} first page < 10 ms, {s.pages:,} pages",
                    f"median {st['ttfp_ms']:.1f} ms (worst {st['ttfp_ms_max']:.1f})",
                    st["ttfp_ms"] < 10,
                )
    if len(throughput) >= 2:
        small, big = throughput[0], throughput[-1]
        for client in ("streampage", "streampage-uvloop"):
            a = summary.get(small.key, {}).get(client, {}).get("peak_rss_mb")
            b = summary.get(big.key, {}).get(client, {}).get("peak_rss_mb")
            if a is not None and b is not None:
                add(
                    f"{LABELS[client]} peak RSS at {big.pages:,} within 2 MB of {small.pages:,}",
                    f"{b - a:+.1f} MB ({a:.1f} → {b:.1f})",
                    b - a <= 2,
                )
    for s in scenarios:
        if s.kind != "latency":
            continue
        for client in ("streampage", "streampage-uvloop"):
            ref_client = SAME_LOOP_REFERENCE[client]
            ref, value = pps(s.key, ref_client), pps(s.key, client)
            if ref and value:
                add(
                    f"{LABELS[client]} ≥ 0.95x {LABELS[ref_client]}, {s.title.split(':')[0]}",
                    f"{value / ref:.2f}x",
                    value / ref >= 0.95,
                )
    for s in scenarios:
        if s.kind != "sources":
            continue
        stats = summary.get(s.key, {})
        where = (
            f"{s.sources} sources x {s.pages // s.sources} pages, "
            f"{s.rounds} round{'s' if s.rounds != 1 else ''}"
        )
        sp, hand = stats.get("sources-streampage", {}), stats.get(SOURCES_REFERENCE, {})
        if sp.get("wall_s") and hand.get("wall_s"):
            ratio = sp["wall_s"] / hand["wall_s"]
            by_round = sp.get("x_hand_wall_by_round") or []
            paired = (
                f"; paired by round: median {statistics.median(by_round):.3f}x, "
                f"{min(by_round):.3f}-{max(by_round):.3f}x"
                if by_round
                else ""
            )
            add(
                f"streampage wall time ≤ {SOURCES_GOAL}x the hand-written per-source loop's "
                f"({where}; no fixed target in the issue, a reasonable expectation)",
                f"{ratio:.3f}x (medians {sp['wall_s']:.3f} / {hand['wall_s']:.3f} s{paired})",
                ratio <= SOURCES_GOAL,
            )
        for client in s.clients:
            st = stats.get(client, {})
            failed = st.get("failed_runs", s.rounds)
            if failed or "lost_max" not in st:
                add(f"{LABELS[client]}: all {s.pages:,} pages", f"{failed} runs failed", False)
                continue
            add(
                f"{LABELS[client]}: all {s.pages:,} pages, every round ({where})",
                f"{st['lost_max']:,} lost, {st['errors_max']:,} source errors (worst round)",
                st["lost_max"] == 0 and st["errors_max"] == 0,
            )
    for s in scenarios:
        if s.kind != "faults":
            continue
        stats = summary.get(s.key, {})
        what = f"{s.fault_pct:g}% faults"
        where = f"{s.pages:,} pages, {s.rounds} round{'s' if s.rounds != 1 else ''}"
        sp = stats.get("streampage", {})
        if "streampage" in s.clients:
            # a failed run (no report) counts as lost pages: it delivered nothing we saw
            lost = sp.get("lost_max") if not sp.get("failed_runs") else None
            add(
                f"{LABELS['streampage']} pages lost with {what} = 0 ({where}, worst round)",
                f"{lost:,}" if lost is not None else f"{sp.get('failed_runs')} runs failed",
                lost == 0,
            )
            clean = stats.get("streampage" + CLEAN, {}).get("pages_per_s")
            if sp.get("pages_per_s") and clean:
                by_round = sp.get("x_fault_free_by_round") or []
                paired = (
                    f"; paired by round: median {statistics.median(by_round):.2f}x, "
                    f"{min(by_round):.2f}-{max(by_round):.2f}x"
                    if by_round
                    else ""
                )
                add(
                    f"{LABELS['streampage']} pages/s with {what} ÷ its fault-free pages/s "
                    f"({where})",
                    f"{sp['pages_per_s'] / clean:.2f}x "
                    f"(medians {sp['pages_per_s']:,.0f} / {clean:,.0f}{paired})",
                    None,
                )
        gathered = stats.get("gather", {})
        if gathered.get("lost_max") is not None:
            add(
                f"(context) {LABELS['gather']} pages lost with {what}, no retry ({where})",
                f"{gathered['lost_median']:,.0f} (worst {gathered['lost_max']:,})",
                None,
            )
    for s in scenarios:
        if s.kind != "sinks":
            continue
        stats = summary.get(s.key, {})
        expected = s.pages * PER_PAGE
        where = f"{s.pages:,} pages, {s.rounds} round{'s' if s.rounds != 1 else ''}"
        for client in s.clients:
            st = stats.get(client, {})
            what = (
                "records counted by the `async for`"
                if client == SINK_REFERENCE
                else "records in the target, counted after the run"
            )
            failed = st.get("failed_runs", s.rounds)
            lost, extra = st.get("records_lost_max", expected), st.get("records_extra_max", 0)
            add(
                f"{LABELS[client]}: records lost = 0, none twice ({what}; {where})",
                f"{lost:,} lost, {extra:,} extra of {expected:,} (worst round)"
                + (f"; {failed} runs failed" if failed else ""),
                lost == 0 and extra == 0 and not failed,
            )
        ref = stats.get(SINK_REFERENCE, {}).get("pages_per_s")
        for client in s.clients:
            st = stats.get(client, {})
            if client == SINK_REFERENCE or not ref or not st.get("pages_per_s"):
                continue
            by_round = st.get("x_no_sink_by_round") or []
            paired = (
                f"; paired by round: median {statistics.median(by_round):.2f}x, "
                f"{min(by_round):.2f}-{max(by_round):.2f}x"
                if by_round
                else ""
            )
            add(
                f"(context) pages/s into {LABELS[client]} ÷ no sink ({where}; the issue sets "
                "no threshold)",
                f"{st['pages_per_s'] / ref:.2f}x (medians {st['pages_per_s']:,.0f} / "
                f"{ref:,.0f}{paired})",
                None,
            )
        pg = stats.get("sink-postgres", {})
        if pg.get("records_per_s"):
            add(
                f"(context) rows/s into PostgreSQL (COPY, batch {s.batch:,}, fsync on; {where})",
                f"{pg['records_per_s']:,.0f} rows/s ({pg['pages_per_s']:,.0f} pages/s)",
                None,
            )
    # What the issue says to expect of the baselines on this kind of machine (not targets).
    for s in throughput:
        ref = pps(s.key, REFERENCE)
        gather = pps(s.key, "gather")
        if ref:
            add(
                f"(context) hand (asyncio) 7,500-8,500 pages/s, {s.pages:,} pages",
                f"{ref:,.0f}",
                None,
            )
        if ref and gather:
            add(f"(context) gather ≈ 0.45x hand, {s.pages:,} pages", f"{gather / ref:.2f}x", None)
    if len(throughput) >= 2:
        small, big = throughput[0], throughput[-1]
        a = summary.get(small.key, {}).get("gather", {}).get("peak_rss_mb")
        b = summary.get(big.key, {}).get("gather", {}).get("peak_rss_mb")
        if a is not None and b is not None:
            per_page = (b - a) * 1024 / (big.pages - small.pages)
            add("(context) gather memory grows ≈ 16 KB per page", f"{per_page:.1f} KB/page", None)
    return out


def render_targets(targets: list[dict[str, Any]]) -> str:
    lines = ["### Targets", "", "| target | measured | result |", "|---|--:|:-:|"]
    for t in targets:
        result = "—" if t["ok"] is None else ("PASS" if t["ok"] else "**FAIL**")
        lines.append(f"| {t['target']} | {t['measured']} | {result} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- the report


def machine_info(servers: Servers, pin: bool) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    dists = ["streampage", "aiohttp", "msgspec", "uvloop", "anyio", "requests", "yarl"]
    dists += ["asyncpg", "pyarrow"]  # the sinks section's
    for dist in dists:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "pinned": pin,
        "nginx": servers.nginx_version,
        "slow_server": servers.slow_kind,
        "packages": versions,
    }


def count_lost(all_runs: list[dict[str, Any]]) -> int:
    """Pages (and sink records) lost, and runs failed, that make the whole run suspect."""
    # Pages the non-retrying clients lose to the flaky server are the point of that scenario,
    # not a sign of a broken run; streampage losing any there is a FAIL in the targets.
    expected_loss = {"handloop", "gather"}
    lost: int = sum(
        r.get("lost", 0)
        for r in all_runs
        if not (r["scenario"] == "faults" and r["client"] in expected_loss)
    ) + sum("failed" in r for r in all_runs)
    # a source that delivered a page twice is an error even when no page is missing
    lost += sum(r.get("errors", 0) for r in all_runs if r["scenario"] == "sources")
    # records missing from a sink's target, or in it twice
    lost += sum(
        r.get("records_lost", 0) + r.get("records_extra", 0) + r.get("errors", 0)
        for r in all_runs
        if r["scenario"] == "sinks"
    )
    return lost


def build_notes(
    args: argparse.Namespace,
    scenarios: list[Scenario],
    summary: dict[str, dict[str, dict[str, Any]]],
    servers: Servers,
    pin: bool,
    problems: list[str],
    lost: int,
    sink_warnings: list[str],
) -> list[str]:
    """The notes under the tables: how it was measured, and any warning."""
    rounds = " or ".join(str(n) for n in sorted({s.rounds for s in scenarios}))
    notes = [
        f"Medians of {rounds} interleaved rounds (client order rotated each round); each run "
        "is a fresh process. Spread is ±half the min-max range of pages/s.",
    ]
    if args.allocator == "fixed":
        notes.append(
            "glibc's mmap threshold fixed for every client ("
            + ", ".join(f"{k}={v}" for k, v in FIXED_ALLOCATOR.items())
            + "): otherwise asyncio's 256 KiB read buffers cost a client mmap, mremap and "
            "munmap a read (~20 µs a page) or not, by the luck of its allocation history "
            "(docs/performance.md); `--allocator as-is` leaves it."
        )
    else:
        notes.append(
            "glibc's mmap threshold left as each client's allocation history sets it "
            "(`--allocator as-is`): asyncio clients' ratios carry up to ±15% of that luck."
        )
    if any(s.kind in ("throughput", "latency") for s in scenarios):
        notes += [
            "x hand (asyncio): pages/s over the hand-written loop on asyncio's loop, same "
            "scenario. x hand (same loop): over the hand-written loop on the client's own "
            "event loop.",
            "TTFP: start of the fetch to the first decoded page in the consumer's hands (gather: "
            "when gather returns). RSS growth: peak RSS minus RSS after imports.",
        ]
    delayed = any(s.slow for s in scenarios)
    notes += [
        "Server CPU: nginx worker CPU time over the client's wall time (100% = server-bound).",
        f"Client pinned to CPU 1, server to CPU 0: {pin}."
        + (f" Delayed server: {servers.slow_kind}." if delayed else ""),
    ]
    if problems or lost:
        notes.insert(
            0,
            f"**WARNING**: {lost} pages (or sink records) lost or runs failed; nginx logged "
            f"{len(problems)} "
            f"errors (first: {problems[0] if problems else 'none'}). The numbers are suspect.",
        )
    else:
        notes.append("No page lost, no run failed, nginx logged no error.")
    faults = next((s for s in scenarios if s.kind == "faults"), None)
    if faults is not None:
        backoff = (
            "its default RetryPolicy() (10 attempts, equal-jitter backoff from 20 ms)"
            if args.retry_backoff is None
            else f"RetryPolicy(backoff={args.retry_backoff:g})"
        )
        notes.append(
            f"Faults: nginx answers {faults.fault_pct:g}% of requests to /flaky/items with a 503, "
            f"drawn per request (observed: {observed_fault_rate(summary[faults.key])}). "
            f"streampage uses {backoff} and on_error='raise'; the hand-written loop and gather "
            "do not retry, so their failed pages are lost pages (expected there, not a warning). "
            "x own fault-free: median pages/s over the same client's median against /items, "
            "run right next to it in every round. Retries: median per run."
        )
    many = next((s for s in scenarios if s.kind == "sources"), None)
    if many is not None:
        notes.append(
            f"Sources: {many.sources} cursor walks of {many.pages // many.sources} pages from "
            f"/slow/cursor?src=K&cursor=C ({args.latency_ms:g} ms each; the first request of a "
            "walk has no cursor and the server answers page 1), fetched by one streampage.stream("
            f"sources, pages=Cursor(), concurrency={many.concurrency}) and by a hand-written "
            "coroutine per source, all gathered, each request under one "
            f"asyncio.Semaphore({many.concurrency}), TCPConnector(limit={many.concurrency}). "
            "Wall times are medians (spread: ±half their min-max range); wall ÷ hand-written "
            "is the ratio of the medians; floor: "
            f"pages x latency / concurrency = {wall_floor(many, args.latency_ms):.2f} s. "
            "Pages lost counts each source's missing pages, worst round."
        )
    sinks = next((s for s in scenarios if s.kind == "sinks"), None)
    if sinks is not None:
        notes += sink_warnings
        notes.append(
            f"Sinks: pages 1..{sinks.pages:,} from /items (nginx), concurrency "
            f"{sinks.concurrency}, records at {RECORDS_PATH!r} ({PER_PAGE} a page), each run a "
            "fresh process (streampage.run, asyncio's loop) writing to a fresh target: a new "
            f"directory under {SINKS_DIR.relative_to(HERE.parent)} on {fs_type(WORK)}, or a new "
            "schema (table and checkpoints table) in PostgreSQL; the page cache is flushed "
            "(sync) before each run. The timed span runs from before the stream exists to "
            "after into() returns: the sink's open, every batch and commit (with its "
            "checkpoint), and its close (Parquet merges its parts there). x no sink: median "
            "pages/s over the median of the no-sink stream (the same .records() extraction, "
            "drained by a plain async for that counts records). Records in target: counted "
            "after each run by another fresh process reading the target back (JSON Lines "
            "lines, SQLite and PostgreSQL rows, Parquet rows); lost = expected records it "
            "lacks, extra = rows beyond them (duplicates). CPU µs/page is the client "
            "process's (sink threads included); PostgreSQL CPU: the cluster's processes, "
            "over the client's wall time."
        )
        if servers.pg is not None:
            st = servers.pg.settings
            notes.append(
                f"PostgreSQL {st.get('server_version')}: a throwaway cluster started for this "
                f"section (initdb in {PG_DIR.relative_to(HERE.parent)}"
                + (", pinned with nginx to CPU 0" if pin else "")
                + "), reached over TCP at 127.0.0.1 (as a database is from an application). "
                f"fsync={st.get('fsync')}, synchronous_commit={st.get('synchronous_commit')}, "
                f"full_page_writes={st.get('full_page_writes')}, wal_sync_method="
                f"{st.get('wal_sync_method')}, shared_buffers={st.get('shared_buffers')}: "
                "PostgreSQL's defaults, because the sinks promise durable commits (JSON Lines "
                "and Parquet fsync each commit, SQLite runs synchronous=FULL), and a "
                "PostgreSQL sink without fsync would not keep that promise, nor be comparable. "
                "CHECKPOINT before each run, so none lands in another run's span."
            )
    if any("threads" in s.clients for s in scenarios):
        notes.append(
            f"threads + requests is skipped above {args.threads_max_pages:,} pages "
            "(--threads-max-pages), to keep the default run short."
        )
    return notes


def render_report(
    args: argparse.Namespace,
    source: str,
    info: dict[str, Any],
    scenarios: list[Scenario],
    summary: dict[str, dict[str, dict[str, Any]]],
    targets: list[dict[str, Any]],
    notes: list[str],
) -> str:
    """The markdown report: a heading, the machine, a table per scenario, targets, notes."""
    return "\n\n".join(
        [
            f"## streampage benchmark: {source}",
            f"Python {info['python']}, {info['cpus']} CPUs ({info['cpu']}), {info['nginx']}, "
            f"{', '.join(f'{k} {v}' for k, v in info['packages'].items() if k != 'streampage')}",
            *(
                render_faults_table(s, summary[s.key])
                if s.kind == "faults"
                else render_sources_table(s, summary[s.key], args.latency_ms)
                if s.kind == "sources"
                else render_sinks_table(s, summary[s.key])
                if s.kind == "sinks"
                else render_table(s, summary[s.key])
                for s in scenarios
            ),
            render_targets(targets),
            "\n".join(f"- {n}" for n in notes),
        ]
    )


def write_report(
    args: argparse.Namespace,
    scenarios: list[Scenario],
    summary: dict[str, dict[str, dict[str, Any]]],
    all_runs: list[dict[str, Any]],
    servers: Servers,
    pin: bool,
    source: str,
    started: float,
    sink_warnings: list[str],
) -> None:
    """Print the report on stdout; write it, with every run, to ``args.out`` (and ``.md``)."""
    targets = evaluate_targets(scenarios, summary)
    problems = server_problems()
    lost = count_lost(all_runs)
    info = machine_info(servers, pin)
    info["streampage_source"] = source
    if servers.pg is not None:
        info["postgres"] = servers.pg.settings
    notes = build_notes(args, scenarios, summary, servers, pin, problems, lost, sink_warnings)
    report_md = render_report(args, source, info, scenarios, summary, targets, notes)
    print(report_md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "meta": {
            **info,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
            "page_bytes": PAGE_BYTES,
        },
        "scenarios": [s.__dict__ for s in scenarios],
        "summary": summary,
        "targets": targets,
        "server_errors": problems[:50],
        "runs": all_runs,
    }
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=list) + "\n")
    tmp.replace(args.out)
    md = args.out.with_suffix(".md")
    md_tmp = md.with_suffix(".md.tmp")
    md_tmp.write_text(report_md + "\n")
    md_tmp.replace(md)
    log(f"wrote {args.out} and {md} in {payload['meta']['duration_s']:.0f} s")

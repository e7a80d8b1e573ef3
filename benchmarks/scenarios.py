"""What a benchmark run runs: the scenarios (built from the command line), the preflight,
the rounds (interleaved, the client order rotated each round) and the medians over them.

Sections: ``throughput`` (one scenario per page count), ``latency`` (one per concurrency,
against the delayed endpoint), ``faults`` (the flaky endpoint), ``sources`` (cursor walks)
and ``sinks`` (``.records("items").into(sink)``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runs import (
    ALL_CLIENTS,
    REFERENCE,
    SINK_REFERENCE,
    SINKS,
    SOURCES_CLIENTS,
    SOURCES_REFERENCE,
    run_client,
    run_sink_client,
)
from servers import PAGES_DIR, PER_PAGE, RECORDS_PATH, Servers, log, start_postgres

SECTIONS = ("throughput", "latency", "faults", "sources", "sinks")
#: clients run against the flaky endpoint (those of them chosen with --clients)
FAULT_CLIENTS = ("streampage", "handloop", "gather")
#: of those, the ones also run fault-free in the same rounds, for "x own fault-free"
FAULT_BASELINE_CLIENTS = ("streampage",)
#: suffix of a run key for a client's fault-free run inside the faults scenario
CLEAN = "@clean"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # "throughput", "latency", "faults", "sources" or "sinks"
    pages: int
    concurrency: int
    slow: bool
    clients: tuple[str, ...]
    #: clients also run against the fault-free endpoint in the same rounds (faults only)
    clean_clients: tuple[str, ...] = ()
    #: percentage of requests the server fails with a 503 (faults only)
    fault_pct: float = 0.0
    rounds: int = 3
    #: cursor sources the pages are spread over, ``pages // sources`` each (sources only)
    sources: int = 0
    #: records per commit, ``into(sink, batch=...)`` (sinks only)
    batch: int = 0

    @property
    def run_keys(self) -> tuple[str, ...]:
        """What runs each round: the clients, then the fault-free runs (``client@clean``)."""
        return (*self.clients, *(c + CLEAN for c in self.clean_clients))


def build_scenarios(args: argparse.Namespace, clients: list[str]) -> list[Scenario]:
    sections = args.sections.split(",")
    scenarios = []
    sizes = sorted({int(x) for x in args.sizes.split(",") if x})
    for n in sizes if "throughput" in sections else []:
        chosen = [c for c in clients if c != "threads" or n <= args.threads_max_pages]
        scenarios.append(
            Scenario(
                key=f"throughput-{n}",
                title=f"{n:,} pages of ~2 KB, concurrency {args.concurrency}, no delay",
                kind="throughput",
                pages=n,
                concurrency=args.concurrency,
                slow=False,
                clients=tuple(chosen),
                rounds=args.rounds,
            )
        )
    latency = [int(x) for x in args.latency_concurrency.split(",") if x]
    for c in latency if "latency" in sections else []:
        ceiling = c / (args.latency_ms / 1000)
        scenarios.append(
            Scenario(
                key=f"latency-{c}",
                title=(
                    f"{args.latency_ms:g} ms latency, concurrency {c}: {args.latency_pages:,} "
                    f"pages (ceiling {ceiling:,.0f} pages/s)"
                ),
                kind="latency",
                pages=args.latency_pages,
                concurrency=c,
                slow=True,
                clients=tuple(
                    c2
                    for c2 in clients
                    if c2 != "threads" or args.latency_pages <= args.threads_max_pages
                ),
                rounds=args.rounds,
            )
        )
    if "faults" in sections:
        fault_clients = tuple(c for c in FAULT_CLIENTS if c in clients)
        backoff = "default" if args.retry_backoff is None else f"backoff={args.retry_backoff:g}"
        scenarios.append(
            Scenario(
                key="faults",
                title=(
                    f"{args.fault_rate:g}% transient faults (HTTP 503 at random): "
                    f"{args.fault_pages:,} pages, concurrency {args.concurrency}, no delay; "
                    f"streampage's retry policy: {backoff}"
                ),
                kind="faults",
                pages=args.fault_pages,
                concurrency=args.concurrency,
                slow=False,
                clients=fault_clients,
                clean_clients=tuple(c for c in FAULT_BASELINE_CLIENTS if c in fault_clients),
                fault_pct=args.fault_rate,
                rounds=args.fault_rounds,
            )
        )
    if "sources" in sections:
        n = args.source_count * args.source_pages
        floor = n * args.latency_ms / 1000 / args.concurrency
        scenarios.append(
            Scenario(
                key="sources",
                title=(
                    f"{args.source_count} sources x {args.source_pages} pages by cursor, "
                    f"{args.latency_ms:g} ms latency, concurrency {args.concurrency}: "
                    f"{n:,} pages (floor {floor:.2f} s)"
                ),
                kind="sources",
                pages=n,
                concurrency=args.concurrency,
                slow=True,
                clients=SOURCES_CLIENTS,
                rounds=args.source_rounds,
                sources=args.source_count,
            )
        )
    if "sinks" in sections:
        scenarios.append(
            Scenario(
                key="sinks",
                title=(
                    f"Sinks: {args.sink_pages:,} pages of ~2 KB ({PER_PAGE} records each, "
                    f"{args.sink_pages * PER_PAGE:,} records), concurrency {args.concurrency}, "
                    f"no delay; .records({RECORDS_PATH!r}).into(sink, batch={args.sink_batch:,})"
                ),
                kind="sinks",
                pages=args.sink_pages,
                concurrency=args.concurrency,
                slow=False,
                clients=tuple(SINKS[x] for x in args.sinks.split(",")),
                rounds=args.sink_rounds,
                batch=args.sink_batch,
            )
        )
    return scenarios


def prepare_sinks(
    scenarios: list[Scenario], servers: Servers, args: argparse.Namespace
) -> tuple[list[Scenario], list[str]]:
    """Start PostgreSQL when the sinks section has its client; without a cluster (no
    PostgreSQL here, none installable), leave that client out and say so."""
    out, warnings = [], []
    for s in scenarios:
        if s.kind == "sinks" and "sink-postgres" in s.clients:
            log("starting a throwaway PostgreSQL cluster (fsync on) for the sinks section ...")
            if start_postgres(servers, install=not args.no_install) is None:
                warnings.append(
                    "**WARNING**: no PostgreSQL server binaries (initdb, pg_ctl) here, and "
                    "none could be installed (apt-get install postgresql, as root): the "
                    "PostgreSQL sink was not measured."
                )
                s = replace(s, clients=tuple(c for c in s.clients if c != "sink-postgres"))
            else:
                assert servers.pg is not None
                log(f"PostgreSQL {servers.pg.settings.get('server_version')} at {servers.pg.dsn}")
        out.append(s)
    return out, warnings


def check_page_records() -> None:
    """The sink clients take each page's records at RECORDS_PATH: the page files must have
    them there, a list of PER_PAGE records with ids."""
    doc = json.loads((PAGES_DIR / "1.json").read_bytes())
    items = doc.get(RECORDS_PATH) if isinstance(doc, dict) else None
    if not (
        isinstance(items, list)
        and len(items) == PER_PAGE
        and all(isinstance(r, dict) and "id" in r for r in items)
    ):
        raise SystemExit(
            f"preflight: {PAGES_DIR / '1.json'} has no {RECORDS_PATH!r} list of {PER_PAGE} "
            f"records with an id: the sink clients' extraction path does not fit the pages"
        )


def preflight(scenarios: list[Scenario], servers: Servers, cpu: int | None, src: Path) -> None:
    """Run every client once on a few pages (which also warms the server): fail in seconds,
    not after minutes, when a client or the code under test is broken."""
    clients = sorted(
        {c for s in scenarios if s.kind not in ("sources", "sinks") for c in s.clients},
        key=ALL_CLIENTS.index,
    )
    checks = [(c, servers.fast_url) for c in clients]
    if any(s.kind == "latency" for s in scenarios):
        checks.append((REFERENCE, servers.slow_url))
    for client, url in checks:
        report = run_client(client, url, 200, 50, cpu, [], src)
        if "failed" in report or report["lost"]:
            detail = report.get("failed") or f"{report['lost']} pages lost: {report['first_error']}"
            raise SystemExit(f"preflight: {client} against {url} failed: {detail}")
    if any(s.kind == "faults" for s in scenarios):
        # The flaky endpoint must fail some requests, with 503: the hand-written
        # loop does not retry, so at 5% it loses ~25 of 500 pages (none: P = 0.95^500 < 1e-11).
        report = run_client(REFERENCE, servers.flaky_url, 500, 50, cpu, [], src)
        first = str(report.get("first_error"))
        if "failed" in report or not report["lost"] or "HTTP 503" not in first:
            detail = report.get("failed") or f"{report['lost']} of 500 pages lost ({first})"
            raise SystemExit(f"preflight: {servers.flaky_url} does not inject 503s: {detail}")
    if any(s.kind == "sources" for s in scenarios):
        # 10 sources of 20 pages: every cursor chain followed to its end, by both clients,
        # undelayed; then the delayed endpoint once (5 sources: 100 pages in ~0.4 s).
        checks = [(c, servers.cursor_url, 10) for c in SOURCES_CLIENTS]
        checks.append((SOURCES_REFERENCE, servers.slow_cursor_url, 5))
        per_source = next(s.pages // s.sources for s in scenarios if s.kind == "sources")
        for client, url, count in checks:
            report = run_client(client, url, count * per_source, 50, cpu, [], src, sources=count)
            if "failed" in report or report["lost"] or report["errors"]:
                detail = report.get("failed") or (
                    f"{report['lost']} pages lost, {report['errors']} errors: "
                    f"{report['first_error']}"
                )
                raise SystemExit(f"preflight: {client} against {url} failed: {detail}")
    for s in scenarios:
        if s.kind != "sinks":
            continue
        # every sink once, on 100 pages: into a fresh target, then counted in it
        check_page_records()
        small = Scenario(**{**s.__dict__, "pages": 100, "rounds": 1})
        for serial, client in enumerate(s.clients, start=9000):
            report = run_sink_client(
                client, servers.fast_url, small, cpu, [], src, servers.pg, serial
            )
            if "failed" in report or report["lost"] or report["records_lost"] or report["errors"]:
                detail = report.get("failed") or (
                    f"{report['records_lost']} of {100 * PER_PAGE} records lost, "
                    f"{report.get('errors')} errors: {report.get('first_error')} "
                    f"{report.get('verify', {}).get('error', '')}"
                )
                raise SystemExit(f"preflight: {client} failed: {detail}")


# ---------------------------------------------------------------------- rounds


def rotated(items: tuple[str, ...], by: int) -> list[str]:
    """Each round starts with a different client, so no client always runs first or last."""
    by %= len(items)
    return [*items[by:], *items[:by]]


def round_order(s: Scenario, rnd: int) -> list[str]:
    """The run keys of one round, rotated; a client's fault-free run goes right next to its
    run against the flaky server (before it in odd rounds, after in even ones), so that the
    two runs of one ratio see the same machine, whatever drifts between rounds."""
    units: list[tuple[str, ...]] = []
    for client in s.clients:
        if client in s.clean_clients:
            pair = (client, client + CLEAN)
            units.append(pair[::-1] if rnd % 2 else pair)
        else:
            units.append((client,))
    by = rnd % len(units)
    return [key for unit in [*units[by:], *units[:by]] for key in unit]


def run_scenarios(
    scenarios: list[Scenario],
    servers: Servers,
    client_cpu: int | None,
    src: Path,
    retry_backoff: float | None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
    """Every scenario, round by round: each run's report (in the order run), and per
    scenario, per run key, the medians over its rounds (with the paired ratios)."""
    all_runs: list[dict[str, Any]] = []
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    serial = 0
    for s in scenarios:
        pids = servers.slow_pids if s.slow else servers.fast_pids
        runs: dict[str, list[dict[str, Any]]] = {key: [] for key in s.run_keys}
        for rnd in range(s.rounds):
            for key in round_order(s, rnd):
                client = key.partition("@")[0]
                if s.kind == "sinks":
                    serial += 1
                    report = run_sink_client(
                        client,
                        servers.fast_url,
                        s,
                        client_cpu,
                        pids,
                        src,
                        servers.pg,
                        serial,
                    )
                    report.update(scenario=s.key, round=rnd, run=key, url=servers.fast_url)
                    runs[key].append(report)
                    all_runs.append(report)
                    log(fmt_progress(s, rnd, s.rounds, report))
                    continue
                if s.kind == "sources":
                    url = servers.slow_cursor_url
                elif s.slow:
                    url = servers.slow_url
                elif s.kind == "faults" and not key.endswith(CLEAN):
                    url = servers.flaky_url
                else:
                    url = servers.fast_url
                report = run_client(
                    client,
                    url,
                    s.pages,
                    s.concurrency,
                    client_cpu,
                    pids,
                    src,
                    retry_backoff,
                    sources=s.sources,
                )
                report.update(scenario=s.key, round=rnd, run=key, url=url)
                runs[key].append(report)
                all_runs.append(report)
                log(fmt_progress(s, rnd, s.rounds, report))
        summary[s.key] = {key: summarise(r) for key, r in runs.items()}
        for key in s.clean_clients:
            ratios = paired_ratios(runs[key] + runs[key + CLEAN], key)
            summary[s.key][key]["x_fault_free_by_round"] = ratios
        if s.kind == "sources":
            ratios = paired_wall_ratios(
                runs["sources-streampage"] + runs[SOURCES_REFERENCE],
                "sources-streampage",
                SOURCES_REFERENCE,
            )
            summary[s.key]["sources-streampage"]["x_hand_wall_by_round"] = ratios
        if s.kind == "sinks":
            for key in s.clients:
                summary[s.key][key].update(summarise_sink(runs[key]))
                summary[s.key][key]["x_no_sink_by_round"] = paired_pps_ratios(
                    runs[key] + runs[SINK_REFERENCE], key, SINK_REFERENCE
                )
    return all_runs, summary


def fmt_progress(s: Scenario, rnd: int, rounds: int, r: dict[str, Any]) -> str:
    head = f"[{s.key} {rnd + 1}/{rounds}] {r.get('run', r['client']):<18}"
    if "failed" in r:
        return f"{head} FAILED: {r['failed']}"
    pps = r["pages"] / r["wall_s"] if r["wall_s"] else 0
    ttfp = r["ttfp_ms"]
    return (
        f"{head} {pps:8.0f} pages/s  cpu {r['cpu_s'] / max(r['pages'], 1) * 1e6:6.1f} µs/page  "
        + (
            ""
            if s.kind == "sinks"
            else f"ttfp {ttfp if ttfp is not None else float('nan'):7.1f} ms  "
        )
        + f"rss {r['peak_rss_mb']:6.1f} MB  lost {r['lost']}  "
        f"server {r['server_cpu_s'] / r['wall_s'] * 100 if r['wall_s'] else 0:3.0f}%"
        + (f"  retries {r['retries']}" if r.get("retries") else "")
        + (f"  wall {r['wall_s']:.3f} s" if s.kind == "sources" else "")
        + (f"  errors {r['errors']}" if r.get("errors") and s.kind == "sources" else "")
        + (
            f"  records {r.get('records') or 0:,} in target {r['records_in_target']:,} "
            f"lost {r['records_lost']:,} extra {r['records_extra']:,}"
            if s.kind == "sinks"
            else ""
        )
        + (
            f"  pg {r['pg_cpu_s'] / r['wall_s'] * 100:3.0f}%"
            if r.get("pg_cpu_s") is not None and r["wall_s"]
            else ""
        )
    )


# ---------------------------------------------------------------------- medians


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of each measurement; pages lost is the worst round."""
    ok = [r for r in runs if "failed" not in r]
    out: dict[str, Any] = {"runs": len(runs), "failed_runs": len(runs) - len(ok)}
    if runs:
        out["pages"] = runs[0]["pages_expected"]
    if not ok:
        return out
    pps = [r["pages"] / r["wall_s"] for r in ok]
    walls = [r["wall_s"] for r in ok]
    ttfps = [r["ttfp_ms"] for r in ok if r["ttfp_ms"] is not None]
    out.update(
        pages_per_s=statistics.median(pps),
        pages_per_s_min=min(pps),
        pages_per_s_max=max(pps),
        wall_s=statistics.median(walls),
        wall_s_min=min(walls),
        wall_s_max=max(walls),
        errors_max=max(r.get("errors", 0) for r in ok),
        cpu_us_per_page=statistics.median(r["cpu_s"] / max(r["pages"], 1) * 1e6 for r in ok),
        ttfp_ms=statistics.median(ttfps) if ttfps else None,
        ttfp_ms_max=max(ttfps) if ttfps else None,
        peak_rss_mb=statistics.median(r["peak_rss_mb"] for r in ok),
        rss_growth_mb=statistics.median(r["peak_rss_mb"] - r["rss_before_mb"] for r in ok),
        lost_max=max(r["lost"] for r in ok),
        lost_median=statistics.median(r["lost"] for r in ok),
        retries=statistics.median(r.get("retries", 0) for r in ok),
        requests=sum(r["requests"] for r in ok if r.get("requests") is not None),
        retries_total=sum(r.get("retries", 0) for r in ok),
        server_cpu_pct=statistics.median(r["server_cpu_s"] / r["wall_s"] * 100 for r in ok),
    )
    return out


def summarise_sink(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the sinks table adds to summarise(): records/s, and records lost/extra."""
    ok = [r for r in runs if "failed" not in r and r.get("wall_s")]
    out: dict[str, Any] = {
        # a failed run counts whatever its target lacks; a run with no report, everything
        "records_lost_max": max((r.get("records_lost", 0) for r in runs), default=0),
        "records_extra_max": max((r.get("records_extra", 0) for r in runs), default=0),
        "records_in_target_min": min((r.get("records_in_target", 0) for r in runs), default=0),
    }
    if ok:
        out["records_per_s"] = statistics.median((r.get("records") or 0) / r["wall_s"] for r in ok)
        pg = [r["pg_cpu_s"] / r["wall_s"] * 100 for r in ok if r.get("pg_cpu_s") is not None]
        out["pg_cpu_pct"] = statistics.median(pg) if pg else None
    return out


def paired_ratios(runs: list[dict[str, Any]], key: str) -> list[float]:
    """Per round, pages/s of ``key`` over pages/s of its fault-free run in the same round."""
    pps: dict[tuple[str, int], float] = {}
    for r in runs:
        if "failed" not in r and r.get("wall_s"):
            pps[(r["run"], r["round"])] = r["pages"] / r["wall_s"]
    rounds = sorted({rnd for run, rnd in pps if run == key})
    return [
        pps[(key, rnd)] / pps[(key + CLEAN, rnd)] for rnd in rounds if (key + CLEAN, rnd) in pps
    ]


def paired_wall_ratios(runs: list[dict[str, Any]], key: str, ref: str) -> list[float]:
    """Per round, the wall time of ``key`` over that of ``ref`` in the same round."""
    walls = {(r["run"], r["round"]): r["wall_s"] for r in runs if "failed" not in r}
    rounds = sorted({rnd for run, rnd in walls if run == key})
    return [walls[(key, rnd)] / walls[(ref, rnd)] for rnd in rounds if (ref, rnd) in walls]


def paired_pps_ratios(runs: list[dict[str, Any]], key: str, ref: str) -> list[float]:
    """Per round, pages/s of ``key`` over pages/s of ``ref`` in the same round."""
    pps = {
        (r["run"], r["round"]): r["pages"] / r["wall_s"]
        for r in runs
        if "failed" not in r and r.get("wall_s")
    }
    rounds = sorted({rnd for run, rnd in pps if run == key})
    return [pps[(key, rnd)] / pps[(ref, rnd)] for rnd in rounds if (ref, rnd) in pps]

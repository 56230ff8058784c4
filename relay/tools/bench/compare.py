"""`relay bench --peer NAME`: the relay and a peer (Fluent Bit, Vector) on the same job, turn about, one table.

Each turn is a whole bench run (fresh lean sink, fresh process under test, the same
pre-built bodies and clients, drain, id check), and turns alternate relay, peer, relay,
peer... for `--rounds`, so that whatever else the machine does falls on both alike. The
sink is the lean counting one for both, with no cap on entries per request (a peer
sends a whole chunk at once). Without the peer's binary the command says so on one line
and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from relay.tools.bench.peers import PEERS, config, find_binary, settings, start_peer, version
from relay.tools.bench.processes import BenchError, Run, start_processes

PLACEHOLDER_PORT, PLACEHOLDER_UPSTREAM = 8080, "http://127.0.0.1:9000/v1/logs/custom"


def run_peer(args: argparse.Namespace, measure: Any) -> int:
    """`measure(run, start)` is relay.tools.bench.command.measure (passed in: no import cycle)."""
    peer = PEERS[args.peer]
    binary, how = find_binary(peer)
    if binary is None:
        return _skip(args, peer.name, how)
    args.upstream = "sink"
    workdir = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="relay-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shm = Path("/dev/shm")
    records = workdir if args.keep or not shm.is_dir() else Path(tempfile.mkdtemp(prefix="relay-bench-", dir=shm))
    turns: list[dict[str, Any]] = []
    try:
        for round_ in range(1, args.rounds + 1):
            for subject in ("relay", peer.name):
                turn_dir = workdir / f"round{round_}-{subject}"
                turn_dir.mkdir(parents=True, exist_ok=True)
                record = None if args.no_verify else records / f"round{round_}-{subject}.ids"
                bench = Run(args, turn_dir, record, subject=subject)
                start = start_processes if subject == "relay" else functools.partial(
                    start_peer, peer=peer, binary=binary)
                try:
                    result = measure(bench, start)
                finally:
                    for child in reversed(list(bench.children.values())):
                        child.stop(10)
                    if record is not None and not args.keep:
                        record.unlink(missing_ok=True)
                result.update(subject=subject, round=round_,
                              cpu_us_per_delivered_entry=_cpu_us_per_delivered(result))
                turns.append(result)
    except BenchError as exc:
        print(f"relay bench: {exc}", file=sys.stderr)
        return 2
    finally:
        if records != workdir:
            shutil.rmtree(records, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    out = {
        "peer": peer.name, "peer_binary": str(binary), "peer_found_by": how, "peer_version": version(binary),
        "peer_settings": settings(peer, args.peer_workers, args.workload), "rounds": args.rounds,
        "turns": turns, "summary": summarize(turns, peer.name),
    }
    print(json.dumps(out, indent=2) if args.json else peer_table(out))
    return 1 if any(t["duplicates"] or t["losses"] for t in turns) else 0


def _skip(args: argparse.Namespace, name: str, why: str) -> int:
    line = f"relay bench: skipped --peer {name}: {why}"
    if args.json:
        print(json.dumps({"peer": name, "skipped": why}))
    else:
        print(line)
    if name != "fluent-bit":  # say what it would have run, so the setting can be checked by hand
        example = config(PEERS[name], Path("/tmp/relay-bench"), PLACEHOLDER_PORT, PLACEHOLDER_UPSTREAM,
                         args.workload, args.peer_workers)
        print(f"the config it would use ({name}):\n{example}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _cpu_us_per_delivered(r: dict[str, Any]) -> float | None:
    # relay_cpu_s_per_million is the process under test's CPU (drain included) per million
    # acknowledged entries, i.e. µs per acknowledged entry; rescale to delivered ones.
    if not r["entries_delivered"]:
        return None
    per_million: float = r["relay_cpu_s_per_million"] * r["entries_acked"] / r["entries_delivered"]
    return round(per_million, 2)


def summarize(turns: list[dict[str, Any]], peer: str) -> dict[str, Any]:
    """Per subject over its turns (totals over total time, not a mean of rates), and relay/peer ratios."""
    out: dict[str, Any] = {}
    for subject in ("relay", peer):
        mine = [t for t in turns if t["subject"] == subject]
        seconds = sum(t["duration_s"] for t in mine) or 1e-6
        delivered = sum(t["entries_delivered"] for t in mine)
        cpu = sum(t["relay_cpu_s_per_million"] * t["entries_acked"] / 1e6 for t in mine)
        out[subject] = {
            "turns": len(mine),
            "acked_per_s": round(sum(t["entries_acked"] for t in mine) / seconds, 1),
            "delivered_per_s": round(sum(t["delivered_per_s"] * t["duration_s"] for t in mine) / seconds, 1),
            "cpu_us_per_delivered_entry": round(cpu * 1e6 / delivered, 2) if delivered else None,
            "peak_rss_mb": max((t["relay_peak_rss_mb"] for t in mine), default=0.0),
            "losses": sum(t["losses"] for t in mine), "duplicates": sum(t["duplicates"] for t in mine),
        }
    ours, theirs = out["relay"], out[peer]
    out["relay_over_peer"] = {key: round(ours[key] / theirs[key], 2) if ours[key] and theirs[key] else None
                              for key in ("acked_per_s", "delivered_per_s", "cpu_us_per_delivered_entry",
                                          "peak_rss_mb")}
    return out


def peer_table(out: dict[str, Any]) -> str:
    turns, summary, peer = out["turns"], out["summary"], out["peer"]
    first = turns[0]
    head = ("", "acked/s", "delivered/s", "CPU µs/entry", "peak RSS MiB", "lost", "duplicates")
    rows = [(f"round {t['round']} {t['subject']}", f"{t['acked_per_s']:,.0f}", f"{t['delivered_per_s']:,.0f}",
             _num(t["cpu_us_per_delivered_entry"]), f"{t['relay_peak_rss_mb']:.1f}", str(t["losses"]),
             str(t["duplicates"])) for t in turns]
    for subject in ("relay", peer):
        s = summary[subject]
        rows.append((f"{subject}, all rounds", f"{s['acked_per_s']:,.0f}", f"{s['delivered_per_s']:,.0f}",
                     _num(s["cpu_us_per_delivered_entry"]), f"{s['peak_rss_mb']:.1f}", str(s["losses"]),
                     str(s["duplicates"])))
    ratio = summary["relay_over_peer"]
    rows.append((f"relay / {peer}", _ratio(ratio["acked_per_s"]), _ratio(ratio["delivered_per_s"]),
                 _ratio(ratio["cpu_us_per_delivered_entry"]), _ratio(ratio["peak_rss_mb"]), "", ""))
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = [f"relay vs {peer}: {first['workload']} ({first['records_per_request']} entries/request), "
             f"{first['concurrency']} clients, {first['duration_s']:g}s turns, {out['rounds']} round(s), "
             f"alternating; upstream: the lean counting sink for both"]
    lines += ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
              for row in [head, *rows]]
    lines += [
        f"* {peer}: {out['peer_version']} ({out['peer_binary']}): {out['peer_settings']}.",
        f"* relay: sync={first['sync']}, workers={first.get('workers', 1)}, defaults otherwise; it answers once entries are committed to its queue.",
        "* delivered/s: reaching the sink during the load; CPU µs/entry: the process tree's user+system time "
        "(/proc), drain included, per delivered entry; lost and duplicates matched entry by entry by unique id"
        + ("" if first["ids_checked"] else " (here by count only: --no-verify)") + ".",
    ]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


"""The result of a `relay bench` run: duplicates and losses entry by entry, the figures, and the table.

Every entry carries a unique id in its path (bench/records.py); what upstream recorded is matched
against how often the load generator saw each body acknowledged, so a loss or a
duplicate is counted, not estimated from totals.
"""

from __future__ import annotations

from array import array
from typing import Any

import msgspec

from relay.tools.bench.processes import CONCURRENCY, Run, Sample
from relay.tools.bench.procfs import machine
from relay.tools.bench.records import NOT_OURS, id_in_path, spooled_ids


class _Entry(msgspec.Struct):
    path: str = ""


class _Recorded(msgspec.Struct):
    entries: list[_Entry]


def delivered_ids(run: Run) -> array[int]:
    """The id of every entry upstream accepted, read after the run from its record."""
    assert run.record is not None
    if run.args.upstream != "mock":
        return spooled_ids(run.record)
    decode = msgspec.json.Decoder(_Recorded).decode
    out = array("Q")
    with open(run.record, "rb") as lines:
        for line in lines:
            for entry in decode(line).entries:
                found = id_in_path(entry.path)
                out.append(NOT_OURS if found is None else found)
    return out


def check_ids(ids: array[int], acks: list[int], per_body: int) -> tuple[int, int]:
    """(duplicates, losses): each delivered id against how often its body was acknowledged."""
    total = len(acks) * per_body
    seen = array("I", bytes(4 * total))
    duplicates = 0
    for value in ids:
        if value < total:
            seen[value] += 1
        else:
            duplicates += 1  # not an id we sent: counts against the relay
    losses = 0
    for value in range(total):
        expected, got = acks[value // per_body], seen[value]
        if got > expected:
            duplicates += got - expected
        elif got < expected:
            losses += expected - got
    return duplicates, losses


def report(run: Run, result: dict[str, Any], first: Sample, stopped: Sample, end: Sample,
           drained_at: float | None, rss: float, relay_status: int | None, ids: array[int] | None) -> dict[str, Any]:
    args = run.args
    acked = result["entries_acked"]
    window = max(stopped.at - first.at, 1e-6)
    delivered = end.delivered - first.delivered
    million = max(acked, 1) / 1e6
    if ids is not None:
        duplicates, losses = check_ids(ids, result["acks"], result["per_body"])
    else:  # counts only
        duplicates, losses = max(delivered - acked, 0), max(acked - delivered, 0)
    return {
        "workload": args.workload, "sync": args.sync, "workers": run.worker_count,
        "workers_setting": getattr(args, "workers", "auto"),
        "records_per_request": result["per_body"],
        "duration_s": round(window, 2), "concurrency": args.concurrency or CONCURRENCY[args.workload],
        "rate_cap": args.rate, "upstream": args.upstream,
        "requests_acked": result["requests_acked"], "entries_acked": acked, "entries_delivered": delivered,
        "requests_per_s": round(result["requests_acked"] / window, 1),
        "acked_per_s": round(acked / window, 1),
        "delivered_per_s": round((stopped.delivered - first.delivered) / window, 1),
        "end_to_end_per_s": round(acked / (drained_at - first.at), 1) if drained_at else None,
        "backlog_at_stop": max(acked - (stopped.delivered - first.delivered), 0),
        # Delivery kept pace with intake: what was still queued at the stop is at most a
        # second of intake (a batch timeout, batches in flight) plus 5 %, not a growing pile.
        "keeps_up": acked - (stopped.delivered - first.delivered) <= acked / window + 0.05 * acked,
        "drain_s": round(drained_at - stopped.at, 2) if drained_at else None,
        "latency_ms": result["latency_ms"],
        "relay_cpu_s_per_million": round((end.relay_cpu - first.relay_cpu) / million, 2),
        "relay_cpu_cores": round((stopped.relay_cpu - first.relay_cpu) / window, 2),
        "relay_peak_rss_mb": round(rss, 1),
        "bytes_in": result["bytes_sent"], "bytes_upstream": end.upstream_bytes - first.upstream_bytes,
        "upstream_cpu_s_per_million": round((end.upstream_cpu - first.upstream_cpu) / million, 2),
        "loadgen_cpu_s_per_million": round(result["cpu_seconds"] / million, 2),
        # Busy cores during the load outside the relay, the upstream and the load generator:
        # other work on the machine that the relay had to share it with.
        "other_cpu_cores": round(max(stopped.busy - first.busy - (stopped.relay_cpu - first.relay_cpu)
                                     - (stopped.upstream_cpu - first.upstream_cpu) - result["cpu_seconds"], 0)
                                 / window, 2),
        "errors": result["errors"], "rejected": result["rejected"], "status": result["status"],
        "duplicates": duplicates, "losses": losses, "ids_checked": ids is not None,
        "relay_exit_status": relay_status,
        "machine": machine(),
    }


def table(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    e2e = f"{r['end_to_end_per_s']:,.0f}" if r["end_to_end_per_s"] else "did not drain"
    rows = [
        ("workload", f"{r['workload']} ({r['records_per_request']} entries/request), sync={r['sync']}, "
                     f"workers={r.get('workers', 1)}{' (auto)' if r.get('workers_setting') == 'auto' else ''}, "
                     f"{r['concurrency']} clients, upstream={r['upstream']}"),
        ("entries acknowledged", f"{r['entries_acked']:,} in {r['requests_acked']:,} requests over {r['duration_s']}s"),
        ("entries/s acknowledged", f"{r['acked_per_s']:,.0f}  ({r['requests_per_s']:,.0f} requests/s)"),
        ("entries/s delivered", f"{r['delivered_per_s']:,.0f}  (during the load; backlog at stop "
                                f"{r['backlog_at_stop']:,})"),
        ("delivery kept up", "yes" if r["keeps_up"] else "NO: the backlog grew during the load; lower --rate "
                                                             "to find the sustained rate"),
        ("entries/s end to end", f"{e2e}  (acknowledged / time until drained; drain {r['drain_s']}s)"),
        ("request latency", f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms"),
        ("relay CPU", f"{r['relay_cpu_s_per_million']} s per million entries "
                      f"({r['relay_cpu_cores']} cores during the load)"),
        ("relay peak RSS", f"{r['relay_peak_rss_mb']} MiB"),
        ("bytes in / upstream", f"{r['bytes_in']:,} / {r['bytes_upstream']:,}"),
        ("others' CPU", f"upstream {r['upstream_cpu_s_per_million']} s, load generator "
                        f"{r['loadgen_cpu_s_per_million']} s per million entries"),
        ("machine", f"{r['machine']['cpus']} CPUs ({r['machine']['cpu_model']}); other processes kept "
                    f"{r['other_cpu_cores']} cores busy during the load"),
        ("errors / rejected", f"{r['errors']} / {r['rejected']}"),
        ("duplicates / losses", f"{r['duplicates']} / {r['losses']}"
                                + ("" if r["ids_checked"] else " (by count only)")),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

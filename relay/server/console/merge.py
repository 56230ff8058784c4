"""The console's state for the whole relay, from each worker's own (`server.workers = N`).

Each worker samples its own counters into its own History (history.py), at its own moments;
state.py builds one worker's state and this module merges them:

- counts, rates, backlogs and dead letters: summed per source and per sink;
- chart series: summed point by point, aligned by sample time: on the time axis of the worker
  with the longest history, each other worker's point nearest in time (within ALIGN seconds),
  nothing where it has none (it was not running then);
- a sink's state: the worst of the workers'; its error: that worker's; last failure: the newest;
- disk: the volume's figures (free, reserve) once, used and max summed over the shards;
- uptime: since the oldest worker started (about when the supervisor did); reload: the newest;
- ready only if every worker is; `workers` says each one's readiness (and who did not answer).

Pure functions over JSON values: the parts travel between workers as JSON.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from relay.server.console.history import INTERVAL
from relay.server.console.state import drain_seconds

ALIGN = 0.75 * INTERVAL  # seconds: a worker's sample this close to the reference time is "the same" point
STATE_RANK = {"running": 0, "backing_off": 1, "paused": 2, "stopped": 3}
TOP = 5  # reasons per source, as History.top_reasons


def merge_states(parts: list[Mapping[str, Any]], missing: Iterable[tuple[int, str]] = ()) -> dict[str, Any]:
    """One state from the parts (one per worker that answered, each with its `worker` number);
    `missing`: (worker, why) of those that did not answer."""
    first = parts[0]
    workers = [{"worker": p.get("worker", 0), "ready": p["ready"], "problems": p["problems"], "uptime": p["uptime"]}
               for p in parts]
    workers += [{"worker": w, "ready": False, "problems": [f"not answering: {why}"], "uptime": None}
                for w, why in missing]
    workers.sort(key=lambda w: w["worker"])
    several = len(workers) > 1
    if not several:  # one worker: its state as it is (no merge cost on every poll)
        return {**{k: v for k, v in first.items() if k != "worker"}, "workers": workers}
    problems = [f"worker {w['worker']}: {p}" if several else p for w in workers for p in w["problems"]]
    started = min(p["started"] for p in parts)
    reload = max((p["reload"] for p in parts), key=lambda r: r["at"])
    return {
        "version": first["version"], "now": first["now"], "started": started, "uptime": first["now"] - started,
        "window": first["window"], "interval": first["interval"],
        "ready": not problems, "problems": problems, "workers": workers,
        "reload": reload,
        "disk": {"used": sum(p["disk"]["used"] for p in parts), "max": sum(p["disk"]["max"] for p in parts),
                 "free": first["disk"]["free"], "reserve": first["disk"]["reserve"]},
        "dead_letters": {k: sum(p["dead_letters"][k] for p in parts) for k in ("entries", "bytes")},
        "sources": [_source([s for p in parts for s in p["sources"] if s["name"] == source["name"]])
                    for source in first["sources"]],
        "sinks": [_sink([s for p in parts for s in p["sinks"] if s["name"] == sink["name"]])
                  for sink in first["sinks"]],
        "mappings": first["mappings"],
    }


def _source(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for part in parts:
        for reason in part["top"]:
            counts[reason["reason"]] = counts.get(reason["reason"], 0) + reason["count"]
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
    first = parts[0]
    return {"name": first["name"], "mapping": first["mapping"], "host": first["host"],
            "totals": _sum(p["totals"] for p in parts), "rates": _rates(p["rates"] for p in parts),
            "top": [{"reason": r, "count": n} for r, n in top],
            "series": merge_series([p["series"] for p in parts])}


def _sink(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    worst = max(parts, key=lambda p: STATE_RANK.get(p["state"], 2))
    failures = [p["last_failure"] for p in parts if p["last_failure"] is not None]
    rates = _rates(p["rates"] for p in parts)
    backlog = {"entries": sum(p["backlog"]["entries"] for p in parts),
               "bytes": sum(p["backlog"]["bytes"] for p in parts),
               "oldest_age": max(p["backlog"]["oldest_age"] for p in parts)}
    errors = [p["error"] for p in parts if p["error"]]
    return {
        "name": worst["name"], "url": worst["url"], "state": worst["state"],
        "error": worst["error"] or (errors[0] if errors and worst["state"] != "running" else None),
        "last_failure": max(failures, key=lambda f: f["at"]) if failures else None,
        "totals": _sum(p["totals"] for p in parts), "rates": rates, "backlog": backlog,
        # as one worker's: only a running sink drains
        "drain_seconds": drain_seconds(backlog["entries"], rates.get("delivered") if worst["state"] == "running"
                                       else None),
        "dead_letters": sum(p["dead_letters"] for p in parts),
        "series": merge_series([p["series"] for p in parts]),
    }


def _sum(figures: Iterable[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for one in figures:
        for name, value in one.items():
            out[name] = out.get(name, 0.0) + value
    return out


def _rates(rates: Iterable[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Summed; None only where no worker has a rate yet (one restarted a moment ago counts as none)."""
    out: dict[str, float | None] = {}
    for one in rates:
        for name, value in one.items():
            if value is not None:
                out[name] = (out.get(name) or 0.0) + value
            else:
                out.setdefault(name, None)
    return out


def merge_series(series: list[Mapping[str, list[float]]]) -> dict[str, list[float]]:
    """Point-by-point sums of chart series ({"t": times, figure: values}) aligned by time."""
    reference = max(series, key=lambda s: len(s["t"]))  # the first of the longest
    axis = tuple(reference["t"])
    figures = [k for k in reference if k != "t"]
    sums: dict[str, list[float]] = {f: [0.0] * len(axis) for f in figures}
    for one in series:
        index = _alignment(axis, tuple(one["t"]))
        for f in figures:
            values = one.get(f)
            if values is not None:  # index len(values) is the 0.0 appended: no point of this worker there
                aligned = map([*values, 0.0].__getitem__, index)
                sums[f] = list(map(operator.add, sums[f], aligned))  # C loops: this runs on every poll
    # not rounded again: each worker's rates are (to 3 places), and round() would cost most of the merge
    return {"t": list(axis), **sums}


@lru_cache(maxsize=64)  # every source and sink of a worker shares its sample times: aligned once per poll
def _alignment(axis: tuple[float, ...], times: tuple[float, ...]) -> tuple[int, ...]:
    """Per point of `axis`, the index of the point of `times` nearest to it if within ALIGN, else
    len(times) (both sorted)."""
    index = []
    j = 0
    for at in axis:
        while j + 1 < len(times) and abs(times[j + 1] - at) <= abs(times[j] - at):
            j += 1
        index.append(j if times and abs(times[j] - at) <= ALIGN else len(times))
    return tuple(index)

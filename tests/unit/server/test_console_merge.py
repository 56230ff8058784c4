"""The console state of several workers merged into the whole relay's (relay.server.console.merge)."""

from __future__ import annotations

from typing import Any

from relay.server.console.merge import merge_series, merge_states


def source(accepted: float, rate: float | None, top: list[tuple[str, int]], series: dict[str, list[float]]) -> dict[str, Any]:
    return {"name": "web", "mapping": "profound", "host": None,
            "totals": {"requests": 1.0, "accepted": accepted, "repairs": 0.0, "rejected": 0.0, "filtered": 0.0},
            "rates": {"requests": rate, "accepted": rate, "repairs": rate, "rejected": rate, "filtered": rate},
            "top": [{"reason": r, "count": n} for r, n in top], "series": series}


def sink(state: str, backlog: float, delivered_rate: float | None, failure: tuple[float, str] | None,
         error: str | None = None) -> dict[str, Any]:
    return {"name": "up", "url": "http://127.0.0.1:9/", "state": state, "error": error,
            "last_failure": None if failure is None else {"at": failure[0], "error": failure[1]},
            "totals": {"delivered": 10.0, "upstream_rejected": 1.0},
            "rates": {"delivered": delivered_rate, "upstream_rejected": 0.0},
            "backlog": {"entries": backlog, "bytes": backlog * 100, "oldest_age": backlog / 10},
            "drain_seconds": None, "dead_letters": 2, "series": {"t": [], "delivered": [], "upstream_rejected": [],
                                                                   "backlog": []}}


def state(worker: int, *, started: float, ready: bool = True, reload_at: float = 0.0, used: int = 100,
          src: dict[str, Any], snk: dict[str, Any]) -> dict[str, Any]:
    return {"version": "1.0", "now": 1000.0, "started": started, "uptime": 1000.0 - started, "window": 900.0,
            "interval": 5.0, "ready": ready, "problems": [] if ready else ["the queue is full"],
            "reload": {"at": reload_at, "result": "ok", "detail": f"w{worker}"},
            "disk": {"used": used, "max": 500, "free": 7000, "reserve": 50},
            "dead_letters": {"entries": 2, "bytes": 30}, "sources": [src], "sinks": [snk],
            "mappings": ["profound"], "worker": worker}


EMPTY = {"t": [], "requests": [], "accepted": [], "repairs": [], "rejected": [], "filtered": []}


def test_counts_rates_backlog_and_disk_are_summed_and_the_worst_sink_state_wins() -> None:
    a = state(0, started=100.0, reload_at=500.0, used=120,
              src=source(30.0, 2.0, [("required", 3), ("range", 1)], EMPTY),
              snk=sink("running", 40.0, 4.0, (900.0, "old")))
    b = state(1, started=160.0, reload_at=600.0, used=80,
              src=source(12.0, None, [("range", 5)], EMPTY),
              snk=sink("backing_off", 10.0, 1.0, (950.0, "503 from upstream"), error="503 from upstream"))
    merged = merge_states([a, b])
    web, up = merged["sources"][0], merged["sinks"][0]
    assert web["totals"]["accepted"] == 42.0 and web["totals"]["requests"] == 2.0
    assert web["rates"]["accepted"] == 2.0  # the worker without a rate yet adds nothing
    assert web["top"] == [{"reason": "range", "count": 6}, {"reason": "required", "count": 3}]
    assert up["state"] == "backing_off" and up["error"] == "503 from upstream"
    assert up["last_failure"] == {"at": 950.0, "error": "503 from upstream"}
    assert up["backlog"] == {"entries": 50.0, "bytes": 5000.0, "oldest_age": 4.0}
    assert up["rates"]["delivered"] == 5.0 and up["drain_seconds"] is None  # not running: no drain estimate
    assert up["dead_letters"] == 4 and merged["dead_letters"] == {"entries": 4, "bytes": 60}
    assert merged["disk"] == {"used": 200, "max": 1000, "free": 7000, "reserve": 50}
    assert merged["started"] == 100.0 and merged["uptime"] == 900.0
    assert merged["reload"]["detail"] == "w1"
    assert merged["ready"] and merged["workers"] == [
        {"worker": 0, "ready": True, "problems": [], "uptime": 900.0},
        {"worker": 1, "ready": True, "problems": [], "uptime": 840.0}]


def test_running_sinks_drain_at_the_summed_rate() -> None:
    a = state(0, started=0.0, src=source(1.0, 1.0, [], EMPTY), snk=sink("running", 40.0, 4.0, None))
    b = state(1, started=0.0, src=source(1.0, 1.0, [], EMPTY), snk=sink("running", 10.0, 1.0, None))
    up = merge_states([a, b])["sinks"][0]
    assert up["state"] == "running" and up["drain_seconds"] == 10.0 and up["last_failure"] is None


def test_one_worker_not_ready_or_not_answering_makes_the_relay_not_ready() -> None:
    a = state(0, started=0.0, src=source(1.0, 1.0, [], EMPTY), snk=sink("running", 0.0, 0.0, None))
    b = state(1, started=0.0, ready=False, src=source(1.0, 1.0, [], EMPTY), snk=sink("running", 0.0, 0.0, None))
    merged = merge_states([a, b])
    assert not merged["ready"] and merged["problems"] == ["worker 1: the queue is full"]
    merged = merge_states([a], missing=[(1, "timed out")])
    assert not merged["ready"] and merged["problems"] == ["worker 1: not answering: timed out"]
    assert [(w["worker"], w["ready"]) for w in merged["workers"]] == [(0, True), (1, False)]
    alone = merge_states([a])
    assert alone["ready"] and alone["problems"] == [] and len(alone["workers"]) == 1


def test_series_are_summed_point_by_point_aligned_by_sample_time() -> None:
    # worker 0 samples at :00, :05, ...; worker 1 started later and samples 2 s off their phase
    a = {"t": [100.0, 105.0, 110.0, 115.0, 118.3], "accepted": [1.0, 1.0, 1.0, 1.0, 1.0], "backlog": [5, 5, 5, 5, 5]}
    b = {"t": [107.0, 112.0, 117.0, 118.4], "accepted": [2.0, 2.0, 3.0, 4.0], "backlog": [1, 1, 1, 2]}
    merged = merge_series([b, a])
    assert merged["t"] == a["t"]  # the longest history's axis
    assert merged["accepted"] == [1.0, 3.0, 3.0, 4.0, 5.0]  # none from worker 1 before it ran
    assert merged["backlog"] == [5, 6, 6, 6, 7]


def test_a_gap_in_one_workers_samples_is_not_filled_from_a_far_point() -> None:
    a = {"t": [100.0, 105.0, 110.0, 115.0], "accepted": [1.0, 1.0, 1.0, 1.0]}
    b = {"t": [100.5, 115.2], "accepted": [2.0, 2.0]}
    assert merge_series([a, b])["accepted"] == [3.0, 1.0, 1.0, 3.0]
    assert merge_series([{"t": [], "accepted": []}, {"t": [], "accepted": []}]) == {"t": [], "accepted": []}


def test_one_worker_state_is_passed_through_with_its_workers_entry() -> None:
    series = {"t": [100.0, 105.0], "requests": [0.1, 0.2], "accepted": [0.1, 0.2], "repairs": [0.0, 0.0],
              "rejected": [0.0, 0.0], "filtered": [0.0, 0.0]}
    a = state(0, started=10.0, src=source(3.0, 1.0, [("range", 2)], series), snk=sink("paused", 5.0, None, None))
    merged = merge_states([a])
    assert merged == {**{k: v for k, v in a.items() if k != "worker"},
                      "workers": [{"worker": 0, "ready": True, "problems": [], "uptime": 990.0}]}

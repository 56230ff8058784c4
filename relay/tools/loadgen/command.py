"""The processes `relay bench` runs beside the relay: a load generator and two stand-in servers.

    python -m relay.tools.loadgen drive ...   send pre-built bodies to a URL; progress and result as JSON
    python -m relay.tools.loadgen sink ...    a lean upstream: counts entries, keeps the bodies for their ids, no validation
    python -m relay.tools.loadgen echo ...    a trivial ingest target answering 200 to anything (to show
                                        that the load generator is never the bottleneck)

This module is the command line and the `drive` run; the bodies come from
bench_workloads, the client from loadgen_driver, the servers from loadgen_servers.

`drive` prints JSON lines on stdout: {"event": "ready"} once the bodies are built, then
waits for a line on stdin to start, then one {"event": "tick"} a second and a final
{"event": "done"}; the full result (latencies, acknowledgements per body) goes to --result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from relay.tools.bench.workloads import WORKLOADS, build_bodies, request_bytes, workload
from relay.tools.loadgen.driver import Driver, percentiles
from relay.tools.loadgen.servers import serve_echo, serve_sink


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def drive(args: argparse.Namespace) -> int:
    load = workload(args.workload, args.records)
    host, _, port = args.target.rpartition(":")
    started = time.perf_counter()
    bodies = list(build_bodies(load, args.pool))
    requests = [request_bytes(load, f"{host}:{port}", body, args.token) for body in bodies]
    sizes = [len(body) for body in bodies]
    del bodies
    _emit({"event": "ready", "bodies": len(requests), "build_seconds": round(time.perf_counter() - started, 2),
           "body_bytes_mean": sum(sizes) // max(len(sizes), 1)})
    if not args.no_wait:
        sys.stdin.readline()
    driver = Driver(load, requests, sizes, host=host, port=int(port), concurrency=args.concurrency,
                    duration=args.duration, rate=args.rate)
    cpu = _cpu_seconds()

    def tick(d: Driver) -> None:
        _emit({"event": "tick", "t": round(time.perf_counter() - d.started, 3), "requests": len(d.latencies),
               "entries_acked": d.entries_acked, "errors": d.errors,
               "p99_ms": _ms(percentiles(d.latencies[-5000:], (0.99,))[0])})

    uvloop.run(driver.run(tick))
    elapsed = driver.stopped - driver.started
    # when the load started on the system's monotonic clock (the bench's and the upstream's clock too)
    started_at = time.monotonic() - (time.perf_counter() - driver.started)
    p50, p95, p99 = percentiles(driver.latencies)
    result = {
        "workload": load.name, "per_body": load.per_body, "pool": len(requests),
        "seconds": elapsed, "started_at": started_at, "requests_acked": len(driver.latencies),
        "entries_acked": driver.entries_acked, "rejected": driver.rejected, "errors": driver.errors, "status": driver.status,
        "bytes_sent": driver.bytes_sent, "latency_ms": {"p50": _ms(p50), "p95": _ms(p95), "p99": _ms(p99)},
        "cpu_seconds": _cpu_seconds() - cpu, "acks": list(driver.acks),
    }
    Path(args.result).write_text(json.dumps(result))
    _emit({"event": "done", "seconds": elapsed, "entries_acked": driver.entries_acked, "errors": driver.errors})
    return 0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay.tools.loadgen", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("drive", help="send pre-built bodies")
    d.add_argument("--workload", choices=WORKLOADS, required=True)
    d.add_argument("--records", type=int, default=1000, help="entries per body (bulk workloads)")
    d.add_argument("--target", required=True, help="HOST:PORT")
    d.add_argument("--pool", type=int, required=True, help="distinct bodies to build (reused in turn)")
    d.add_argument("--concurrency", type=int, default=8)
    d.add_argument("--duration", type=float, default=10.0)
    d.add_argument("--rate", type=float, help="cap, entries/s")
    d.add_argument("--token")
    d.add_argument("--result", required=True, help="JSON file for the full result")
    d.add_argument("--no-wait", action="store_true", help="start at once, not on a line on stdin")
    for name in ("sink", "echo"):
        s = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=0)
        if name == "sink":
            s.add_argument("--api-key")
            s.add_argument("--bodies", help="append each accepted body here as received, framed with its "
                                            "entry count (records.spooled_ids reads the ids back)")
    args = parser.parse_args(argv)
    if args.command == "drive":
        return drive(args)
    uvloop.run(serve_sink(args) if args.command == "sink" else serve_echo(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

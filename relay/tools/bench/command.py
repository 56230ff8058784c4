"""`relay bench`: end-to-end throughput of a real relay, on this machine, with a table to show.

It starts three kinds of process on loopback, each apart from this one:

    load generator (python -m relay.tools.loadgen drive)  ->  relay serve  ->  upstream
    pre-built bodies, N keep-alive clients              temp config,    `relay mock-upstream`
                                                        temp queue       (or a lean counting sink)

runs the workload for `--duration`, stops the load, waits (bounded) for the queue to
drain, and reports: entries/s acknowledged and delivered, request latency, relay CPU
seconds per million entries (the relay's process tree only, from /proc), the relay's
peak RSS (VmHWM), bytes in and upstream, and duplicates and losses, matched entry by
entry through the unique id each entry carries in its path. Exit status 1 when
any entry was lost or duplicated, 2 when the bench itself could not run.

With `--peer fluent-bit` (or `vector`) the same timed run alternates between the relay
and the real peer in its place, on the same load and lean sink, and prints one table
of both with the ratios (relay.tools.bench.compare, relay.tools.bench.peers).

This module is the command and the timed run itself (load, progress, drain); beside it:
bench_processes starts and samples the processes, bench_procfs reads /proc,
bench_report checks ids and makes the table, bench_profile runs py-spy,
bench_compare and bench_peers the peer mode, and bench_workloads builds the bodies
the load generator (relay.tools.loadgen.command) sends.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.tools.bench.compare import run_peer
from relay.tools.bench.peers import PEERS
from relay.tools.bench.processes import (
    BenchError,
    Run,
    Sample,
    get_text,
    start_loadgen,
    start_processes,
)
from relay.tools.bench.procfs import peak_rss_mb
from relay.tools.bench.profile import Profiler
from relay.tools.bench.report import delivered_ids, report, table
from relay.tools.bench.workloads import WORKLOADS

# ---------------------------------------------------------------- the timed run


def _progress(run: Run, last: Sample, now: Sample, label: str) -> None:
    """One line a second on stderr: rates since the last line, backlog, latency, relay CPU."""
    if run.args.quiet:
        return
    seconds = max(now.at - last.at, 1e-6)
    loading = label != "drain" and len(run.ticks) >= 2
    acked = ((run.ticks[-1]["entries_acked"] - run.ticks[-2]["entries_acked"])
             / max(run.ticks[-1]["t"] - run.ticks[-2]["t"], 1e-6)) if loading else 0.0
    p99 = run.ticks[-1].get("p99_ms") if loading else None
    errors = run.ticks[-1]["errors"] if run.ticks else 0
    print(f"bench {label:>6}: acked {acked:>9,.0f}/s  "
          f"delivered {(now.delivered - last.delivered) / seconds:>9,.0f}/s  "
          f"backlog {max(now.acked - now.delivered, 0):>9,}  p99 {p99 if p99 is not None else '-':>7} ms  "
          f"{run.subject} CPU {(now.relay_cpu - last.relay_cpu) / seconds:4.2f} cores  errors {errors}",
          file=sys.stderr, flush=True)


def measure(run: Run, start: Callable[[Run], None] = start_processes) -> dict[str, Any]:
    """One timed run of the process under test: `start` starts it and its upstream (the relay by
    default; `--peer` passes one that starts the peer in its place)."""
    args = run.args
    start(run)
    relay = run.children[run.subject]
    target = int(run.relay_base.rsplit(":", 1)[1])
    loadgen, ready = start_loadgen(run, target)
    if not args.quiet:
        print(f"bench: {run.subject}: {args.workload} sync={args.sync} for {args.duration:g}s, "
              f"{ready['bodies']} distinct bodies of {ready['body_bytes_mean']:,} bytes built in "
              f"{ready['build_seconds']}s; work dir {run.workdir}", file=sys.stderr, flush=True)
    first = last = run.sample()
    assert loadgen.popen.stdin is not None
    loadgen.popen.stdin.write(b"go\n")
    loadgen.popen.stdin.flush()
    while not run.done.wait(1.0):
        now = run.sample(run.ticks[-1]["entries_acked"] if run.ticks else 0)
        _progress(run, last, now, f"{now.at - first.at:.0f}s")
        last = now
        if not relay.alive():
            raise BenchError(f"{run.subject} exited during the run\n{relay.log_tail()}")
    if loadgen.popen.wait(60) != 0:
        raise BenchError(f"the load generator failed\n{loadgen.log_tail()}")
    result = json.loads((run.workdir / "loadgen.json").read_text())
    stopped = run.sample(result["entries_acked"])
    # the load's own start and length, not this loop's: it starts a moment after "go" (its clients
    # connect first), and that moment is no part of the relay's time
    first.at = result.get("started_at", first.at)
    stopped.at = first.at + result["seconds"]
    drained_at, drained = _drain(run, first, stopped, result["entries_acked"])
    end = run.sample(result["entries_acked"])
    rss = peak_rss_mb(relay.pid)
    status = relay.stop()
    run.children["upstream"].stop()
    ids = delivered_ids(run) if run.record is not None else None
    return report(run, result, first, stopped, end, drained_at if drained else None, rss, status, ids)


def _drain(run: Run, first: Sample, stopped: Sample, acked: int) -> tuple[float, bool]:
    """Wait until upstream has every acknowledged entry and the relay's queue is empty; drained at
    the moment upstream accepted its last entries (its own clock, the system's monotonic one), not
    when this loop's polling saw it (50 ms apart, a /metrics scrape each: ~0.3 s after it)."""
    deadline = time.monotonic() + run.args.drain_timeout
    last = stopped
    next_line = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        now = run.sample(acked)
        if now.delivered - first.delivered >= acked and _queue_empty(run):
            delivered_at = now.last_delivery if first.at < now.last_delivery <= now.at else now.at
            return max(delivered_at, stopped.at), True
        if now.at >= next_line:
            _progress(run, last, now, "drain")
            last, next_line = now, now.at + 1.0
        time.sleep(0.05)
    return time.monotonic(), False


def _queue_empty(run: Run) -> bool:
    if run.subject != "relay":
        return True  # a peer: upstream holding every acknowledged entry is the whole test
    text = get_text(run.relay_base + "/metrics")
    return all(float(value) == 0 for value in re.findall(r'^relay_queue_entries\{[^}]*\} (\S+)$', text, re.M))


# ---------------------------------------------------------------- command line


def _duration(text: str) -> float:
    found = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m)?\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 10s, 500ms, 2m)")
    return float(found.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[found.group(2)]


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--workload", choices=WORKLOADS, default="fluentbit",
        help="fluentbit: 1,000-record Fluent Bit json bodies (nginx parser), gzip; passthrough: 1,000-entry "
             "upstream-form JSON arrays, gzip; ndjson: the same as NDJSON; single: 1 entry per request, "
             "64 clients. All from 100,000 generated access-log records (default %(default)s)")
    add("--sync", choices=["full", "normal"], default="normal", help="the queue's sync mode (default %(default)s)")
    add("--workers", default="auto", help="the relay's server.workers: a number, or auto, one per usable core "
        "(default %(default)s, as the relay's own default; the table says how many ran)")
    add("--duration", type=_duration, default=10.0, help="how long to send, e.g. 10s (default 10s)")
    add("--rate", type=float, help="cap the load at this many entries/s (default: as fast as it goes)")
    add("--concurrency", type=int, help="concurrent clients (default 8, or 64 for single)")
    add("--records", type=int, default=1000, help="entries per request of the bulk workloads (default 1000)")
    add("--upstream", choices=["mock", "sink"], default="mock",
        help="mock: `relay mock-upstream`, which validates every entry; sink: a lean counting "
             "stand-in, to see the relay without the mock's CPU (default %(default)s)")
    add("--no-verify", action="store_true",
        help="do not record delivered ids (the record, on /dev/shm, holds ~330 bytes an entry with the mock, "
             "the gzip bodies (~75) with the sink: use this "
             "for long flat-out runs); duplicates and losses then by count only")
    add("--sink-option", action="append", default=[], metavar="KEY=VALUE",
        help='an extra line for the relay\'s [sinks.upstream], e.g. compression_level=2 (repeatable)')
    add("--drain-timeout", type=_duration, default=120.0, help="longest wait for the queue to drain (120s)")
    add("--profile", metavar="FILE", help="record the relay with py-spy while it runs: FILE.svg a flame "
                                       "graph, FILE.txt collapsed stacks, FILE.json speedscope")
    add("--peer", choices=sorted(PEERS), help="also run this peer in the relay's place, turn about, and compare "
        "(fluent-bit: FLUENT_BIT_BIN, else on PATH; skipped, exit 0, "
        "when there is none); the upstream is then the lean sink for both")
    add("--rounds", type=int, default=2, help="with --peer: relay and peer turns each (default %(default)s)")
    add("--peer-workers", type=int, default=2, help="with --peer: the peer's output workers (default %(default)s)")
    add("--json", action="store_true", help="print the result as JSON")
    add("--keep", metavar="DIR", help="keep the work dir (configs, logs, queue, record) in DIR")
    add("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    args.sink_option = [_sink_line(option) for option in args.sink_option]
    if args.workers != "auto":
        if not args.workers.isdigit() or int(args.workers) < 1:
            raise SystemExit(f"relay bench: --workers wants a number from 1, or auto; got {args.workers!r}")
        args.workers = int(args.workers)
    if args.peer:
        if args.profile:
            raise SystemExit("relay bench: --profile and --peer do not go together")
        if args.rounds < 1:
            raise SystemExit("relay bench: --rounds wants 1 or more")
        return run_peer(args, measure)
    if args.keep:
        workdir = Path(args.keep).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    record = None
    if not args.no_verify:
        # On tmpfs when there is one: the record's writes must not share the disk with the queue's fsyncs.
        shm = Path("/dev/shm")
        record = (workdir if args.keep or not shm.is_dir() else Path(tempfile.mkdtemp(prefix="relay-bench-",
                                                                                     dir=shm))) / "delivered"
    bench = Run(args, workdir, record)
    profiler = None
    try:
        if args.profile:
            profiler = Profiler(args.profile, bench)
        result = measure(bench)
    except BenchError as exc:
        print(f"relay bench: {exc}", file=sys.stderr)
        return 2
    finally:
        for child in reversed(list(bench.children.values())):
            child.stop(10)
        if profiler is not None:
            profiler.stop()
        if record is not None and not args.keep:
            shutil.rmtree(record.parent, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 1 if result["duplicates"] or result["losses"] else 0


def _sink_line(option: str) -> str:
    key, sep, value = option.partition("=")
    if not sep or not re.fullmatch(r"[a-z_]+", key.strip()):
        raise SystemExit(f"relay bench: --sink-option wants KEY=VALUE, got {option!r}")
    value = value.strip()
    try:
        float(value)
    except ValueError:
        value = json.dumps(value.strip('"'))
    return f"{key.strip()} = {value}"

"""`relay bench`: end-to-end throughput of a real relay, on this machine, with a table to show.

It starts three kinds of process on loopback, each apart from this one:

    load generator (python -m relay.loadgen drive)  ->  relay serve  ->  upstream
    pre-built bodies, N keep-alive clients              temp config,    `relay mock-upstream`
                                                        temp queue       (or a lean counting sink)

runs the workload for `--duration`, stops the load, waits (bounded) for the queue to
drain, and reports: entries/s acknowledged and delivered, request latency, relay CPU
seconds per million entries (the relay's process tree only, from /proc), the relay's
peak RSS (VmHWM), bytes in and upstream, and duplicates and losses, matched entry by
entry through the unique id each entry carries in `bytes_sent`. Exit status 1 when
any entry was lost or duplicated, 2 when the bench itself could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from .loadgen import WORKLOADS, workload

PINNED_NOW = "2026-11-25T09:30:00Z"  # the fixture traffic is dated 2026-11-25
API_KEY = "bench-key"
RATE_CEILING = {"bulk": 400_000, "single": 20_000}  # entries/s a pool of bodies is sized for
POOL_CAP = {"bulk": 4_000, "single": 400_000}  # bodies; beyond it they are sent again (counted)
CONCURRENCY = {"fluentbit": 8, "passthrough": 8, "single": 64}
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    """The bench could not run (a process did not start, a port never answered)."""


# ---------------------------------------------------------------- /proc readings


def _tree(root: int) -> list[int]:
    """root and every descendant process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """user + system CPU of a process tree, threads included."""
    total = 0
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLK_TCK


def peak_rss_mb(root: int) -> float:
    """Largest VmHWM in the tree, MiB."""
    peak = 0
    for pid in _tree(root):
        try:
            found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        except OSError:
            continue
        peak = max(peak, int(found.group(1)) if found else 0)
    return peak / 1024


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (all processes)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _CLK_TCK


def read_bytes(pid: int) -> int:
    """Bytes the process read through read(2): for a uvloop server, its sockets."""
    try:
        found = re.search(r"rchar: (\d+)", Path(f"/proc/{pid}/io").read_text())
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


# ---------------------------------------------------------------- processes


class Child:
    """A process of the bench, its output in DIR/NAME.log; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], workdir: Path, *, pipes: bool = False) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, *args], cwd=workdir, env=env,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log, stderr=self._log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with _OPENER.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def _get_text(url: str, timeout: float = 5.0) -> str:
    with _OPENER.open(url, timeout=timeout) as response:
        return response.read().decode()


def _wait(what: str, child: Child, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"{child.name} exited with status {child.popen.returncode}\n{child.log_tail()}")
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise BenchError(f"{what}: nothing after {timeout:g}s\n{child.log_tail()}")


def _listening_port(child: Child) -> int:
    def port() -> int | None:
        found = re.search(r"listening on http://[^\s:]+:(\d+)/", child.log_path.read_text())
        return int(found.group(1)) if found else None

    return int(_wait(f"{child.name} port", child, port))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def relay_config(workdir: Path, port: int, upstream_url: str, sync: str, sink_options: list[str]) -> str:
    sink = "\n".join(sink_options)
    return textwrap.dedent(f"""\
        [server]
        address = "127.0.0.1:{port}"
        max_body_size = "64MiB"
        shutdown_grace = "20s"

        [queue]
        path = "{workdir / 'queue'}"
        max_size = "16GiB"
        sync = "{sync}"

        [validation]
        now = "{PINNED_NOW}"

        [sources.fluentbit]
        mapping = "fluentbit-nginx"
        host = "www.example.com"

        [sources.custom]
        path = "/v1/logs/custom"
        mapping = "profound"

        [sinks.upstream]
        url = "{upstream_url}"
        api_key = "{API_KEY}"
        """) + sink + "\n"


# ---------------------------------------------------------------- the run


@dataclass
class Sample:
    at: float
    acked: int = 0
    delivered: int = 0
    relay_cpu: float = 0.0
    upstream_cpu: float = 0.0
    upstream_bytes: int = 0
    busy: float = 0.0  # the whole machine's busy CPU seconds



@dataclass
class Run:
    args: argparse.Namespace
    workdir: Path
    record: Path | None
    children: dict[str, Child] = field(default_factory=dict)
    ticks: list[dict[str, Any]] = field(default_factory=list)  # the load generator's, one a second
    done: threading.Event = field(default_factory=threading.Event)
    upstream_base: str = ""
    relay_base: str = ""

    def sample(self, acked: int = 0) -> Sample:
        relay, upstream = self.children["relay"], self.children["upstream"]
        stats = _get_json(self.upstream_base + "/_mock/stats")
        return Sample(time.monotonic(), acked, int(stats["entries_accepted"]), cpu_seconds(relay.pid),
                      cpu_seconds(upstream.pid), read_bytes(upstream.pid), machine_busy_seconds())


def _pool_size(args: argparse.Namespace, per_body: int) -> int:
    kind = "single" if per_body == 1 else "bulk"
    rate = args.rate or RATE_CEILING[kind]
    return max(16, min(POOL_CAP[kind], int(args.duration * rate * 1.2 / per_body) + 1))


def start_processes(run: Run) -> None:
    args, workdir = run.args, run.workdir
    if args.upstream == "mock":
        command = ["-m", "relay", "mock-upstream", "--port", "0", "--api-key", API_KEY, "--now", PINNED_NOW]
        if run.record is not None:
            command += ["--record", str(run.record)]
    else:
        command = ["-m", "relay.loadgen", "sink", "--api-key", API_KEY]
        if run.record is not None:
            command += ["--ids", str(run.record)]
    upstream = run.children["upstream"] = Child("upstream", command, workdir)
    run.upstream_base = f"http://127.0.0.1:{_listening_port(upstream)}"
    _wait("upstream /healthz", upstream, lambda: _get_json(run.upstream_base + "/healthz"))
    port = _free_port()
    config = workdir / "relay.toml"
    config.write_text(relay_config(workdir, port, run.upstream_base + "/v1/logs/custom", args.sync,
                                   args.sink_option))
    relay = run.children["relay"] = Child("relay", ["-m", "relay", "serve", "-c", str(config)], workdir)
    run.relay_base = f"http://127.0.0.1:{port}"
    _wait("relay /healthz", relay, lambda: _get_json(run.relay_base + "/healthz"), timeout=60)


def start_loadgen(run: Run, port: int) -> tuple[Child, dict[str, Any]]:
    args = run.args
    load = workload(args.workload, args.records)
    command = ["-m", "relay.loadgen", "drive", "--workload", load.name, "--records", str(load.per_body),
               "--target", f"127.0.0.1:{port}", "--pool", str(_pool_size(args, load.per_body)),
               "--concurrency", str(args.concurrency or CONCURRENCY[load.name]),
               "--duration", str(args.duration), "--result", str(run.workdir / "loadgen.json")]
    if args.rate:
        command += ["--rate", str(args.rate)]
    loadgen = run.children["loadgen"] = Child("loadgen", command, run.workdir, pipes=True)
    assert loadgen.popen.stdout is not None
    ready = json.loads(loadgen.popen.stdout.readline() or "{}")
    if ready.get("event") != "ready":
        raise BenchError(f"the load generator did not start\n{loadgen.log_tail()}")

    def read_events(stream: IO[bytes]) -> None:
        for line in stream:
            event = json.loads(line)
            if event.get("event") == "tick":
                run.ticks.append(event)
            elif event.get("event") == "done":
                run.done.set()
        run.done.set()

    threading.Thread(target=read_events, args=(loadgen.popen.stdout,), daemon=True).start()
    return loadgen, ready


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
          f"relay CPU {(now.relay_cpu - last.relay_cpu) / seconds:4.2f} cores  errors {errors}",
          file=sys.stderr, flush=True)


def measure(run: Run) -> dict[str, Any]:
    args = run.args
    start_processes(run)
    relay = run.children["relay"]
    target = int(run.relay_base.rsplit(":", 1)[1])
    loadgen, ready = start_loadgen(run, target)
    if not args.quiet:
        print(f"bench: {args.workload} sync={args.sync} for {args.duration:g}s, {ready['bodies']} distinct "
              f"bodies of {ready['body_bytes_mean']:,} bytes built in {ready['build_seconds']}s; "
              f"work dir {run.workdir}", file=sys.stderr, flush=True)
    first = last = run.sample()
    assert loadgen.popen.stdin is not None
    loadgen.popen.stdin.write(b"go\n")
    loadgen.popen.stdin.flush()
    while not run.done.wait(1.0):
        now = run.sample(run.ticks[-1]["entries_acked"] if run.ticks else 0)
        _progress(run, last, now, f"{now.at - first.at:.0f}s")
        last = now
        if not relay.alive():
            raise BenchError(f"the relay exited during the run\n{relay.log_tail()}")
    if loadgen.popen.wait(60) != 0:
        raise BenchError(f"the load generator failed\n{loadgen.log_tail()}")
    result = json.loads((run.workdir / "loadgen.json").read_text())
    stopped = run.sample(result["entries_acked"])
    stopped.at = first.at + result["seconds"]  # the load's own clock, not this loop's
    drained_at, drained = _drain(run, first, stopped, result["entries_acked"])
    end = run.sample(result["entries_acked"])
    rss = peak_rss_mb(relay.pid)
    status = relay.stop()
    run.children["upstream"].stop()
    ids = _delivered_ids(run) if run.record is not None else None
    return _report(run, result, first, stopped, end, drained_at if drained else None, rss, status, ids)


def _drain(run: Run, first: Sample, stopped: Sample, acked: int) -> tuple[float, bool]:
    """Wait until upstream has every acknowledged entry and the relay's queue is empty."""
    deadline = time.monotonic() + run.args.drain_timeout
    last = stopped
    next_line = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        now = run.sample(acked)
        if now.delivered - first.delivered >= acked and _queue_empty(run):
            return now.at, True
        if now.at >= next_line:
            _progress(run, last, now, "drain")
            last, next_line = now, now.at + 1.0
        time.sleep(0.05)
    return time.monotonic(), False


def _queue_empty(run: Run) -> bool:
    text = _get_text(run.relay_base + "/metrics")
    return all(float(value) == 0 for value in re.findall(r'^relay_queue_entries\{[^}]*\} (\S+)$', text, re.M))


class _Entry(msgspec.Struct):
    bytes_sent: int | None = None


class _Recorded(msgspec.Struct):
    entries: list[_Entry]


def _delivered_ids(run: Run) -> array:
    """The id of every entry upstream accepted, read after the run from its record."""
    assert run.record is not None
    if run.args.upstream != "mock":
        ids = array("Q")
        ids.frombytes(run.record.read_bytes())
        return ids
    decode = msgspec.json.Decoder(_Recorded).decode
    out = array("Q")
    with open(run.record, "rb") as lines:
        for line in lines:
            out.extend(e.bytes_sent if e.bytes_sent is not None else 2**63 for e in decode(line).entries)
    return out


def check_ids(ids: array, acks: list[int], per_body: int) -> tuple[int, int]:
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


def _report(run: Run, result: dict[str, Any], first: Sample, stopped: Sample, end: Sample,
            drained_at: float | None, rss: float, relay_status: int | None, ids: array | None) -> dict[str, Any]:
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
        "workload": args.workload, "sync": args.sync, "records_per_request": result["per_body"],
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


def machine() -> dict[str, Any]:
    model = ""
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model = found.group(1).strip() if found else ""
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kernel": platform.release()}


# ---------------------------------------------------------------- output


def table(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    e2e = f"{r['end_to_end_per_s']:,.0f}" if r["end_to_end_per_s"] else "did not drain"
    rows = [
        ("workload", f"{r['workload']} ({r['records_per_request']} entries/request), sync={r['sync']}, "
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


# ---------------------------------------------------------------- command line


def _duration(text: str) -> float:
    found = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m)?\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 10s, 500ms, 2m)")
    return float(found.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[found.group(2)]


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--workload", choices=WORKLOADS, default="fluentbit",
        help="fluentbit: 1,000-record Fluent Bit json bodies, gzip; passthrough: 1,000-entry upstream-form "
             "bodies, gzip; single: 1 entry per request, 64 clients (default %(default)s)")
    add("--sync", choices=["full", "normal"], default="normal", help="the queue's sync mode (default %(default)s)")
    add("--duration", type=_duration, default=10.0, help="how long to send, e.g. 10s (default 10s)")
    add("--rate", type=float, help="cap the load at this many entries/s (default: as fast as it goes)")
    add("--concurrency", type=int, help="concurrent clients (default 8, or 64 for single)")
    add("--records", type=int, default=1000, help="entries per request of the bulk workloads (default 1000)")
    add("--upstream", choices=["mock", "sink"], default="mock",
        help="mock: `relay mock-upstream`, which validates every entry; sink: a lean counting "
             "stand-in, to see the relay without the mock's CPU (default %(default)s)")
    add("--no-verify", action="store_true",
        help="do not record delivered ids (the record holds ~330 bytes an entry, on /dev/shm: use this "
             "for long flat-out runs); duplicates and losses then by count only")
    add("--sink-option", action="append", default=[], metavar="KEY=VALUE",
        help='an extra line for the relay\'s [sinks.upstream], e.g. compression_level=2 (repeatable)')
    add("--drain-timeout", type=_duration, default=120.0, help="longest wait for the queue to drain (120s)")
    add("--profile", metavar="FILE", help="record the relay with py-spy while it runs: FILE.svg a flame "
                                       "graph, FILE.txt collapsed stacks, FILE.json speedscope")
    add("--json", action="store_true", help="print the result as JSON")
    add("--keep", metavar="DIR", help="keep the work dir (configs, logs, queue, record) in DIR")
    add("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    args.sink_option = [_sink_line(option) for option in args.sink_option]
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
            profiler = _Profiler(args.profile, bench)
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


class _Profiler:
    """py-spy on the relay from the moment it is up until the bench stops it."""

    def __init__(self, path: str, bench: Run) -> None:
        self.path, self.bench = path, bench
        self.popen: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._attach, daemon=True)
        self._thread.start()

    def _attach(self) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        while "loadgen" not in self.bench.children:  # the relay is up once the load generator starts
            time.sleep(0.05)
        relay = self.bench.children["relay"]
        formats = {".txt": "raw", ".json": "speedscope"}  # else a flame graph (SVG)
        self.popen = subprocess.Popen([py_spy, "record", "--pid", str(relay.pid), "--rate", "200",
                                       "--threads", "-o", self.path,
                                       "--duration", str(max(int(self.bench.args.duration), 1)),
                                       "--format", formats.get(Path(self.path).suffix, "flamegraph")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self._thread.join(5)
        if self.popen is not None:
            self.popen.wait(30)  # py-spy writes its file when the relay exits
        if self.path.endswith(".txt") and Path(self.path).is_file() and not self.bench.args.quiet:
            print(profile_breakdown(Path(self.path).read_text()), file=sys.stderr)


# Where a sample's time goes: the first frame, from the leaf up, that matches. Library
# frames not listed (diskcache, sqlite3, isal, msgspec) count for the relay code that called them.
PROFILE_STAGES: list[tuple[str, str]] = [
    ("decode: gunzip + JSON", r"relay/(decode|compression)\.py"),
    ("map + validate", r"<mapping |relay/mapping/|relay/schema\.py"),
    ("pipeline: encode NDJSON, answer", r"relay/pipeline\.py"),
    ("queue: commit ingest group", r"DiskQueue\._commit_appends|DiskQueue\.append\.<locals>\.write"),
    ("queue: append (event loop side)", r"DiskQueue\.append |DiskQueue\.append\.<locals>"),
    ("queue: read inbox", r"DiskQueue\.read_inbox"),
    ("queue: seal batch", r"DiskQueue\.seal"),
    ("queue: load + delete batch", r"DiskQueue\.(load_batch|delete_batch)"),
    ("queue: hand-off to the event loop", r"relay/queue\.py"),
    ("batcher: split, join, gzip", r"relay/batcher\.py"),
    ("sender: dispatch + aiohttp client", r"relay/(sender|dispatch)\.py|aiohttp/(client|connector)"),
    ("metrics", r"prometheus_client/|relay/telemetry\.py"),
    ("aiohttp server", r"aiohttp/"),
    ("ingest route", r"relay/ingest\.py"),
    ("thread pool (to_thread)", r"concurrent/futures/"),
    ("event loop: uvloop, socket I/O, callbacks", r"asyncio/|uvloop"),
]


# Leaf frames where a thread waits for work: py-spy sees them as running (a futex wait on a
# queue), so they are left out of the percentages.
_WAITING = re.compile(r"^(DiskQueue\._run \(relay/queue\.py|_worker \(concurrent/futures/thread\.py)")


def profile_breakdown(collapsed: str) -> str:
    """A py-spy raw (collapsed) profile as % of samples per pipeline stage, and per thread."""
    stages = [(name, re.compile(pattern)) for name, pattern in PROFILE_STAGES]
    by_stage: dict[str, int] = {}
    by_thread: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        thread = "executor" if thread.startswith(("asyncio_", "ThreadPool")) else thread
        n = int(count)
        if _WAITING.search(frames[-1]):
            continue
        total += n
        by_thread[thread] = by_thread.get(thread, 0) + n
        stage = next((name for frame in reversed(frames[1:]) for name, rx in stages if rx.search(frame)), "other")
        by_stage[stage] = by_stage.get(stage, 0) + n
    lines = [f"relay profile: {total} samples at 200/s (threads at work; waits for work left out)"]
    lines += [f"  {100 * n / max(total, 1):5.1f}%  {name}" for name, n in sorted(by_stage.items(), key=lambda x: -x[1])]
    lines.append("  by thread: " + ", ".join(f"{name} {100 * n / max(total, 1):.1f}%"
                                             for name, n in sorted(by_thread.items(), key=lambda x: -x[1])))
    return "\n".join(lines)

"""The processes of one `relay bench` run: start them on loopback with a temporary config, sample them, stop them.

    load generator (python -m relay.tools.loadgen drive)  ->  relay serve  ->  upstream
                                                         temp config     `relay mock-upstream`
                                                         temp queue      (or the lean counting sink)

Each runs apart from the bench, with its output in the work dir, so that a crash shows
in its log tail and its CPU is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from relay.config import load
from relay.tools.bench.procfs import cpu_seconds, machine_busy_seconds, read_bytes
from relay.tools.bench.workloads import PROTOCOL_SOURCES, workload
from relay.tools.local_config import DEFAULT_SOURCES, relay_toml, sink_toml

PINNED_NOW = "2026-11-25T09:30:00Z"  # the generated traffic (bench/records.py) is dated 2026-11-25
API_KEY = "bench-key"
RATE_CEILING = {"bulk": 400_000, "single": 20_000}  # entries/s a pool of bodies is sized for
POOL_CAP = {"bulk": 4_000, "single": 400_000}  # bodies; beyond it they are sent again (counted)
CONCURRENCY = {"fluentbit": 8, "passthrough": 8, "ndjson": 8, "single": 64, "es_bulk": 8, "splunk_hec": 8,
               "datadog": 8, "otlp": 8, "loki": 8}
PACKAGE_ROOT = Path(__file__).resolve().parents[3]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    """The bench could not run (a process did not start, a port never answered)."""


class Child:
    """A process of the bench, its output in DIR/NAME.log; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], workdir: Path, *, pipes: bool = False,
                 executable: str | None = None) -> None:
        """`args` for `python ARGS`, or for `executable ARGS` (a peer's binary) when given."""
        self.name = name
        self.log_path = workdir / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [executable or sys.executable, *args], cwd=workdir, env=env,
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


def get_json(url: str, timeout: float = 5.0) -> Any:
    with _OPENER.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def get_text(url: str, timeout: float = 5.0) -> str:
    with _OPENER.open(url, timeout=timeout) as response:
        data: bytes = response.read()
        return data.decode()


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


# ---------------------------------------------------------------- the run's processes


@dataclass
class Sample:
    at: float
    acked: int = 0
    delivered: int = 0
    relay_cpu: float = 0.0
    upstream_cpu: float = 0.0
    upstream_bytes: int = 0
    busy: float = 0.0  # the whole machine's busy CPU seconds
    last_delivery: float = 0.0  # upstream's time.monotonic() of the last entries it accepted



@dataclass
class Run:
    args: argparse.Namespace
    workdir: Path
    record: Path | None
    children: dict[str, Child] = field(default_factory=dict)
    ticks: list[dict[str, Any]] = field(default_factory=list)  # the load generator's, one a second
    done: threading.Event = field(default_factory=threading.Event)
    upstream_base: str = ""
    relay_base: str = ""  # the ingest of the process under test: the relay, or a peer in its place
    subject: str = "relay"  # which child is under test: "relay", or a peer's name (`--peer`)
    worker_count: int = 1  # the relay's server.workers as it ran ("auto" resolved)

    def sample(self, acked: int = 0) -> Sample:
        relay, upstream = self.children[self.subject], self.children["upstream"]
        stats = get_json(self.upstream_base + "/_mock/stats")
        return Sample(time.monotonic(), acked, int(stats["entries_accepted"]), cpu_seconds(relay.pid),
                      cpu_seconds(upstream.pid), read_bytes(upstream.pid), machine_busy_seconds(),
                      float(stats.get("last_accepted_at", 0.0)))


def _pool_size(args: argparse.Namespace, per_body: int) -> int:
    kind = "single" if per_body == 1 else "bulk"
    rate = args.rate or RATE_CEILING[kind]
    return max(16, min(POOL_CAP[kind], int(args.duration * rate * 1.2 / per_body) + 1))


def start_processes(run: Run) -> None:
    start_upstream(run)
    start_relay(run)


def start_upstream(run: Run) -> None:
    args, workdir = run.args, run.workdir
    if args.upstream == "mock":
        command = ["-m", "relay", "mock-upstream", "--port", "0", "--api-key", API_KEY, "--now", PINNED_NOW]
        if run.record is not None:
            command += ["--record", str(run.record)]
    else:
        command = ["-m", "relay.tools.loadgen", "sink", "--api-key", API_KEY]
        if run.record is not None:
            command += ["--bodies", str(run.record)]
    upstream = run.children["upstream"] = Child("upstream", command, workdir)
    run.upstream_base = f"http://127.0.0.1:{_listening_port(upstream)}"
    _wait("upstream /healthz", upstream, lambda: get_json(run.upstream_base + "/healthz"))


def start_relay(run: Run) -> None:
    args, workdir = run.args, run.workdir
    port = _free_port()
    config = workdir / "relay.toml"
    sink = sink_toml("upstream", run.upstream_base + "/v1/logs/custom", API_KEY)
    sink += "".join(f"{line}\n" for line in args.sink_option)  # `--sink-option`s, already TOML lines
    config.write_text(relay_toml(port=port, queue_dir=workdir / "queue", sinks=sink, now=PINNED_NOW, sync=args.sync,
                                 queue_max_size="16GiB", max_body_size="64MiB", shutdown_grace="20s",
                                 workers=getattr(args, "workers", "auto"),
                                 sources=DEFAULT_SOURCES + PROTOCOL_SOURCES))
    run.worker_count = load(config).worker_count  # what "auto" comes to here, for the report
    relay = run.children["relay"] = Child("relay", ["-m", "relay", "serve", "-c", str(config)], workdir)
    run.relay_base = f"http://127.0.0.1:{port}"
    # /readyz answers 200 once every worker does: keep-alive clients connecting before a worker
    # listens would all stay on the others (SO_REUSEPORT spreads only over bound sockets).
    _wait("relay /readyz", relay, lambda: get_json(run.relay_base + "/readyz"), timeout=90)


def start_loadgen(run: Run, port: int) -> tuple[Child, dict[str, Any]]:
    args = run.args
    load = workload(args.workload, args.records)
    command = ["-m", "relay.tools.loadgen", "drive", "--workload", load.name, "--records", str(load.per_body),
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

"""`relay bench --profile`: py-spy on the relay during the load, and its samples per pipeline stage.

The flame graph says where time goes by function; the breakdown says it by stage of the
pipeline (decode, map, queue, batcher, sender...), which is what a change to the relay moves.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from relay.tools.bench.processes import Run


class Profiler:
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
                                       # no --duration: the load generator starts (and this attaches)
                                       # before it has built its bodies; idle threads are not sampled,
                                       # so recording until the relay exits counts the load and the drain
                                       "--threads", "--subprocesses", "-o", self.path,
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
    ("decode: gunzip + JSON", r"relay/stages/(decode|compression|typed)\.py|relay/stages/protocols/"),
    ("map + validate", r"<mapping |relay/mapping/|relay/stages/(schema|timestamps|values)\.py"),
    ("pipeline: encode NDJSON, answer", r"relay/stages/pipeline\.py"),
    ("queue: commit ingest group", r"relay/store/group_commit\.py|DiskQueue\.append_soon\.<locals>\.write"),
    ("queue: pack (gzip) an ingest group", r"DiskQueue\.append_soon\.<locals>\.pack|relay/store/(bodies|writes)\.py"),
    ("queue: read inbox", r"DiskQueue\._?read_inbox"),
    ("queue: seal batch", r"DiskQueue\._?seal"),
    ("queue: load + delete batch", r"DiskQueue\._?(load_batch|delete_batch|checked)"),
    ("queue: the rest (DB thread, hand-off)", r"relay/store/"),
    ("batcher: split, join, gzip", r"relay/delivery/batcher\.py"),
    ("sender: dispatch + aiohttp client", r"relay/delivery/|aiohttp/(client|connector)"),
    ("metrics", r"prometheus_client/|relay/telemetry\.py"),
    ("aiohttp server", r"aiohttp/"),
    ("ingest route", r"relay/server/"),
    ("thread pool (to_thread)", r"concurrent/futures/"),
    ("event loop: uvloop, socket I/O, callbacks", r"asyncio/|uvloop"),
]


# Leaf frames where a thread waits for work: py-spy sees them as running (a futex wait on a
# queue), so they are left out of the percentages.
_WAITING = re.compile(r"^(DbThread\._run \(relay/store/jobs\.py:11[38]\)|_worker \(concurrent/futures/thread\.py)")


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
        while frames and frames[0].startswith("process"):  # --subprocesses: supervisor;worker;thread...
            frames = frames[1:]
        thread = frames[0].split(": ", 1)[-1] if frames and frames[0].startswith("thread") else "?"
        thread = "executor" if thread.startswith(("asyncio_", "uvloop_", "ThreadPool")) else thread
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

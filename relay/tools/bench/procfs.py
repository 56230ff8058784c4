"""What /proc says during `relay bench`: CPU, peak memory and bytes read of a process tree, and the machine.

The relay, its upstream and the load generator are separate process trees; the bench
reads each from /proc rather than asking it, so a process under load costs nothing to
measure and cannot misreport itself.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")


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
    """The tree's VmHWM added up, MiB: with several worker processes, what they all took (each at
    its own peak, so at most that much at once)."""
    peak = 0
    for pid in _tree(root):
        try:
            found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        except OSError:
            continue
        peak += int(found.group(1)) if found else 0
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


def machine() -> dict[str, Any]:
    model = ""
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model = found.group(1).strip() if found else ""
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kernel": platform.release()}

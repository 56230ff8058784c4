"""How many cores this process may really use: what `server.workers = "auto"` counts.

os.cpu_count() is the machine's, which in a container or under taskset is a lie: a pod
limited to 2 CPUs on a 64-core node would start 64 workers, each a whole relay (about
70 MiB), and be throttled and OOM-killed. So the count is the smallest of the CPUs the
scheduler lets us run on (affinity) and the cgroup's CPU quota, rounded up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable(root: Path = Path("/")) -> int:
    """At least 1. `root` is where /proc and /sys are found (tests give a tree of their own)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def cgroup_quota(root: Path = Path("/")) -> float | None:
    """The CPUs our cgroup may use per period (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us`); None: no limit."""
    for path in _v2_files(root):
        try:
            fields = path.read_text().split()  # "max 100000" or "200000 100000"
        except OSError:
            continue
        if len(fields) == 2:
            return None if fields[0] == "max" else _ratio(fields[0], fields[1])
    v1 = root / "sys/fs/cgroup/cpu"
    if not v1.is_dir():
        v1 = root / "sys/fs/cgroup/cpu,cpuacct"
    try:
        return _ratio((v1 / "cpu.cfs_quota_us").read_text().strip(), (v1 / "cpu.cfs_period_us").read_text().strip())
    except OSError:
        return None


def _v2_files(root: Path) -> list[Path]:
    # Our own cgroup's file first (outside a cgroup namespace we sit deep in the tree), then the root's.
    files = []
    try:
        for line in (root / "proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::/") and line.strip() != "0::/":
                files.append(root / "sys/fs/cgroup" / line[4:].strip() / "cpu.max")
    except OSError:
        pass
    files.append(root / "sys/fs/cgroup/cpu.max")
    return [f for f in files if f.is_file()]


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None  # v1 writes -1 for no limit

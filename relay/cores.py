"""How many cores, and how much memory, this process may really use: what `server.workers = "auto"` counts.

os.cpu_count() is the machine's, which in a container or under taskset is a lie: a pod
limited to 2 CPUs on a 64-core node would start 64 workers, each a whole relay (about
70 MiB), and be throttled and OOM-killed. So the count is the smallest of the CPUs the
scheduler lets us run on (affinity) and the cgroup's CPU quota, rounded up. A pod with
no CPU limit but a memory limit (common: CPU limits throttle) is held back by that
limit instead (relay.config's worker_count): its node's cores do not tell how many
workers fit in 512 MiB.
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


def memory_limit(root: Path = Path("/")) -> int | None:
    """Bytes our cgroup may hold (cgroup v2 `memory.max`, else v1 `memory.limit_in_bytes`); None: no limit."""
    for path in _v2_files(root, "memory.max"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        return None if text == "max" else _bytes(text)
    for path in _v1_files(root, "memory", "memory.limit_in_bytes"):
        try:
            return _bytes(path.read_text().strip())
        except OSError:
            continue
    return None


def _bytes(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < 2**60 else None  # v1 writes ~2**63 (rounded to a page) for no limit


def _v2_files(root: Path, name: str = "cpu.max") -> list[Path]:
    # Our own cgroup's file first (outside a cgroup namespace we sit deep in the tree), then the root's.
    files = []
    try:
        for line in (root / "proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::/") and line.strip() != "0::/":
                files.append(root / "sys/fs/cgroup" / line[4:].strip() / name)
    except OSError:
        pass
    files.append(root / "sys/fs/cgroup" / name)
    return [f for f in files if f.is_file()]


def _v1_files(root: Path, controller: str, name: str) -> list[Path]:
    # As _v2_files: our own cgroup's file under the controller's hierarchy first, then its root's.
    files = []
    try:
        for line in (root / "proc/self/cgroup").read_text().splitlines():
            _, _, rest = line.partition(":")
            controllers, _, where = rest.partition(":")
            if controller in controllers.split(",") and where.strip() not in ("", "/"):
                files.append(root / "sys/fs/cgroup" / controller / where.strip().lstrip("/") / name)
    except OSError:
        pass
    files.append(root / "sys/fs/cgroup" / controller / name)
    return files


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None  # v1 writes -1 for no limit

"""relay/cores.py: the cores `workers = "auto"` counts, from a /proc and /sys tree of the test's own."""

from __future__ import annotations

import os
from pathlib import Path

from relay import cores


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_no_cgroup_limit_counts_the_cpus_we_may_run_on(tmp_path: Path) -> None:
    assert cores.cgroup_quota(tmp_path) is None
    assert cores.usable(tmp_path) == len(os.sched_getaffinity(0))
    unlimited = tree(tmp_path, {"sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert cores.cgroup_quota(unlimited) is None


def test_a_cgroup_v2_quota_rounds_up_and_caps_the_count(tmp_path: Path) -> None:
    root = tree(tmp_path, {"proc/self/cgroup": "0::/kubepods/pod1/c1\n",
                           "sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "150000 100000\n",
                           "sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert cores.cgroup_quota(root) == 1.5
    assert cores.usable(root) == min(2, len(os.sched_getaffinity(0)))
    tree(tmp_path, {"sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "10000 100000\n"})  # a tenth of a core: still one
    assert cores.usable(root) == 1


def test_a_cgroup_v1_quota(tmp_path: Path) -> None:
    root = tree(tmp_path, {"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "100000\n",
                           "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"})
    assert cores.cgroup_quota(root) == 1.0 and cores.usable(root) == 1
    tree(tmp_path, {"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n"})
    assert cores.cgroup_quota(root) is None


def test_a_cgroup_v2_memory_limit_of_our_own_cgroup_first(tmp_path: Path) -> None:
    assert cores.memory_limit(tmp_path) is None
    root = tree(tmp_path, {"proc/self/cgroup": "0::/kubepods/pod1/c1\n",
                           "sys/fs/cgroup/kubepods/pod1/c1/memory.max": "536870912\n",
                           "sys/fs/cgroup/memory.max": "max\n"})
    assert cores.memory_limit(root) == 512 * 2**20
    tree(tmp_path, {"sys/fs/cgroup/kubepods/pod1/c1/memory.max": "max\n"})
    assert cores.memory_limit(root) is None


def test_a_cgroup_v1_memory_limit(tmp_path: Path) -> None:
    root = tree(tmp_path, {"proc/self/cgroup": "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
                           "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "268435456\n",
                           "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"})
    assert cores.memory_limit(root) == 256 * 2**20
    (root / "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes").unlink()  # inside the namespace: the root's
    assert cores.memory_limit(root) is None  # v1's "no limit" is ~2**63
    tree(tmp_path, {"sys/fs/cgroup/memory/memory.limit_in_bytes": "1073741824\n"})
    assert cores.memory_limit(root) == 2**30

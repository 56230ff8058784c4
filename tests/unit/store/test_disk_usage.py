"""The on-disk measure behind queue.max_size, checked against du itself."""

import os
import subprocess
from pathlib import Path

from relay.store import disk_usage


def du(path: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def test_allocated_bytes_is_what_du_prints(tmp_path: Path) -> None:
    (tmp_path / "db").write_bytes(os.urandom(100_000))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "value").write_bytes(b"x" * 5000)
    with open(tmp_path / "sparse", "wb") as sparse:  # apparent size is not what the disk holds
        sparse.seek(10 * 2**20)
        sparse.write(b"end")
    assert disk_usage.allocated_bytes(str(tmp_path)) == du(tmp_path)
    assert disk_usage.allocated_bytes(str(tmp_path)) < 10 * 2**20


def test_a_missing_directory_counts_nothing(tmp_path: Path) -> None:
    assert disk_usage.allocated_bytes(str(tmp_path / "absent")) == 0


def test_wal_limit_and_reserve_scale_with_the_budget_within_bounds() -> None:
    assert disk_usage.wal_limit(2 * 2**20) == 64 * 2**10
    assert disk_usage.wal_limit(4 * 2**30) == 4 * 2**20
    assert disk_usage.reserve(2 * 2**20) == 128 * 2**10


def test_a_write_counts_twice_until_free_pages_absorb_it() -> None:
    # Through the WAL, then into the database file: free pages are used before it grows.
    assert disk_usage.projected(1000, 0, 800) == 1000 + 2 * 1000
    assert disk_usage.projected(1000, 10_000, 800) == 1000 + 1000


def test_fits_keeps_the_reserve_free() -> None:
    budget = 2 * 2**20
    room = budget - disk_usage.reserve(budget)
    assert disk_usage.fits(room - 2 * 1250, 0, 1000, budget)
    assert not disk_usage.fits(room - 2 * 1250 + 1, 0, 1000, budget)


def test_a_volume_that_cannot_hold_the_reserve_or_max_size_is_named_with_figures(tmp_path: Path) -> None:
    stat = os.statvfs(tmp_path)
    free = stat.f_bavail * stat.f_frsize
    assert disk_usage.capacity_problems(str(tmp_path / "queue"), 2**20, 2**20, 2**20) == []
    problems = disk_usage.capacity_problems(str(tmp_path / "queue"), 2**20, free + 2**30, 2**20)
    assert len(problems) == 2 and problems[0].startswith("queue.min_free_space:") and "503" in problems[0]
    problems = disk_usage.capacity_problems(str(tmp_path / "queue"), free * 4, 2**20, 2**20)
    assert problems == [problems[0]] and problems[0].startswith("queue.max_size:") and f"{free * 4:,}" in problems[0]


def test_the_wal_reserve_is_the_whole_limit_whatever_the_wal_holds() -> None:
    # What the WAL holds is owed again to the database file at its checkpoint (test_disk_full.py).
    assert disk_usage.wal_reserve(2**30) == disk_usage.wal_limit(2**30) == 4 * 2**20
    assert disk_usage.wal_reserve(2**20) == disk_usage.MIN_WAL_LIMIT

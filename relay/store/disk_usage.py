"""What the queue directory costs on disk, and whether a write still fits in `queue.max_size`.

Why measure instead of adding up value lengths: users size a volume by
`max_size` and check it with `du`. The bytes of the values are not what the
disk holds: SQLite adds page and B-tree overhead, its WAL grows between
checkpoints, and deleted rows leave free pages that keep the file size (they
are reused, never returned). So the budget is the allocated size of every
file in the directory (st_blocks * 512, what `du -s --block-size=1` prints),
and a write is admitted on a projection of that figure.
"""

from __future__ import annotations

import os

# An item costs more than its value: a row header, its key, B-tree pages not full.
PAGE_OVERHEAD = 1.25
MIN_WAL_LIMIT = 32 * 2**10
MAX_WAL_LIMIT = 4 * 2**20  # about SQLite's default checkpoint (1,000 pages): min_free_space covers it


def allocated_bytes(path: str) -> int:
    """Allocated bytes of the directory and everything under it (`du -s --block-size=1`)."""
    total = 0
    try:
        total += os.stat(path).st_blocks * 512
        entries = list(os.scandir(path))
    except OSError:
        return total
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += allocated_bytes(entry.path)
            else:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:  # removed meanwhile (SQLite drops its -wal and -shm on close)
            continue
    return total


def wal_limit(max_size: int) -> int:
    """Bytes SQLite's WAL may keep between checkpoints (and is truncated back to after one).

    A thirty-second of the budget: small enough that it never eats the budget, large
    enough that a small queue does not checkpoint on every commit."""
    return max(MIN_WAL_LIMIT, min(MAX_WAL_LIMIT, max_size // 32))


def reserve(max_size: int) -> int:
    """Room kept free under max_size for what frees space later: sealing writes a batch
    before its inbox items go, and deleting delivered batches writes to the WAL first."""
    return 2 * wal_limit(max_size)


def projected(on_disk: int, free_pages: int, pending: int) -> int:
    """The directory's size once `pending` value bytes are committed and checkpointed.

    They pass through the WAL (which is truncated back after the checkpoint, and is
    in `on_disk` already as far as it stays) and then fill the database's free pages
    before the file grows."""
    cost = int(pending * PAGE_OVERHEAD)
    return on_disk + cost + max(0, cost - free_pages)


def fits(on_disk: int, free_pages: int, pending: int, max_size: int) -> bool:
    return projected(on_disk, free_pages, pending) + reserve(max_size) <= max_size

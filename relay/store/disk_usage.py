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

from relay.store.shards import is_shard_dir

# An item costs more than its value: a row header, its key, B-tree pages not full.
PAGE_OVERHEAD = 1.25
MIN_WAL_LIMIT = 32 * 2**10
DAMAGED_DIR = "damaged"  # queue.path/damaged/<time>/: databases a salvage moved aside
MAX_WAL_LIMIT = 4 * 2**20  # about SQLite's default checkpoint (1,000 pages): min_free_space covers it


def allocated_bytes(path: str, top: str | None = None) -> int:
    """Allocated bytes of the directory and everything under it (`du -s --block-size=1`), but for
    the other shards' directories of a sharded queue (relay.store.shards)."""
    top = path if top is None else top
    total = 0
    try:
        total += os.stat(path).st_blocks * 512
        entries = list(os.scandir(path))
    except OSError:
        return total
    for entry in entries:
        if entry.name == DAMAGED_DIR:
            continue  # damaged databases kept for the operator: on the disk, not in the queue's budget
        if path == top and is_shard_dir(entry.name):
            continue  # the other workers' shards (queue.path/shard-N/) have budgets of their own
        try:
            if entry.is_dir(follow_symlinks=False):
                total += allocated_bytes(entry.path, top)
            else:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:  # removed meanwhile (SQLite drops its -wal and -shm on close)
            continue
    return total


def free_space(path: str) -> int:
    """Bytes an unprivileged writer may still use on path's filesystem (huge when unknown)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return 2**62
    return stat.f_bavail * stat.f_frsize


def wal_limit(max_size: int) -> int:
    """Bytes SQLite's WAL may keep between checkpoints (and is truncated back to after one).

    A thirty-second of the budget: small enough that it never eats the budget, large
    enough that a small queue does not checkpoint on every commit."""
    return max(MIN_WAL_LIMIT, min(MAX_WAL_LIMIT, max_size // 32))


def wal_reserve(max_size: int) -> int:
    """Free bytes the filesystem must keep for the queue's WAL: its whole limit, whatever it holds now.

    The WAL is truncated to zero at quiet moments (queue.py), handing its space back. What it holds
    later costs twice: once in the WAL, and again when the checkpoint copies its frames into the
    database file, which grows. Keeping only the room the WAL has left (limit - held) lets each
    commit's frames take the room their own checkpoint needs, and a full volume then cannot
    checkpoint, seal or delete (SQLITE_FULL at every try). With the limit kept, a WAL of `held`
    bytes has limit - held to grow into and `held` for its checkpoint."""
    return wal_limit(max_size)


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


def admit(sizes: list[int], *, path: str, on_disk: int, free_pages: int, max_size: int,
          min_free_space: int) -> list[str | None]:
    """For each write of a commit group (value bytes, in order): None when it is taken, else why
    not (the queue's budget, or the disk reserve), measured once for the whole group."""
    # Keep min_free_space on the filesystem for what frees space later: sealing and deleting
    # delivered batches also write (to SQLite's WAL) before space comes back. The WAL's whole
    # limit is kept too (wal_reserve says why).
    wal = wal_reserve(max_size)
    disk = free_space(path) - min_free_space - wal
    pending = 0
    answers: list[str | None] = []
    for nbytes in sizes:
        if not fits(on_disk, free_pages, pending + nbytes, max_size):
            answers.append(f"the queue is full ({on_disk} of {max_size} bytes on disk, "
                           f"{reserve(max_size)} of them kept for delivery)")
        elif nbytes * 2 > disk:
            answers.append(f"the disk reserve: the filesystem holding {path} has {disk + min_free_space + wal} "
                           f"bytes free and queue.min_free_space keeps {min_free_space} of them for delivery "
                           f"(and {wal} for the queue's WAL)")
        else:
            pending += nbytes
            disk -= nbytes * 2
            answers.append(None)
    return answers


def _filesystem(path: str) -> tuple[int, int]:
    """(free bytes for us, total bytes) of the filesystem that holds (or will hold) path."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    stat = os.statvfs(probe)
    return stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize


def capacity_problems(path: str, max_size: int, min_free_space: int, room: int) -> list[str]:
    """What the volume holding the queue cannot do, with the figures: [] when it can hold it.

    `room`: bytes for a few batches above the reserve, without which every request is
    refused (503) from the start."""
    try:
        free, total = _filesystem(path)
    except OSError:
        return []
    queued = allocated_bytes(path) if os.path.isdir(path) else 0
    problems = []
    wal = wal_reserve(max_size)
    if free < min_free_space + room + wal:
        problems.append(f"queue.min_free_space: the filesystem holding {path} has {free:,} bytes free "
                        f"({total:,} in all), less than min_free_space ({min_free_space:,}) plus room for a few "
                        f"batches ({room:,}) and the queue's WAL ({wal:,}): new data would be refused (503) until "
                        "space is freed; lower min_free_space or give the queue a larger volume")
    usable = free + queued - min_free_space
    if max_size > usable:
        problems.append(f"queue.max_size: {max_size:,} bytes, but the filesystem holding {path} can give the "
                        f"queue at most {max(usable, 0):,} ({free:,} free + {queued:,} queued - min_free_space "
                        f"{min_free_space:,}): the disk, not max_size, will bound the queue")
    return problems

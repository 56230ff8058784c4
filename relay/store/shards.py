"""Queue shards: which directory each worker process owns, and which it drains for others.

With `server.workers = N` worker i owns one shard of the queue: shard 0 is
queue.path itself (so a queue written by a single-process relay is shard 0 as
it stands, with nothing to move), shard i > 0 is queue.path/shard-<i>/. Each
shard is a whole DiskQueue (its own database, lock, dead letters, damaged/),
bounded by its share of queue.max_size.

A restart with fewer workers leaves shards nobody owns; worker (k mod N) adopts
shard k: delivers what it holds, never writes new entries to it. An emptied
shard stays as an empty directory (adopted again, and closed at once, next time).
"""

from __future__ import annotations

import os
import re

RUN_DIR = "run"  # queue.path/run/: the workers' private sockets
_SHARD = re.compile(r"^shard-([1-9][0-9]*)$")


def shard_path(root: str, index: int) -> str:
    return root if index == 0 else os.path.join(root, f"shard-{index}")


def is_shard_dir(name: str) -> bool:
    """Entries of queue.path that belong to other shards (or to the workers), not to shard 0."""
    return name == RUN_DIR or _SHARD.match(name) is not None


def share(max_size: int, count: int) -> int:
    """Each shard's part of queue.max_size."""
    return max_size // count


def existing(root: str) -> list[int]:
    """The shard numbers > 0 that have a directory under `root`, in order."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(_SHARD.match, names) if m)


def adopted(root: str, index: int, count: int) -> list[int]:
    """Shards beyond `count` that worker `index` drains (shard k goes to worker k mod count)."""
    return [k for k in existing(root) if k >= count and k % count == index]


def all_shards(root: str, count: int) -> list[int]:
    """Every shard a relay of `count` workers reads: its own ones and those left over."""
    return sorted(set(range(count)) | set(existing(root)))

"""The queue's group commit, on its DB thread: the appends that arrived together, admitted
against the disk budget and written in one transaction (one fsync), then the group's folded
jobs (deletes of delivered batches) in a transaction without an fsync of its own."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from relay.errors import QueueFull
from relay.store import disk_usage
from relay.store.jobs import Job, resolve

if TYPE_CHECKING:
    from relay.store.queue import DiskQueue

log = logging.getLogger("relay.queue")


class GroupCommit:
    """What DbThread calls with each group; keeps the queue's byte and commit counts."""

    def __init__(self, queue: DiskQueue) -> None:
        self.queue = queue
        self._last_full_warning = -1e9

    def __call__(self, appends: list[Job], folded: list[Job]) -> None:
        if appends:
            self._commit(self._admit(appends))
        self._commit(folded, durable=False)

    def _admit(self, appends: list[Job]) -> list[Job]:
        """The appends the disk budget takes; the others are refused (503) here."""
        queue = self.queue
        for job in appends:
            if job.pack is not None:
                job.nbytes = job.pack()
        # Measured once per group, not per request: a few stat calls and one pragma.
        on_disk = queue.disk_bytes = disk_usage.allocated_bytes(queue.path)
        try:
            free_pages = int(queue.live_cache()._sql("PRAGMA freelist_count").fetchone()[0]) * queue.page_size
        except sqlite3.DatabaseError as exc:
            if not queue.recover(exc):
                raise
            free_pages = 0
        refusals = disk_usage.admit([job.nbytes for job in appends], path=queue.path, on_disk=on_disk,
                                    free_pages=free_pages, max_size=queue.max_size,
                                    min_free_space=queue.min_free_space)
        admitted: list[Job] = []
        for job, why in zip(appends, refusals, strict=True):
            if why is None:
                admitted.append(job)
                continue
            self._warn_full(why)
            resolve(job, error=QueueFull(f"{why}; retry later", retry_after=5.0))
        return admitted

    def _commit(self, group: list[Job], *, durable: bool = True) -> None:
        """The jobs of a group in one transaction. Not `durable`: without an fsync of its own (the
        next durable commit's covers it), for writes whose loss costs a duplicate at most."""
        if not group:
            return
        queue = self.queue
        lazy = not durable and queue.sync == "full"
        results: list[Any] = []
        for attempt in (1, 2):
            cache = queue.live_cache()  # read at each attempt: a salvage replaces it
            try:
                if lazy:
                    cache._sql("PRAGMA synchronous = NORMAL")
                try:
                    with cache.transact(retry=True):
                        results = [job.fn() for job in group]
                finally:
                    if lazy:
                        cache._sql("PRAGMA synchronous = FULL")
                if durable:
                    queue.commits += 1
                break
            except BaseException as exc:  # disk full, I/O error: nothing of this group was kept
                if attempt == 1 and queue.recover(exc):  # damaged: written again into the salvaged copy
                    continue
                log.error("queue: commit of %d %s failed: %s", len(group),
                          "requests" if durable else "deletes", exc)
                error = QueueFull(f"the queue could not be written ({exc}); retry later", retry_after=5.0)
                for job in group:
                    resolve(job, error=error)
                return
        for job, result in zip(group, results, strict=True):
            queue.used_bytes += result if job.folds else job.nbytes
            resolve(job, result=result)

    def _warn_full(self, why: str) -> None:
        now = time.monotonic()
        if now - self._last_full_warning >= 10.0:  # once per 10s, not once per refused request
            self._last_full_warning = now
            log.warning("queue: refusing new data (503): %s", why)

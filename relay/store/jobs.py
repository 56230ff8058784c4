"""The queue's DB thread: runs jobs in arrival order and hands each result back to the event loop.

Appends that arrive together are handed to one `commit_appends` call (group
commit: one transaction, one fsync), and the folded jobs among them (deletes of
delivered batches, which need no fsync of their own) in one more; every other job
runs alone, after them.
When nothing has been written for `quiet` seconds after some write, `idle` runs
once (the queue checkpoints its WAL then); under continuous writes it runs
between groups at the latest `longest` seconds after the first write it has
not yet followed, so what `idle` leaves undone is never older than that. Writes are told by `changes()` (the
connection's count of changed rows, read once per group of jobs), so reads --
senders retrying a batch against a down upstream -- do not put it off; it is
timed by the thread's own wait for work, so nothing is added to a commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue as thread_queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("relay.queue")
_GROUP_MAX = 512  # appends per transaction; bounds one commit's latency
QUIET = 0.25  # seconds without a write after which `idle` runs
LONGEST = 1.0  # seconds after the first write not yet folded by `idle`, at the latest, under continuous writes


class Job:
    __slots__ = ("fn", "folds", "future", "is_append", "loop", "nbytes", "on_commit", "pack")

    def __init__(self, fn: Callable[[], Any], future: asyncio.Future[Any] | None,
                 loop: asyncio.AbstractEventLoop | None, nbytes: int = 0, is_append: bool = False,
                 folds: bool = False) -> None:
        self.fn, self.future, self.loop = fn, future, loop
        self.nbytes, self.is_append = nbytes, is_append
        # runs with the group, in a transaction of its own without an fsync (the next group's covers
        # it): a write whose loss in a crash costs a duplicate at most (a delivered batch sent again)
        self.folds = folds
        self.on_commit: Callable[[Any], None] | None = None
        self.pack: Callable[[], int] | None = None  # runs before the transaction; returns the bytes to write


def resolve(job: Job, *, result: Any = None, error: BaseException | None = None) -> None:
    future, loop = job.future, job.loop
    if future is None or loop is None:
        return

    def settle() -> None:
        if error is None and job.on_commit is not None:
            job.on_commit(result)
        if future.done():
            return  # the caller went away (client disconnected); the write stands
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # loop closed during shutdown


class DbThread:
    """One thread owning every call on the Cache: SQLite serialises writers anyway."""

    def __init__(self, commit_appends: Callable[[list[Job], list[Job]], None],
                 recover: Callable[[BaseException], bool] = lambda exc: False,
                 idle: Callable[[], None] = lambda: None, quiet: float = QUIET,
                 changes: Callable[[], int] = lambda: 0, longest: float = LONGEST) -> None:
        self._commit_appends = commit_appends
        self._recover = recover  # True: the database was repaired, run the job once more
        self._idle = idle  # runs once `quiet` seconds after the last write (and before the thread ends)
        self._quiet, self._longest = quiet, longest
        self._changes = changes  # rows changed so far: a new figure means a job wrote
        self._jobs: thread_queue.SimpleQueue[Job | None] = thread_queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="relay-queue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the jobs already queued, then end the thread."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def put(self, job: Job) -> None:
        self._jobs.put(job)

    async def call(self, fn: Callable[[], T], *, folds: bool = False) -> T:
        """Run fn on the DB thread and wait for its result (`folds`: see Job)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(Job(fn, future, loop, folds=folds))
        return await future

    def _run(self) -> None:
        jobs = self._jobs
        changes = self._changes()
        due: float | None = None  # when `idle` runs: `quiet` seconds after the last write
        latest = 0.0  # ... or `longest` seconds after the first write since it last ran
        while True:
            try:
                if due is None:
                    job = jobs.get()
                else:
                    wait = due - time.monotonic()
                    if wait <= 0:
                        raise thread_queue.Empty  # jobs kept coming: they do not put it off
                    job = jobs.get(timeout=wait)
            except thread_queue.Empty:
                due = None
                self._run_idle()
                changes = self._changes()
                continue
            if job is None:
                self._run_idle()
                return
            group = [job]
            while len(group) < _GROUP_MAX:
                try:
                    more = jobs.get_nowait()
                except thread_queue.Empty:
                    break
                if more is None:
                    jobs.put(None)  # finish this group, then stop
                    break
                group.append(more)
            appends = [j for j in group if j.is_append]
            folded = [j for j in group if j.folds]
            if appends or folded:
                self._commit_appends(appends, folded)
            for other in group:
                if not other.is_append and not other.folds:
                    self._run_one(other)
            now = self._changes()
            if now != changes:
                changes = now
                clock = time.monotonic()
                if due is None:
                    latest = clock + self._longest
                due = min(clock + self._quiet, latest)

    def _run_idle(self) -> None:
        try:
            self._idle()
        except Exception as exc:  # never end the thread: the next quiet moment tries again
            if not self._recover(exc):
                log.warning("queue: idle task failed: %s", exc)

    def _run_one(self, job: Job) -> None:
        try:
            try:
                result = job.fn()
            except Exception as exc:
                if not self._recover(exc):
                    raise
                result = job.fn()  # once more, on the salvaged database
        except BaseException as exc:
            resolve(job, error=exc)
        else:
            resolve(job, result=result)

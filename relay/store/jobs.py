"""The queue's DB thread: runs jobs in arrival order and hands each result back to the event loop.

Appends that arrive together are handed to one `commit_appends` call (group
commit: one transaction, one fsync); every other job runs alone, after them.
When no job has come for `quiet` seconds after some ran, `idle` runs once (the
queue checkpoints its WAL then): timed by the thread's own wait for work, so
nothing is added to a commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue as thread_queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("relay.queue")
_GROUP_MAX = 512  # appends per transaction; bounds one commit's latency
QUIET = 0.25  # seconds without a job after which `idle` runs


class Job:
    __slots__ = ("fn", "future", "is_append", "loop", "nbytes", "on_commit", "pack")

    def __init__(self, fn: Callable[[], Any], future: asyncio.Future[Any] | None,
                 loop: asyncio.AbstractEventLoop | None, nbytes: int = 0, is_append: bool = False) -> None:
        self.fn, self.future, self.loop = fn, future, loop
        self.nbytes, self.is_append = nbytes, is_append
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

    def __init__(self, commit_appends: Callable[[list[Job]], None],
                 recover: Callable[[BaseException], bool] = lambda exc: False,
                 idle: Callable[[], None] = lambda: None, quiet: float = QUIET) -> None:
        self._commit_appends = commit_appends
        self._recover = recover  # True: the database was repaired, run the job once more
        self._idle = idle  # runs once after `quiet` seconds without a job (and before the thread ends)
        self._quiet = quiet
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

    async def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the DB thread and wait for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(Job(fn, future, loop))
        return await future

    def _run(self) -> None:
        jobs = self._jobs
        busy = False  # some job ran since `idle` last did
        while True:
            try:
                job = jobs.get(timeout=self._quiet) if busy else jobs.get()
            except thread_queue.Empty:
                busy = False
                self._run_idle()
                continue
            if job is None:
                self._run_idle()
                return
            busy = True
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
            if appends:
                self._commit_appends(appends)
            for other in group:
                if not other.is_append:
                    self._run_one(other)

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

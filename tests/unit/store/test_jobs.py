"""The DB thread's quiet-moment task: it runs once after a burst of jobs, never per job."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from relay.store.jobs import DbThread
from tests.support import wait_until
from tests.unit.store.test_queue import append, open_queue


class Writes:
    """A stand-in for the connection's count of changed rows."""

    def __init__(self) -> None:
        self.n = 0

    def write(self) -> None:
        self.n += 1


def test_idle_runs_once_after_a_burst_of_writes_and_again_only_after_more_writes() -> None:
    ran: list[int] = []
    writes = Writes()
    thread = DbThread(lambda appends, folded: None, idle=lambda: ran.append(len(ran)), quiet=0.05, changes=lambda: writes.n)
    thread.start()

    async def burst(n: int, fn: Callable[[], None]) -> None:
        for _ in range(n):
            await thread.call(fn)

    try:
        asyncio.run(burst(50, writes.write))
        wait_until(lambda: len(ran) == 1, timeout=10)
        asyncio.run(burst(20, lambda: None))  # reads only: nothing to fold, idle stays done
        asyncio.run(burst(1, writes.write))
        wait_until(lambda: len(ran) == 2, timeout=10)
    finally:
        thread.stop()
    assert len(ran) == 3  # and once more as the thread ends


def test_a_stream_of_reads_does_not_put_idle_off() -> None:
    # Senders retrying against a down upstream read all the time; the WAL must still be emptied.
    ran: list[int] = []
    writes = Writes()
    thread = DbThread(lambda appends, folded: None, idle=lambda: ran.append(1), quiet=0.05, changes=lambda: writes.n)
    thread.start()

    async def main() -> bool:
        await thread.call(writes.write)
        # Reads without a pause for far longer than `quiet`: if each read put idle off, it would never run.
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:
            await thread.call(lambda: None)
        return bool(ran)

    try:
        assert asyncio.run(main()), "a stream of reads kept the quiet-moment task from running for 10 s"
    finally:
        thread.stop()


def test_under_continuous_writes_idle_still_runs_within_longest() -> None:
    ran: list[int] = []
    writes = Writes()
    thread = DbThread(lambda appends, folded: None, idle=lambda: ran.append(writes.n), quiet=10.0, longest=0.05,
                      changes=lambda: writes.n)
    thread.start()

    async def main() -> None:
        while len(ran) < 2:  # never quiet for 10 s: only `longest` can bring it on
            await thread.call(writes.write)

    try:
        asyncio.run(main())
    finally:
        thread.stop()
    assert ran[0] < ran[1]  # between writes, more than once


def test_idle_failing_never_ends_the_thread() -> None:
    def fail() -> None:
        raise OSError("disk gone")

    thread = DbThread(lambda appends, folded: None, idle=fail, quiet=0.01)
    thread.start()
    try:
        asyncio.run(thread.call(lambda: None))
        assert asyncio.run(thread.call(lambda: 42)) == 42
    finally:
        thread.stop()


def test_the_queue_empties_its_wal_once_writes_stop(tmp_path: Path) -> None:
    async def main() -> int:
        queue, outbox = open_queue(tmp_path)
        for i in range(20):
            await append(queue, outbox, i * 3, 3)
        commits = queue.commits
        # the DB thread counts the checkpoint just after SQLite has truncated the WAL: wait for both
        wait_until(lambda: (tmp_path / "cache.db-wal").stat().st_size == 0 and queue.checkpoints >= 1, timeout=10)
        assert queue.checkpoints < commits  # at quiet moments, not after each commit
        queue.close()
        return queue.checkpoints

    asyncio.run(main())

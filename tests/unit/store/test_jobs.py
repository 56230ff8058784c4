"""The DB thread's quiet-moment task: it runs once after a burst of jobs, never per job."""

import asyncio
from pathlib import Path

from relay.store.jobs import DbThread
from tests.support import wait_until
from tests.unit.store.test_queue import append, open_queue


def test_idle_runs_once_after_a_burst_and_again_only_after_more_work() -> None:
    ran: list[int] = []
    thread = DbThread(lambda appends: None, idle=lambda: ran.append(len(ran)), quiet=0.05)
    thread.start()

    async def burst(n: int) -> None:
        for _ in range(n):
            await thread.call(lambda: None)

    try:
        asyncio.run(burst(50))
        wait_until(lambda: len(ran) == 1, timeout=10)
        asyncio.run(burst(1))
        wait_until(lambda: len(ran) == 2, timeout=10)
    finally:
        thread.stop()
    assert len(ran) == 3  # and once more as the thread ends


def test_idle_failing_never_ends_the_thread() -> None:
    def fail() -> None:
        raise OSError("disk gone")

    thread = DbThread(lambda appends: None, idle=fail, quiet=0.01)
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
        wait_until(lambda: (tmp_path / "cache.db-wal").stat().st_size == 0, timeout=10)
        assert queue.checkpoints >= 1
        assert queue.checkpoints < commits  # at quiet moments, not after each commit
        queue.close()
        return queue.checkpoints

    asyncio.run(main())

"""Outbox bookkeeping, `commit` on a real queue in a temp dir, and the batcher wake-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.errors import QueueFull
from relay.store.outbox import Outbox, commit
from relay.store.queue import DiskQueue


def test_commit_writes_one_item_per_outbox_and_survives_reopen(tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path), max_size=2**30, sync="normal")
        queue.open()
        a, b = Outbox("a"), Outbox("b")
        await commit(queue, [a, b], 2, b'{"n":1}\n{"n":2}\n')
        await commit(queue, [a], 1, b'{"n":3}\n')
        assert (a.unsealed, b.unsealed) == (3, 2)
        assert [ref.seq for ref in a.inbox] == [0, 1] and [ref.seq for ref in b.inbox] == [0]
        queue.close()

    asyncio.run(main())
    queue = DiskQueue(str(tmp_path), max_size=2**30, sync="normal")
    snapshot = queue.open()
    queue.close()
    again = Outbox("a", snapshot["a"])
    assert again.unsealed == 3 and again.next_seq == 2


def test_a_refused_commit_leaves_every_outbox_as_it_was(tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path), max_size=100, sync="normal")
        queue.open()
        outbox = Outbox("a")
        with pytest.raises(QueueFull):
            await commit(queue, [outbox], 50, b"x" * 500)
        assert outbox.unsealed == 0 and not outbox.inbox
        queue.close()

    asyncio.run(main())


def test_reserve_hands_out_distinct_sequence_numbers() -> None:
    outbox = Outbox("a")
    assert [outbox.reserve(), outbox.reserve(3), outbox.reserve()] == [0, 1, 4]


def test_a_stopped_batchers_wake_up_does_not_spin_the_next_one() -> None:
    """A reload that restarts a sink stops its batcher (wake_batcher) and starts a new one on the
    same outbox: with the wake-up left set and nothing unsealed, wait_for_data returned at once
    and the new batcher looped without yielding, freezing the event loop."""

    async def scenario() -> None:
        outbox = Outbox("s")
        outbox.wake_batcher()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(outbox.wait_for_data(), 0.05)

    asyncio.run(scenario())

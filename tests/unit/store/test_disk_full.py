"""The queue on a volume that fills up: the disk reserve, not ENOSPC, refuses new data, and what
is queued can always be sealed, delivered and deleted (a real 16 MiB tmpfs; needs root)."""

import asyncio
import secrets
from pathlib import Path

import pytest

from relay.errors import QueueFull
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue
from relay.store.writes import Write
from tests.unit.store.test_queue import batcher, drain_batches


def incompressible(start: int, n: int) -> bytes:
    return b"".join(b'{"n":%d,"r":"%s"}\n' % (i, secrets.token_urlsafe(300).encode()) for i in range(start, start + n))


async def fill(queue: DiskQueue, outbox: Outbox, start: int, n: int) -> int:
    """Appends n-entry items until the reserve refuses one; the number of entries taken."""
    taken = 0
    while True:
        body = incompressible(start + taken, n)
        try:
            await queue.append([Write("up", outbox.reserve(), n, body)], lambda refs: outbox.committed(refs[0]))
        except QueueFull as exc:
            assert "disk reserve" in str(exc), exc
            return taken
        taken += n


@pytest.mark.parametrize("entries_per_item", [20, 200])
def test_a_full_volume_can_always_seal_deliver_and_delete_what_it_took(tiny_disk: Path, entries_per_item: int) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tiny_disk / "queue"), max_size=2**30, sync="normal", min_free_space=2**20)
        outbox = Outbox("up", queue.open().get("up"))
        start = 0
        for _round in range(3):  # full, drained, full again: the WAL has grown, been folded, emptied
            taken = await fill(queue, outbox, start, entries_per_item)
            assert taken > 0
            b = batcher(queue, outbox)
            while outbox.unsealed:
                await b.seal_one()
            got = await drain_batches(queue, outbox)
            assert sorted(n for batch in got for n in batch) == list(range(start, start + taken))
            start += taken
        queue.close()

    asyncio.run(main())

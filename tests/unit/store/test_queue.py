"""The durable queue, outbox and batcher on a real diskcache in a temp dir."""

import asyncio
import json
import secrets
from pathlib import Path

import msgspec
import pytest
from isal import igzip

from relay.delivery.batcher import Batcher
from relay.errors import QueueFull
from relay.store import disk_usage
from relay.store.layout import InboxItem
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue
from relay.store.writes import Write


def lines(start: int, n: int) -> bytes:
    # a random token per entry: items are stored compressed, so sizes must not collapse
    return b"".join(json.dumps({"n": i, "r": secrets.token_hex(8)}).encode() + b"\n" for i in range(start, start + n))


def open_queue(path: Path, max_size: int = 2**30) -> tuple[DiskQueue, Outbox]:
    queue = DiskQueue(str(path), max_size=max_size, sync="normal")
    snapshot = queue.open()
    return queue, Outbox("up", snapshot.get("up"))


async def append(queue: DiskQueue, outbox: Outbox, start: int, n: int) -> None:
    await queue.append([Write("up", outbox.reserve(), n, lines(start, n))], lambda refs: outbox.committed(refs[0]))


def batcher(queue: DiskQueue, outbox: Outbox, max_entries: int = 1000) -> Batcher:
    return Batcher(outbox, queue, max_entries=max_entries, timeout=0.01, compression="gzip", level=1)


async def drain_batches(queue: DiskQueue, outbox: Outbox) -> list[list[int]]:
    got = []
    while outbox.ready:
        ref = await outbox.next_batch()
        batch = await queue.load_batch(ref)
        assert batch is not None and batch.encoding == "gzip"
        got.append([e["n"] for e in json.loads(igzip.decompress(batch.body))])
        await queue.delete_batch(ref)
        outbox.finished(ref)
    return got


def test_entries_survive_reopen_and_are_cut_into_batches_of_at_most_1000(tmp_path: Path) -> None:
    async def phase1() -> None:
        queue, outbox = open_queue(tmp_path)
        await append(queue, outbox, 0, 2500)
        await append(queue, outbox, 2500, 10)
        assert outbox.unsealed == 2510
        await batcher(queue, outbox).seal_one()  # 1000 of the first item
        queue.close()

    async def phase2() -> list[list[int]]:
        queue, outbox = open_queue(tmp_path)
        assert outbox.unsealed == 1510 and len(outbox.ready) == 1
        b = batcher(queue, outbox)
        while outbox.unsealed:
            await b.seal_one()
        got = await drain_batches(queue, outbox)
        assert queue.used_bytes == 0
        queue.close()
        return got

    asyncio.run(phase1())
    batches = asyncio.run(phase2())
    assert [len(b) for b in batches] == [1000, 1000, 510]
    assert [n for b in batches for n in b] == list(range(2510))


def test_concurrent_appends_share_a_commit(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = open_queue(tmp_path)
        await asyncio.gather(*(append(queue, outbox, i, 1) for i in range(200)))
        assert outbox.unsealed == 200
        assert queue.commits < 200  # grouped: fewer transactions than requests
        queue.close()

    asyncio.run(main())


def test_full_queue_refuses_and_keeps_nothing_of_that_request(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = open_queue(tmp_path, max_size=512 * 2**10)
        await append(queue, outbox, 0, 100)
        with pytest.raises(QueueFull) as info:
            await append(queue, outbox, 100, 40_000)
        assert info.value.status == 503 and "Retry-After" in info.value.headers
        assert outbox.unsealed == 100
        queue.close()
        queue, outbox = open_queue(tmp_path, max_size=512 * 2**10)
        assert outbox.unsealed == 100
        queue.close()

    asyncio.run(main())


def test_max_size_bounds_the_directory_on_disk_not_the_values(tmp_path: Path) -> None:
    budget = 1 * 2**20

    async def main() -> None:
        queue, outbox = open_queue(tmp_path, max_size=budget)
        accepted = 0
        with pytest.raises(QueueFull):
            for start in range(0, 10**6, 200):  # fills up well before the end
                await append(queue, outbox, start, 200)
                accepted += 200
        on_disk = disk_usage.allocated_bytes(str(tmp_path))
        assert budget * 0.5 <= on_disk <= budget * 1.1, on_disk
        assert queue.used_bytes < on_disk  # the values alone undercount the disk
        queue.close()
        assert disk_usage.allocated_bytes(str(tmp_path)) <= budget * 1.1

    asyncio.run(main())


def test_corrupt_inbox_item_is_quarantined_and_the_rest_goes_on(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = open_queue(tmp_path)
        await append(queue, outbox, 0, 5)
        await append(queue, outbox, 5, 5)
        key = next(k for k in queue._cache.iterkeys() if k.startswith("i/up/"))
        item = msgspec.msgpack.decode(queue.get_raw(key), type=InboxItem)
        flipped = bytearray(item.entries)
        flipped[len(flipped) // 2] ^= 0x01  # one bit inside the stored (compressed) entries
        item.entries = bytes(flipped)
        queue.set_raw(key, msgspec.msgpack.encode(item))
        b = batcher(queue, outbox)
        while outbox.unsealed:
            await b.seal_one()
        got = await drain_batches(queue, outbox)
        assert [n for batch in got for n in batch] == list(range(5, 10))
        assert queue.damage.quarantined == 1
        assert any(k.startswith("q/") for k in queue._cache.iterkeys())
        queue.close()

    asyncio.run(main())


def test_batcher_flushes_a_small_batch_after_the_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = open_queue(tmp_path)
        b = batcher(queue, outbox)
        task = asyncio.create_task(b.run())
        await append(queue, outbox, 0, 3)
        ref = await asyncio.wait_for(outbox.next_batch(), timeout=5)
        assert ref.count == 3
        b.stopping = True
        outbox.wake_batcher()
        await asyncio.wait_for(task, timeout=5)
        queue.close()

    asyncio.run(main())


def test_ingest_waits_while_the_batcher_is_far_behind(tmp_path: Path) -> None:
    from relay.store.outbox import UNSEALED_HIGH_WATER

    async def main() -> None:
        queue, outbox = open_queue(tmp_path)
        await append(queue, outbox, 0, UNSEALED_HIGH_WATER)
        waiting = asyncio.create_task(outbox.wait_for_room())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # held: 50,000 entries not yet cut into batches
        await batcher(queue, outbox).seal_one()
        await asyncio.wait_for(waiting, timeout=5)  # released once the batcher catches up
        queue.close()

    asyncio.run(main())

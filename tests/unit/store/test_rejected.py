"""The rejected-records store on a real queue database: bound, drop-oldest, reopen, clean stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay.models import Rejection
from relay.store.queue import DiskQueue
from relay.store.rejected import RejectedStore, StoredRejection, stored_items, unpack_record


def items(source: str, start: int, n: int, pad: int = 100) -> list[StoredRejection]:
    rejected = [(Rejection(i, "host", "required", "no host"), {"i": i, "pad": "x" * pad}) for i in range(start, start + n)]
    return stored_items(source, "tag.a", rejected, now=1000.0)


def opened(path: Path, max_bytes: int) -> tuple[DiskQueue, RejectedStore]:
    queue = DiskQueue(str(path), max_size=2**30, sync="normal")
    queue.open()
    return queue, RejectedStore(queue, max_bytes)


def test_records_survive_a_clean_stop_without_anyone_waiting_for_the_write(tmp_path: Path) -> None:
    async def write() -> None:
        queue, store = opened(tmp_path, 2**20)
        await store.load()
        store.add(items("web", 0, 3))
        store.add([StoredRejection(1.0, "web", 3, None, "invalid_json", "bad line", None, True, b"{oops")])
        queue.close()  # nothing awaited the writes: close must still make them

    async def read() -> list[tuple[str, object]]:
        queue, store = opened(tmp_path, 2**20)
        await store.load()
        assert store.records == {"web": 4}
        got = [(item.reason, unpack_record(item)) for _, item in await store.read(await store.keys("web"))]
        queue.close()
        return got

    asyncio.run(write())
    got = asyncio.run(read())
    assert got[:3] == [("required", {"i": i, "pad": "x" * 100}) for i in range(3)]
    assert got[3] == ("invalid_json", b"{oops")


def test_the_bound_drops_the_oldest_of_any_source_and_counts_them(tmp_path: Path) -> None:
    async def main() -> None:
        queue, store = opened(tmp_path, 15_000)
        await store.load()
        store.add(items("a", 0, 20, pad=300))  # ~360 bytes each: about 41 fit
        store.add(items("b", 0, 40, pad=300))
        await store.settled()
        assert store.bytes <= 15_000
        kept_a, kept_b = store.records["a"], store.records["b"]
        assert kept_b == 40 and 0 < kept_a < 20
        assert store.dropped == {"a": 20 - kept_a}
        # the oldest went: the "a" records left are its last ones
        got = [unpack_record(item)["i"] for _, item in await store.read(await store.keys("a"))]
        assert got == list(range(20 - kept_a, 20))
        queue.close()
        # and on disk too: a reopened store finds exactly what the index said
        queue, again = opened(tmp_path, 15_000)
        await again.load()
        assert again.records == {"a": kept_a, "b": 40} and again.bytes == store.bytes
        # a smaller bound (a reload) applies at once
        again.max_bytes = 5_000
        again.trim()
        await again.settled()
        assert again.bytes <= 5_000 and again.records["a"] == 0 and again.dropped["b"] == 40 - again.records["b"]
        queue.close()

    asyncio.run(main())


def test_a_zero_bound_stores_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        queue, store = opened(tmp_path, 0)
        store.add(items("a", 0, 5))
        await store.settled()
        assert store.records == {} and await store.keys("a") == []
        queue.close()

    asyncio.run(main())

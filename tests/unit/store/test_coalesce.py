"""Small requests waiting for the DB thread together share one inbox item (store/coalesce.py),
on a real diskcache in a temp dir: every entry once, each answered only after the commit, all
refused together when the disk budget says no, one hanging up does not undo the others."""

import asyncio
import json
import secrets
import threading
from pathlib import Path

from isal import igzip

from relay.delivery.batcher import Batcher
from relay.errors import QueueFull
from relay.store.outbox import Outbox, commit
from relay.store.queue import DiskQueue


def line(n: int) -> bytes:
    return json.dumps({"n": n, "pad": "x" * 40}).encode() + b"\n"


def big(n: int) -> bytes:
    return json.dumps({"n": n, "pad": secrets.token_hex(15_000)}).encode() + b"\n"


def opened(path: Path, max_size: int = 2**30) -> tuple[DiskQueue, Outbox]:
    queue = DiskQueue(str(path), max_size=max_size, sync="full")
    return queue, Outbox("up", queue.open().get("up"))


async def hold(queue: DiskQueue) -> tuple[threading.Event, asyncio.Future[object]]:
    """Keep the DB thread busy until the event is set, so requests pile up behind it."""
    started, release = threading.Event(), threading.Event()
    held = asyncio.ensure_future(queue.call(lambda cache: (started.set(), release.wait(10))))
    assert await asyncio.to_thread(started.wait, 10)
    return release, held


def test_small_requests_waiting_together_become_one_item(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = opened(tmp_path)
        release, held = await hold(queue)
        answered: list[int] = []

        async def request(n: int) -> None:
            await commit(queue, [outbox], 1, line(n))
            answered.append(n)

        tasks = [asyncio.ensure_future(request(n)) for n in range(200)]
        for _ in range(100):
            await asyncio.sleep(0)
        assert not answered and outbox.unsealed == 0  # nothing answered before the commit
        release.set()
        await held
        await asyncio.gather(*tasks)
        assert sorted(answered) == list(range(200))
        assert len(outbox.inbox) == 1 and outbox.inbox[0].count == 200 and outbox.unsealed == 200
        await Batcher(outbox, queue, max_entries=1000, timeout=0.01, compression="gzip", level=1).seal_one()
        ref = await outbox.next_batch()
        batch = await queue.load_batch(ref)
        assert batch is not None
        assert sorted(e["n"] for e in json.loads(igzip.decompress(batch.body))) == list(range(200))
        queue.close()

    asyncio.run(main())


def test_an_item_the_budget_refuses_refuses_every_request_in_it(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = opened(tmp_path, max_size=512 * 2**10)
        await commit(queue, [outbox], 1, line(0))
        release, held = await hold(queue)
        # each small, together over the budget (random text: the item is stored compressed)
        tasks = [asyncio.ensure_future(commit(queue, [outbox], 1, big(n))) for n in range(1, 21)]
        for _ in range(50):
            await asyncio.sleep(0)
        release.set()
        await held
        outcome = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(error, QueueFull) for error in outcome), outcome
        assert outbox.unsealed == 1 and len(outbox.inbox) == 1  # the first request's alone
        queue.close()
        queue, outbox = opened(tmp_path, max_size=512 * 2**10)
        assert outbox.unsealed == 1  # nothing of the refused item reached the disk
        queue.close()

    asyncio.run(main())


def test_a_request_that_goes_away_does_not_undo_the_others(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = opened(tmp_path)
        release, held = await hold(queue)
        first = asyncio.ensure_future(commit(queue, [outbox], 1, line(0)))  # it opened the item
        others = [asyncio.ensure_future(commit(queue, [outbox], 1, line(n))) for n in range(1, 10)]
        for _ in range(50):
            await asyncio.sleep(0)
        first.cancel()  # its client hung up
        release.set()
        await held
        await asyncio.gather(*others)
        assert first.cancelled()
        # its entry was committed with the rest (as a request cancelled after it reached the disk)
        assert outbox.unsealed == 10 and len(outbox.inbox) == 1
        queue.close()

    asyncio.run(main())


def test_items_reach_the_inbox_in_the_order_of_their_sequence_numbers(tmp_path: Path) -> None:
    """The batcher's cursor says "every item below seq S is sealed": an item that took its number
    first must not commit after one that took the next (a restart would then skip it)."""
    async def main() -> None:
        queue, outbox = opened(tmp_path)
        release, held = await hold(queue)
        large = b"".join(big(n) for n in range(1, 4))  # over coalesce.SMALL: an item of its own
        small = asyncio.ensure_future(commit(queue, [outbox], 1, line(0)))  # opens an item: seq 0
        alone = asyncio.ensure_future(commit(queue, [outbox], 3, large))  # seq 1, in the same turn
        for _ in range(20):
            await asyncio.sleep(0)
        release.set()
        await held
        await asyncio.gather(small, alone)
        seqs = [ref.seq for ref in outbox.inbox]
        assert [ref.count for ref in outbox.inbox] == [1, 3] and seqs == sorted(seqs)
        queue.close()

    asyncio.run(main())

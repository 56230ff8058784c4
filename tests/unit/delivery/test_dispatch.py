"""The dispatcher on a real queue, with upstream scripted through the Transport seam."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from isal import igzip

from relay.config import SinkConfig
from relay.delivery.dispatch import SinkDispatcher
from relay.delivery.sender import Sender
from relay.delivery.transport import Reply
from relay.store import originals
from relay.store.deadletters import read_dead
from relay.store.layout import BatchRef
from relay.store.outbox import Outbox, commit
from relay.store.queue import DiskQueue
from relay.telemetry import Metrics
from tests.unit.delivery.test_sender import Scripted


async def run(tmp_path: Path, transport: Scripted, n: int, queue: DiskQueue | None = None,
              batch_max_entries: int = 1000, concurrency: int = 4) -> tuple[DiskQueue, Outbox]:
    if queue is None:
        queue = DiskQueue(str(tmp_path), max_size=2**30, sync="normal")
    queue.open()
    outbox = Outbox("up")
    config = SinkConfig(url="http://up", api_key="k", batch_timeout=0.01, compression="none",
                        retry_initial_backoff=0.01, retry_max_backoff=0.05, batch_max_entries=batch_max_entries,
                        concurrency=concurrency)
    dispatcher = SinkDispatcher("up", config, outbox, queue, Sender(transport, "http://up", "k"), Metrics())
    dispatcher.start()
    await commit(queue, [outbox], n, b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(n)))
    async with asyncio.timeout(10):
        while outbox.queued_entries or outbox.inflight:
            await asyncio.sleep(0.01)
    await dispatcher.stop(1.0)
    return queue, outbox


def test_a_delivered_batch_leaves_the_disk(tmp_path: Path) -> None:
    async def main() -> None:
        transport = Scripted(Reply(503, b""), Reply(200, b"{}"))  # one retry, then delivered
        queue, outbox = await run(tmp_path, transport, 3)
        assert len(transport.requests) == 2
        assert [e["n"] for e in json.loads(transport.requests[-1][1])] == [0, 1, 2]
        assert queue.used_bytes == 0 and not outbox.dead
        queue.close()

    asyncio.run(main())


def test_a_refused_batch_is_split_until_the_bad_entry_is_a_dead_letter(tmp_path: Path) -> None:
    async def main() -> None:
        # [0,1] refused -> [0] refused (dead letter), [1] delivered
        transport = Scripted(Reply(400, b'{"detail": "bad entry"}'), Reply(400, b'{"detail": "bad entry"}'),
                             Reply(200, b"{}"))
        queue, outbox = await run(tmp_path, transport, 2)
        assert len(outbox.dead) == 1 and outbox.dead[0].count == 1
        letter = await read_dead(queue, outbox.dead[0])
        assert letter is not None and json.loads(letter.entries) == {"n": 0} and "bad entry" in letter.reason
        queue.close()

    asyncio.run(main())


def test_a_batch_kept_as_the_client_spaced_it_splits_into_one_line_entries(tmp_path: Path) -> None:
    """A body sealed as it came (outbox.commit, as_received) may be pretty-printed: its dead letters are
    still one entry a line, and read back whole."""
    async def main() -> None:
        transport = Scripted(Reply(400, b'{"detail": "bad entry"}'), Reply(400, b'{"detail": "bad entry"}'),
                             Reply(200, b"{}"))
        queue = DiskQueue(str(tmp_path), max_size=2**30, sync="normal")
        queue.open()
        outbox = Outbox("up")
        config = SinkConfig(url="http://up", api_key="k", batch_timeout=0.01, batch_max_entries=2,
                            retry_initial_backoff=0.01, retry_max_backoff=0.05)
        dispatcher = SinkDispatcher("up", config, outbox, queue, Sender(transport, "http://up", "k"), Metrics())
        dispatcher.start()
        body = igzip.compress(json.dumps([{"n": 0, "s": "a\nb"}, {"n": 1}], indent=2).encode(), compresslevel=1)
        assert outbox.takes_whole(2)
        await commit(queue, [outbox], 2, lambda: b"", as_received=body)
        async with asyncio.timeout(10):
            while outbox.queued_entries or outbox.inflight:
                await asyncio.sleep(0.01)
        await dispatcher.stop(1.0)
        assert transport.requests[0][1] is body  # sent as it came
        assert len(outbox.dead) == 1 and outbox.dead[0].count == 1
        letter = await read_dead(queue, outbox.dead[0])
        assert letter is not None and letter.entries.count(b"\n") == 1
        assert json.loads(letter.entries) == {"n": 0, "s": "a\nb"}
        assert json.loads(igzip.decompress(transport.requests[-1][1])) == [{"n": 1}]
        queue.close()

    asyncio.run(main())


def test_a_delivered_batch_that_cannot_be_deleted_does_not_stop_the_sink(tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path), max_size=2**30, sync="normal")
        delete = queue._delete_batch
        failures: list[str] = []
        transport = Scripted(*[Reply(200, b"{}")] * 3)

        def failing_delete(ref: BatchRef) -> int:  # runs on the DB thread, as the real delete does
            # The first batch cannot be deleted until the last one has been sent (by the one send loop).
            if (not failures or ref.key == failures[0]) and len(transport.requests) < 3:
                failures.append(ref.key)
                raise sqlite3.DatabaseError("disk I/O error")
            return delete(ref)

        queue._delete_batch = failing_delete  # type: ignore[method-assign]
        queue, _outbox = await run(tmp_path, transport, 3, queue, batch_max_entries=1, concurrency=1)
        assert [json.loads(request[1])[0]["n"] for request in transport.requests] == [0, 1, 2]  # each sent once
        assert len(failures) >= 2 and len(set(failures)) == 1
        assert queue.used_bytes == 0  # deleted once the disk let it
        queue.close()

    asyncio.run(main())


class RefusesSome:
    """A Transport refusing (400) every batch that holds one of the entries `bad` (by their "n")."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.delivered: list[int] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
        numbers = [entry["n"] for entry in json.loads(igzip.decompress(body))]
        if self.bad & set(numbers):
            return Reply(400, b'{"detail": "bad entry"}')
        self.delivered += numbers
        return Reply(200, b"{}")


def test_original_records_stay_with_their_entries_through_sealing_and_bisection(tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path), max_size=2**30, sync="normal")
        queue.open()
        outbox = Outbox("up")
        transport = RefusesSome({2, 8, 150})
        config = SinkConfig(url="http://up", api_key="k", batch_timeout=0.01, compression="gzip",
                            retry_initial_backoff=0.01, retry_max_backoff=0.05, batch_max_entries=64)
        dispatcher = SinkDispatcher("up", config, outbox, queue, Sender(transport, "http://up", "k"), Metrics())

        def lines(numbers: range) -> bytes:
            return b"".join(json.dumps({"n": i}).encode() + b"\n" for i in numbers)

        # 7 entries with records, 3 without (keep_records off), then 300 with (stored compressed);
        # batches of 64 cut the last item in the middle, several times
        await commit(queue, [outbox], 7, lines(range(7)),
                     originals=originals.pack("web", "t", [{"rec": i} for i in range(7)]))
        await commit(queue, [outbox], 3, lines(range(7, 10)))
        await commit(queue, [outbox], 300, lines(range(10, 310)),
                     originals=originals.pack("api", None, [{"rec": i} for i in range(10, 310)]))
        dispatcher.start()
        async with asyncio.timeout(20):
            while outbox.queued_entries or outbox.inflight:
                await asyncio.sleep(0.01)
        await dispatcher.stop(1.0)
        assert sorted(transport.delivered) == sorted(set(range(310)) - {2, 8, 150})
        letters = [await read_dead(queue, ref) for ref in outbox.dead]
        found = {}
        for letter in letters:
            assert letter is not None and letter.count == 1
            n = json.loads(letter.entries)["n"]
            kept = originals.split(letter.originals, 1)[0]
            found[n] = None if kept is None else originals.unpack(kept)
        assert set(found) == {2, 8, 150}
        assert found[8] is None  # its source kept no records
        assert (found[2].source, found[2].tag, found[2].record) == ("web", "t", {"rec": 2})
        assert (found[150].source, found[150].tag, found[150].record) == ("api", None, {"rec": 150})
        queue.close()

    asyncio.run(main())


def test_the_outbox_paces_ingest_only_while_upstream_takes_batches(tmp_path: Path) -> None:
    """outbox.sending: requests wait for the senders (pipeline.commit) only while it holds."""
    async def main() -> None:
        queue = DiskQueue(str(tmp_path), max_size=2**30, sync="normal")
        queue.open()
        outbox = Outbox("up")
        gate = asyncio.Event()
        seen: list[bool] = []

        class Down(Scripted):
            async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
                seen.append(outbox.sending)
                if len(seen) > 1:
                    await gate.wait()
                return await super().post(url, body, headers)

        config = SinkConfig(url="http://up", api_key="k", batch_timeout=0.01, compression="none",
                            retry_initial_backoff=0.01, retry_max_backoff=0.05, concurrency=1)
        transport = Down(Reply(503, b""), Reply(200, b"{}"))
        dispatcher = SinkDispatcher("up", config, outbox, queue, Sender(transport, "http://up", "k"), Metrics())
        assert not outbox.sending  # no dispatcher: nobody to wait for
        dispatcher.start()
        assert outbox.sending
        await commit(queue, [outbox], 3, b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(3)))
        async with asyncio.timeout(10):
            while len(seen) < 2:  # the 503, then the probe, held
                await asyncio.sleep(0.01)
        assert seen == [True, False] and not outbox.sending and not outbox.senders_behind
        gate.set()
        async with asyncio.timeout(10):
            while outbox.queued_entries or outbox.inflight:
                await asyncio.sleep(0.01)
        assert outbox.sending  # the probe's 2xx: upstream takes batches again
        await dispatcher.stop(1.0)
        assert not outbox.sending
        queue.close()

    asyncio.run(main())

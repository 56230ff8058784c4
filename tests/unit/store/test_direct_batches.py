"""Requests that fill whole batches are sealed in their own commit (store/outbox.commit), on a
real diskcache in a temp dir: same bytes as the batcher's, ids never reused, the inbox when the
sink's dispatcher is stopped, and a delete folded into a group that cannot hurt the group's appends."""

import asyncio
import json
import secrets
import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from isal import igzip

from relay.store import bodies
from relay.store.bodies import BatchShape
from relay.store.layout import BatchRef, batch_id
from relay.store.outbox import SENDERS_BEHIND, Outbox, commit
from relay.store.queue import DiskQueue

SHAPE = BatchShape(1000, "gzip", 1)


def lines(start: int, n: int) -> bytes:
    return b"".join(json.dumps({"n": i, "r": secrets.token_hex(8)}).encode() + b"\n" for i in range(start, start + n))


def opened(path: Path, shape: BatchShape | None = SHAPE) -> tuple[DiskQueue, Outbox]:
    queue = DiskQueue(str(path), max_size=2**30, sync="full")
    outbox = Outbox("up", queue.open().get("up"))
    outbox.shape = shape
    return queue, outbox


def sinks(path: Path, **shapes: BatchShape) -> tuple[DiskQueue, list[Outbox]]:
    """A queue with one outbox per sink, each sending batches of its shape."""
    queue = DiskQueue(str(path), max_size=2**30, sync="full")
    snapshot = queue.open()
    outboxes = [Outbox(name, snapshot.get(name)) for name in shapes]
    for outbox, shape in zip(outboxes, shapes.values(), strict=True):
        outbox.shape = shape
    return queue, outboxes


def numbers(body: bytes) -> list[int]:
    return [entry["n"] for entry in json.loads(igzip.decompress(body))]


@given(st.lists(st.integers(0, 40), max_size=60), st.integers(1, 25))
def test_cut_gives_whole_runs_and_the_rest(sizes: list[int], size: int) -> None:
    data = b"".join(json.dumps({"k": "x" * n, "nl": "a\nb"}).encode() + b"\n" for n in sizes)
    runs, rest = bodies.cut(data, len(sizes), size)
    assert b"".join(runs) + rest == data
    assert len(runs) == len(sizes) // size
    assert all(run.count(b"\n") == size for run in runs) and rest.count(b"\n") == len(sizes) % size


def test_a_request_that_fills_batches_is_sealed_as_it_commits(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = opened(tmp_path)
        data = lines(0, 2500)
        await commit(queue, [outbox], 2500, data)
        # two whole batches ready to send, the last 500 entries in the inbox for the batcher
        assert [ref.count for ref in outbox.ready] == [1000, 1000]
        assert outbox.unsealed == 500 and [ref.count for ref in outbox.inbox] == [500]
        assert outbox.queued_entries == 2500
        first = outbox.ready[0]
        assert first.key in outbox.fresh  # sent without reading it back
        stored = await queue.load_batch(first)
        assert stored is not None and stored.body == outbox.fresh[first.key].body
        # the bytes the batcher makes of the same entries
        expected, _ = bodies.from_lines(data.split(b"\n")[:1000], "gzip", 1)
        assert igzip.decompress(stored.body) == igzip.decompress(expected)
        assert numbers(stored.body) == list(range(1000))
        assert queue.used_bytes == sum(ref.nbytes for ref in outbox.ready) + outbox.inbox_bytes
        queue.close()

    asyncio.run(main())


def never_encoded() -> bytes:
    raise AssertionError("the entries were encoded, though every sink takes the body as it came")


def test_a_body_sealed_whole_is_stored_and_sent_as_it_came(tmp_path: Path) -> None:
    body = igzip.compress(b"[" + lines(0, 1000)[:-1].replace(b"\n", b",") + b"]", compresslevel=3)

    async def main() -> None:
        queue, outbox = opened(tmp_path)
        assert outbox.takes_whole(1000)
        await commit(queue, [outbox], 1000, never_encoded, as_received=body)
        [ref] = outbox.ready
        assert ref.count == 1000 and outbox.fresh[ref.key].body is body and outbox.fresh[ref.key].encoding == "gzip"
        queue.close()

    asyncio.run(main())
    queue, outbox = opened(tmp_path)  # and after a restart, from disk
    [ref] = outbox.ready
    stored = asyncio.run(queue.load_batch(ref))
    assert stored is not None and stored.body == body and numbers(stored.body) == list(range(1000))
    queue.close()


def test_each_sink_takes_the_body_as_it_came_or_the_entries(tmp_path: Path) -> None:
    data = lines(0, 1000)
    body = igzip.compress(b"[" + data[:-1].replace(b"\n", b",") + b"]", compresslevel=1)
    asked: list[int] = []

    def encode() -> bytes:
        asked.append(1)
        return data

    async def main() -> None:
        queue, (whole, small) = sinks(tmp_path, whole=SHAPE, small=BatchShape(100, "gzip", 1))
        await commit(queue, [whole, small], 1000, encode, as_received=body)
        assert asked == [1]  # encoded once, for the sink that cuts it
        [ref] = whole.ready
        assert whole.fresh[ref.key].body is body
        assert [r.count for r in small.ready] == [100] * 10
        assert numbers(small.fresh[small.ready[0].key].body) == list(range(100))
        queue.close()

    asyncio.run(main())


def array_of(data: bytes) -> bytes:
    return b"[" + data[:-1].replace(b"\n", b",") + b"]"


def test_entries_that_make_exactly_one_batch_are_sealed_from_their_array(tmp_path: Path) -> None:
    """No lines are encoded when every sink takes the request as one whole batch: the array is
    compressed as it is, once per sink's own compression, to the batcher's bytes."""
    data = lines(0, 1000)
    arrays: list[int] = []

    def array() -> bytes:
        arrays.append(1)
        return array_of(data)

    async def main() -> None:
        queue, (gz, plain) = sinks(tmp_path, gz=SHAPE, plain=BatchShape(1000, "none", 1))
        await commit(queue, [gz, plain], 1000, never_encoded, array=array)
        assert arrays == [1]  # one array for both sinks
        [ref] = gz.ready
        stored = await queue.load_batch(ref)
        expected, _ = bodies.from_lines(data.split(b"\n")[:1000], "gzip", 1)
        assert stored is not None and stored.encoding == "gzip"
        assert igzip.decompress(stored.body) == igzip.decompress(expected)
        [other] = plain.ready
        stored = await queue.load_batch(other)
        assert stored is not None and stored.encoding is None and stored.body == array_of(data)
        assert not gz.inbox and not plain.inbox
        queue.close()

    asyncio.run(main())


@pytest.mark.parametrize("count", [1, 999, 1000, 1001, 2000, 2500])
def test_the_array_is_asked_for_only_when_it_is_exactly_one_batch(count: int, tmp_path: Path) -> None:
    asked: list[str] = []
    data = lines(0, count)

    async def main() -> None:
        queue, outbox = opened(tmp_path)
        await commit(queue, [outbox], count, lambda: asked.append("lines") or data,
                     array=lambda: asked.append("array") or array_of(data))
        assert asked == (["array"] if count == 1000 else ["lines"])
        got = []
        for ref in outbox.ready:
            batch = await queue.load_batch(ref)
            assert batch is not None
            got += numbers(batch.body)
        assert got == list(range(count // 1000 * 1000)) and outbox.unsealed == count % 1000
        queue.close()

    asyncio.run(main())


def test_kept_records_never_take_the_array(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = opened(tmp_path)
        await commit(queue, [outbox], 1000, lines(0, 1000), originals=b"x" * 5000, array=never_encoded)
        assert not outbox.ready and outbox.unsealed == 1000
        queue.close()

    asyncio.run(main())


def test_only_a_gzip_sink_taking_exactly_that_many_takes_a_body_whole(tmp_path: Path) -> None:
    queue, outbox = opened(tmp_path)
    assert outbox.takes_whole(1000) and not outbox.takes_whole(999) and not outbox.takes_whole(1001)
    outbox.ready_entries = SENDERS_BEHIND  # the senders are behind: still whole (pipeline.commit paces)
    assert outbox.takes_whole(1000)
    outbox.shape = BatchShape(1000, "none", 1)
    assert not outbox.takes_whole(1000)
    outbox.shape = None  # the sink's dispatcher is stopped
    assert not outbox.takes_whole(1000)
    queue.close()


def test_batch_ids_are_never_reused_after_a_restart(tmp_path: Path) -> None:
    """A commit does not write the cursor: ids on disk, not the cursor, decide the next one."""
    async def phase1() -> list[str]:
        queue, outbox = opened(tmp_path)
        for start in (0, 1000, 2000):
            await commit(queue, [outbox], 1000, lines(start, 1000))
        keys = [ref.key for ref in outbox.ready]
        queue.close()
        return keys

    async def phase2(before: list[str]) -> None:
        queue, outbox = opened(tmp_path)
        assert outbox.cursor.next_batch == 0  # nothing was sealed by the batcher
        assert sorted(ref.key for ref in outbox.ready) == before
        await commit(queue, [outbox], 1000, lines(3000, 1000))
        new = outbox.ready[-1]
        assert batch_id(new.key) == max(batch_id(key) for key in before) + 1
        got = []
        while outbox.ready:
            ref = await outbox.next_batch()
            batch = await queue.load_batch(ref)
            assert batch is not None
            got += numbers(batch.body)
        assert sorted(got) == list(range(4000))
        queue.close()

    before = asyncio.run(phase1())
    assert len(set(before)) == 3
    asyncio.run(phase2(before))


def test_requests_fill_whole_batches_however_far_behind_the_senders_are_but_not_when_stopped(
        tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = opened(tmp_path)
        n = SENDERS_BEHIND // 1000 + 3
        for i in range(n):  # nobody sends: the ready batches pile up (an outage), no second gzip
            await commit(queue, [outbox], 1000, lines(i * 1000, 1000))
        assert len(outbox.ready) == n and outbox.unsealed == 0
        outbox.shape = None  # the sink's dispatcher is stopped
        queued = outbox.queued_entries
        await commit(queue, [outbox], 1000, lines(n * 1000, 1000))
        assert outbox.unsealed == 1000 and outbox.queued_entries == queued + 1000
        queue.close()

    asyncio.run(main())


def test_kept_records_go_through_the_inbox(tmp_path: Path) -> None:
    async def main() -> None:
        queue, outbox = opened(tmp_path)
        await commit(queue, [outbox], 1000, lines(0, 1000), originals=b"x" * 5000)
        assert not outbox.ready and outbox.unsealed == 1000
        queue.close()

    asyncio.run(main())


def test_a_failing_delete_in_a_group_does_not_fail_its_appends(tmp_path: Path) -> None:
    """Deletes ride with a group of appends, in a transaction of their own."""
    async def main() -> None:
        queue, outbox = opened(tmp_path)
        await commit(queue, [outbox], 1000, lines(0, 1000))
        ref = await outbox.next_batch()
        real = queue._delete_batch

        def failing(target: BatchRef) -> int:
            raise sqlite3.OperationalError("disk I/O error")

        queue._delete_batch = failing  # type: ignore[method-assign]
        # hold the DB thread so that the delete and the append meet in one group
        started, release = threading.Event(), threading.Event()
        held = asyncio.ensure_future(queue.call(lambda cache: (started.set(), release.wait(10))))
        assert await asyncio.to_thread(started.wait, 10)
        work = asyncio.gather(queue.delete_batch(ref), commit(queue, [outbox], 1000, lines(1000, 1000)),
                              return_exceptions=True)
        for _ in range(1000):  # until both jobs wait behind the held one
            if queue._worker._jobs.qsize() == 2:
                break
            await asyncio.sleep(0.001)
        assert queue._worker._jobs.qsize() == 2
        release.set()
        await held
        outcome = await work
        assert isinstance(outcome[0], Exception) and outcome[1] is None
        queue._delete_batch = real  # type: ignore[method-assign]
        await queue.delete_batch(ref)
        outbox.finished(ref)
        assert [ref.count for ref in outbox.ready] == [1000]
        assert queue.used_bytes == outbox.batch_bytes
        queue.close()

    asyncio.run(main())

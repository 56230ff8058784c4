"""The dead-letter store: entries upstream refused one by one, kept with the reason.

A refused batch is bisected by the dispatcher until the entries at fault stand
alone; each of those lands here (`d/<sink>/...` keys in the queue database)
instead of being dropped. The store is bounded by `queue.dead_letter_max_size`:
past it the oldest letters are dropped, loudly, and counted. `replay` moves
letters back into their sink's inbox, so they are batched and sent again.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time

import msgspec

from relay.store.layout import (
    BatchRef,
    DeadLetter,
    InboxItem,
    InboxRef,
    dead_key,
    decode_dead,
    encode,
    inbox_key,
    item_checksum,
)
from relay.store.outbox import Outbox
from relay.store.queue import Also, Cache, DiskQueue

log = logging.getLogger("relay.deadletter")


class DeadLetterView(msgspec.Struct):
    """One dead letter as `relay dead-letter list` and the admin endpoint show it."""

    key: str
    sink: str
    count: int
    reason: str
    status: int | None
    failed_at: float
    entries: list[msgspec.Raw]
    records: bool = False  # it holds its original records: `replay --remap` re-maps them


class DeadLetters:
    def __init__(self, queue: DiskQueue, outboxes: dict[str, Outbox], max_bytes: int) -> None:
        self.queue = queue
        self.outboxes = outboxes
        self.max_bytes = max_bytes
        self.dropped_entries = 0
        # one replay at a time (plain or --remap): two would read the same letters and queue them twice
        self.replaying = asyncio.Lock()

    def entries(self, sink: str | None = None) -> int:
        return sum(ref.count for name, o in self.outboxes.items() if sink in (None, name) for ref in o.dead)

    def bytes(self) -> int:
        return sum(ref.nbytes for o in self.outboxes.values() for ref in o.dead)

    def chosen(self, sink: str | None) -> list[Outbox]:
        if sink is not None and sink not in self.outboxes:
            raise KeyError(f"no sink named {sink!r} (sinks: {', '.join(self.outboxes)})")
        return [o for name, o in self.outboxes.items() if sink in (None, name)]

    async def list(self, sink: str | None = None, limit: int = 1000) -> list[DeadLetterView]:
        queue = self.queue
        views: list[DeadLetterView] = []
        for outbox in self.chosen(sink):
            for ref in outbox.dead[:max(0, limit - len(views))]:
                letter = await read_dead(queue, ref)
                if letter is None:
                    continue
                lines = [msgspec.Raw(line) for line in letter.entries.split(b"\n") if line]
                views.append(DeadLetterView(ref.key, outbox.name, letter.count, letter.reason, letter.status,
                                            letter.failed_at, lines, letter.originals is not None))
        return views

    async def replay(self, sink: str | None = None) -> int:
        """Re-queue every dead letter of `sink` (or all sinks); returns the entries re-queued."""
        total = 0
        async with self.replaying:
            for outbox in self.chosen(sink):
                refs = list(outbox.dead)
                if refs:
                    total += await self.requeue(outbox, refs)
        return total

    async def requeue(self, outbox: Outbox, refs: builtins.list[BatchRef]) -> int:
        """Move these letters of `outbox` back into its inbox as they are; returns the entries."""
        first = outbox.reserve(len(refs))
        made = await requeue_dead(self.queue, outbox.name, refs, first)
        outbox.dead = [ref for ref in outbox.dead if ref not in refs]
        for ref in made:
            outbox.committed(ref)
        count = sum(ref.count for ref in made)
        log.info("dead letters: re-queued %d entries for sink %s", count, outbox.name)
        return count

    async def take_in(self, outbox: Outbox, letters: builtins.list[tuple[BatchRef, builtins.bytes]]) -> None:
        """Keep these letters of another store (a shard adopted from a run with more workers) in
        this one, for `outbox`'s sink, as they are, under new ids; committed when this returns."""
        first = outbox.reserve_batch(len(letters))
        made = [(dead_key(f"b/{outbox.name}/{first + i:020d}", ref.count, len(raw)), ref.count, raw)
                for i, (ref, raw) in enumerate(letters)]
        await self.queue.call(lambda cache: _set_all(self.queue, cache, made))
        outbox.dead.extend(BatchRef(key, count, len(raw)) for key, count, raw in made)

    async def enforce_bound(self) -> int:
        """Drop the oldest letters while the store is over its size; returns entries dropped."""
        dropped: list[tuple[Outbox, BatchRef]] = []
        excess = self.bytes() - self.max_bytes
        while excess > 0:
            outbox = max(self.outboxes.values(), key=lambda o: sum(r.nbytes for r in o.dead))
            if not outbox.dead:
                break
            ref = outbox.dead.pop(0)
            dropped.append((outbox, ref))
            excess -= ref.nbytes
        if not dropped:
            return 0
        queue = self.queue
        await drop_dead(queue, [ref for _, ref in dropped])
        count = sum(ref.count for _, ref in dropped)
        self.dropped_entries += count
        log.error("dead letters: store over queue.dead_letter_max_size (%d bytes); dropped the %d oldest "
                  "entries", self.max_bytes, count)
        return count


# ---- the letters' DB work: run on the queue's DB thread through DiskQueue.call -----------------

def _read(cache: Cache, ref: BatchRef) -> DeadLetter | None:
    raw = cache.get(ref.key)
    try:
        return decode_dead(raw) if raw is not None else None
    except msgspec.DecodeError:
        return None


def _set_all(queue: DiskQueue, cache: Cache, made: list[tuple[str, int, bytes]]) -> None:
    with cache.transact(retry=True):
        for key, _, raw in made:
            cache.set(key, raw)
            queue.used_bytes += len(raw)


def _drop(queue: DiskQueue, cache: Cache, refs: list[BatchRef]) -> None:
    with cache.transact(retry=True):
        for ref in refs:
            if cache.delete(ref.key):
                queue.used_bytes -= ref.nbytes


def _requeue(queue: DiskQueue, cache: Cache, sink: str, refs: list[BatchRef], first_seq: int) -> list[InboxRef]:
    """Move dead letters back into the sink's inbox, in one transaction."""
    now = time.time()
    made: list[InboxRef] = []
    with cache.transact(retry=True):
        for ref in refs:
            letter = _read(cache, ref)
            if letter is not None and letter.count:
                seq = first_seq + len(made)
                item = InboxItem(letter.count, letter.entries, 0, now, None, letter.originals)
                item.crc = item_checksum(item)  # the originals go back with their entries
                value = encode(item)
                cache.set(inbox_key(sink, seq, letter.count, len(value)), value)
                queue.used_bytes += len(value)
                made.append(InboxRef(seq, letter.count, len(value)))
            if cache.delete(ref.key):
                queue.used_bytes -= ref.nbytes
    return made


async def read_dead(queue: DiskQueue, ref: BatchRef) -> DeadLetter | None:
    return await queue.call(lambda cache: _read(cache, ref))


async def read_raw(queue: DiskQueue, refs: list[BatchRef]) -> list[tuple[BatchRef, bytes]]:
    """These letters' stored values, as they are (a letter gone meanwhile is left out)."""
    def read(cache: Cache) -> list[tuple[BatchRef, bytes]]:
        values = [(ref, cache.get(ref.key)) for ref in refs]
        return [(ref, bytes(raw)) for ref, raw in values if raw is not None]
    return await queue.call(read)


async def drop_dead(queue: DiskQueue, refs: list[BatchRef]) -> None:
    await queue.call(lambda cache: _drop(queue, cache, refs))


async def requeue_dead(queue: DiskQueue, sink: str, refs: list[BatchRef], first_seq: int) -> list[InboxRef]:
    return await queue.call(lambda cache: _requeue(queue, cache, sink, refs, first_seq))


def dead_deleter(queue: DiskQueue, refs: list[BatchRef]) -> Also:
    """Deleting these letters as part of another write's transaction (a re-mapped letter
    leaves the store in the transaction that queues its new entries: exactly once)."""
    return lambda cache: _drop(queue, cache, refs)

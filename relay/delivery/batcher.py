"""Cuts a sink's inbox into upstream batches and seals them on disk.

A batch is flushed when it holds `batch_max_entries` or when its oldest entry
has waited `batch_timeout`. Sealing encodes and compresses the body once; the
senders then only read and POST it. The sealed batch, the advanced cursor and
the removal of wholly sealed inbox items are one transaction, so a crash at
any point leaves each entry either in the inbox or in exactly one batch.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from relay.store import bodies, originals
from relay.store.layout import Cursor, InboxItem, InboxRef, SealedBatch, checksum
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue

log = logging.getLogger("relay.batcher")


Kept = list[msgspec.Raw | None] | None  # per entry: its original record, when kept


def split_lines(item: InboxItem) -> list[bytes]:
    lines = item.entries.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


class Batcher:
    def __init__(self, outbox: Outbox, queue: DiskQueue, *, max_entries: int, timeout: float,
                 compression: str, level: int) -> None:
        self.outbox = outbox
        self.queue = queue
        self.max_entries = max_entries
        self.timeout = timeout
        self.compression = compression
        self.level = level
        # The item a previous batch cut in the middle: kept split so that a
        # 7,600-entry request is not re-read and re-split for each of its batches.
        self._partial: tuple[int, list[bytes], float, Kept] | None = None
        self.stopping = False

    async def run(self) -> None:
        while not self.stopping:
            await self.outbox.wait_for_data()
            if self.stopping:
                break
            await self._wait_until_due()
            if self.outbox.unsealed:
                try:
                    await self.seal_one()
                except Exception as exc:  # disk full, I/O error: the inbox is intact; try again
                    log.error("sink %s: sealing a batch failed, retrying in 1s: %s", self.outbox.name, exc)
                    self._partial = None
                    await asyncio.sleep(1.0)

    async def _wait_until_due(self) -> None:
        outbox = self.outbox
        while outbox.unsealed and outbox.unsealed < self.max_entries and not self.stopping:
            since = outbox.unsealed_since or time.monotonic()
            remaining = since + self.timeout - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.05))

    async def seal_one(self) -> None:
        outbox, queue, sink = self.outbox, self.queue, self.outbox.name
        refs = outbox.take(self.max_entries)
        if not refs:
            return
        items = await self._read(refs)
        lines: list[bytes] = []
        kept: Kept = None  # the entries' original records, once an item has them (keep_records)
        consumed: list[InboxRef] = []
        cursor = Cursor(outbox.cursor.seq, outbox.cursor.offset, outbox.cursor.next_batch)
        oldest = time.time()
        skipped = 0
        for ref, entries, created, item_kept in items:
            offset = cursor.offset if ref.seq == cursor.seq else 0
            if entries is None:  # quarantined: counted as lost by the queue's log and metric
                skipped += ref.count - offset
                consumed.append(ref)
                cursor = Cursor(ref.seq + 1, 0, cursor.next_batch)
                continue
            oldest = min(oldest, created)
            room = self.max_entries - len(lines)
            take = entries[offset:offset + room]
            if item_kept is not None or kept is not None:
                kept = kept if kept is not None else [None] * len(lines)
                kept.extend(item_kept[offset:offset + len(take)] if item_kept is not None else [None] * len(take))
            lines.extend(take)
            if offset + len(take) >= len(entries):
                consumed.append(ref)
                cursor = Cursor(ref.seq + 1, 0, cursor.next_batch)
            else:
                cursor = Cursor(ref.seq, offset + len(take), cursor.next_batch)
                self._partial = (ref.seq, entries, created, item_kept)
            if len(lines) >= self.max_entries:
                break
        batch_id = outbox.reserve_batch()  # shared with requests sealed as they commit
        cursor.next_batch = outbox.next_batch_id
        batch: SealedBatch | None = None
        if lines:
            body, encoding = await asyncio.to_thread(bodies.from_lines, lines, self.compression, self.level)
            kept_blob = await asyncio.to_thread(originals.sealed, kept) if kept is not None else None
            batch = SealedBatch(len(lines), body, encoding, checksum(body), oldest, kept_blob)
        sealed = await queue.seal(sink, batch, cursor, batch_id, consumed)
        outbox.sealed(sealed, len(lines) + skipped, cursor, consumed, batch)
        if self._partial and self._partial[0] != cursor.seq:
            self._partial = None

    async def _read(self, refs: list[InboxRef]) -> list[tuple[InboxRef, list[bytes] | None, float, Kept]]:
        partial = self._partial
        cached = partial if partial and refs[0].seq == partial[0] else None
        to_read = refs[1:] if cached is not None else refs
        queue, sink = self.queue, self.outbox.name
        loaded = await queue.read_inbox(sink, to_read) if to_read else []
        out: list[tuple[InboxRef, list[bytes] | None, float, Kept]] = []
        if cached is not None:
            out.append((refs[0], cached[1], cached[2], cached[3]))
        for ref, item in loaded:
            if item is None:
                out.append((ref, None, time.time(), None))
                continue
            lines = split_lines(item)
            out.append((ref, lines, item.created,
                        originals.split(item.originals, len(lines)) if item.originals is not None else None))
        return out

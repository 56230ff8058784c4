"""One sink's view of the queue, kept in memory on the event loop.

The disk is the truth; an Outbox only remembers what is where so that the
batcher and the senders need not scan: the inbox items not yet sealed (in
commit order), the sealed batches waiting to be sent, and which are in flight.
It is rebuilt from the key index at start-up (`queue.SinkSnapshot`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from relay.store.layout import BatchRef, Cursor, InboxRef, SinkSnapshot
from relay.store.queue import Also, DiskQueue

# Entries accepted but not yet cut into batches, per sink, past which new requests wait.
UNSEALED_HIGH_WATER = 50_000


class Outbox:
    def __init__(self, name: str, snapshot: SinkSnapshot | None = None) -> None:
        snapshot = snapshot or SinkSnapshot(Cursor(), [], [], [])
        self.name = name
        self.cursor = snapshot.cursor
        inbox = sorted(snapshot.inbox, key=lambda ref: ref.seq)
        self.inbox: deque[InboxRef] = deque(ref for ref in inbox if ref.seq >= self.cursor.seq)
        self.next_seq = max([self.cursor.seq] + [ref.seq + 1 for ref in inbox])
        self.unsealed = sum(ref.count for ref in self.inbox) - (
            self.cursor.offset if self.inbox and self.inbox[0].seq == self.cursor.seq else 0)
        self.unsealed_since: float | None = time.monotonic() if self.unsealed else None
        self.inbox_bytes = sum(ref.nbytes for ref in self.inbox)
        self.ready: deque[BatchRef] = deque(sorted(snapshot.batches, key=lambda ref: ref.key))
        self.inflight: dict[str, BatchRef] = {}
        self.started = time.time()
        self.batch_entries = sum(ref.count for ref in self.ready)
        self.batch_bytes = sum(ref.nbytes for ref in self.ready)
        self.dead = list(snapshot.dead)
        self.oldest_ready: float | None = None  # arrival time of the oldest entry in a sealed batch
        self._data = asyncio.Event()  # new inbox items
        self._room = asyncio.Event()  # unsealed entries below UNSEALED_HIGH_WATER
        self._room.set()
        self._batches = asyncio.Event()  # new sealed batches
        if self.unsealed:
            self._data.set()
        if self.ready:
            self._batches.set()

    # ---- ingest side ------------------------------------------------------------------

    def reserve(self, n: int = 1) -> int:
        """The first of `n` inbox sequence numbers, taken for this caller alone."""
        seq = self.next_seq
        self.next_seq += n
        return seq

    def committed(self, ref: InboxRef) -> None:
        if not self.unsealed:
            self.unsealed_since = time.monotonic()
        self.inbox.append(ref)
        self.unsealed += ref.count
        self.inbox_bytes += ref.nbytes
        self._data.set()
        if self.unsealed >= UNSEALED_HIGH_WATER:
            self._room.clear()

    @property
    def has_room(self) -> bool:
        return self._room.is_set()

    async def wait_for_room(self) -> None:
        """Hold a new request while the batcher is far behind (CPU-starved, not an outage:
        sealing goes on while a sink is down), so ingest cannot starve delivery."""
        await self._room.wait()

    # ---- batcher side -----------------------------------------------------------------

    async def wait_for_data(self) -> None:
        if not self.unsealed:
            # a wake-up with nothing to seal (a stopped batcher's, before a sink restart) must not
            # be left set: the next batcher would return at once, find nothing, and spin
            self._data.clear()
        await self._data.wait()

    def wake_batcher(self) -> None:
        self._data.set()

    def take(self, max_entries: int) -> list[InboxRef]:
        """The inbox items that hold the next `max_entries` unsealed entries."""
        refs: list[InboxRef] = []
        wanted = max_entries + (self.cursor.offset if self.inbox and self.inbox[0].seq == self.cursor.seq else 0)
        for ref in self.inbox:
            refs.append(ref)
            wanted -= ref.count
            if wanted <= 0:
                break
        return refs

    def sealed(self, ref: BatchRef | None, count: int, cursor: Cursor, consumed: list[InboxRef]) -> None:
        self.cursor = cursor
        for done in consumed:
            if self.inbox and self.inbox[0].seq == done.seq:
                self.inbox.popleft()
                self.inbox_bytes -= done.nbytes
        self.unsealed -= count
        if self.unsealed < UNSEALED_HIGH_WATER:
            self._room.set()
        if self.unsealed <= 0:
            self.unsealed = 0
            self.unsealed_since = None
            self._data.clear()
        else:
            self.unsealed_since = time.monotonic()
        if ref is not None:
            self.add_ready(ref)

    # ---- sender side ------------------------------------------------------------------

    def add_ready(self, ref: BatchRef, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(ref)
        else:
            self.ready.append(ref)
        self.batch_entries += ref.count
        self.batch_bytes += ref.nbytes
        self._batches.set()

    async def next_batch(self) -> BatchRef:
        while not self.ready:
            self._batches.clear()
            await self._batches.wait()
        ref = self.ready.popleft()
        self.inflight[ref.key] = ref
        return ref

    def requeue(self, ref: BatchRef) -> None:
        """Put an undelivered batch back in its place (still counted as queued).

        In key order, not simply at the front: several loops hand back the batches of
        one failed round in any order, and the oldest must still go first."""
        self.inflight.pop(ref.key, None)
        ready, at = self.ready, 0
        while at < len(ready) and ready[at].key < ref.key:  # requeued batches are old: a short walk
            at += 1
        ready.insert(at, ref)
        self._batches.set()

    def finished(self, ref: BatchRef) -> None:
        """The batch left the disk (delivered, dead-lettered or split)."""
        self.inflight.pop(ref.key, None)
        self.batch_entries -= ref.count
        self.batch_bytes -= ref.nbytes

    def oldest_age(self) -> float:
        """Seconds the oldest queued entry has waited (0 when nothing is queued)."""
        heads: list[BatchRef | InboxRef] = list(self.inflight.values())
        heads += [queue[0] for queue in (self.ready, self.inbox) if queue]
        if not heads:
            return 0.0
        oldest = min(ref.created or self.started for ref in heads)
        return max(0.0, time.time() - oldest)

    @property
    def queued_entries(self) -> int:
        return self.unsealed + self.batch_entries

    @property
    def queued_bytes(self) -> int:
        return self.inbox_bytes + self.batch_bytes


async def commit(queue: DiskQueue, outboxes: list[Outbox], count: int, lines: bytes, also: Also | None = None,
                 originals: bytes | None = None) -> None:
    """Append one request's `count` entries (`lines`) to each outbox's inbox, in one transaction.

    Raises QueueFull when the disk budget cannot hold them; then none is kept."""
    writes = [(outbox.name, outbox.reserve(), count, lines) for outbox in outboxes]

    def on_commit(refs: list[InboxRef]) -> None:
        for outbox, ref in zip(outboxes, refs, strict=True):
            outbox.committed(ref)

    await queue.append(writes, on_commit, also, originals)

"""One sink's view of the queue, kept in memory on the event loop.

The disk is the truth; an Outbox only remembers what is where so that the
batcher and the senders need not scan: the inbox items not yet sealed (in
commit order), the sealed batches waiting to be sent, and which are in flight.
It is rebuilt from the key index at start-up (`queue.SinkSnapshot`).

A request that fills whole batches (1,000 entries to a sink that sends 1,000 at
a time) skips the inbox: its batches are sealed in the request's own commit, and
only what is left over goes to the inbox for the batcher. That saves writing,
reading, splitting, joining, compressing again and deleting every entry once.
When the senders fall behind while upstream takes batches, pipeline.commit holds
new requests a moment for them (SENDERS_BEHIND) rather than sending them the
batcher's costlier way: pacing that costs no CPU.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from relay.store import bodies, coalesce
from relay.store.bodies import BatchShape
from relay.store.layout import BatchRef, Cursor, InboxRef, SealedBatch, SinkSnapshot, batch_id
from relay.store.queue import Also, DiskQueue
from relay.store.writes import Write

# Entries accepted but not yet cut into batches, per sink, past which new requests wait.
UNSEALED_HIGH_WATER = 50_000
# Sealed batches kept in memory for the senders (the bytes just written), so that the usual
# batch is sent without reading it back; the rest are read from disk as before.
FRESH_BATCHES = 16
# Entries in sealed batches no sender has taken yet, past which a new request waits (up to
# pipeline.PACE_WAIT) for a sender to take one while the sink is sending: ingest and delivery
# share the event loop, and without a pause cheap ingest starves the senders. Two rounds of the
# default 4 senders (docs/performance.md). While the sink is down nothing waits: the queue is
# there to take the backlog.
SENDERS_BEHIND = 8_000


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
        self.ready_entries = self.batch_entries  # in batches no sender has taken
        self.dead = list(snapshot.dead)
        # Batch ids are taken by the batcher and by commits that seal whole batches; past every
        # batch and dead letter on disk, whatever the cursor says (a commit does not write it).
        self.next_batch_id = max([self.cursor.next_batch] + [batch_id(ref.key) + 1 for ref in (*self.ready, *self.dead)])
        self.shape: BatchShape | None = None  # set while the sink's dispatcher runs
        self.fresh: dict[str, SealedBatch] = {}  # FRESH_BATCHES at most, by key
        self.oldest_ready: float | None = None  # arrival time of the oldest entry in a sealed batch
        self._data = asyncio.Event()  # new inbox items
        self._room = asyncio.Event()  # unsealed entries below UNSEALED_HIGH_WATER
        self._room.set()
        self._batches = asyncio.Event()  # new sealed batches
        self.sending = False  # the sink's dispatcher runs and upstream takes batches
        self._caught_up = asyncio.Event()  # not sending, or the senders are less than SENDERS_BEHIND behind
        self._caught_up.set()
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

    def reserve_batch(self, n: int = 1) -> int:
        """The first of `n` batch ids, taken for this caller alone."""
        first = self.next_batch_id
        self.next_batch_id += n
        return first

    def committed(self, ref: InboxRef) -> None:
        if not self.unsealed:
            self.unsealed_since = time.monotonic()
        self.inbox.append(ref)
        self.unsealed += ref.count
        self.inbox_bytes += ref.nbytes
        self._data.set()
        if self.unsealed >= UNSEALED_HIGH_WATER:
            self._room.clear()

    def takes_one_batch(self, count: int) -> bool:
        """Whether `count` entries make exactly one of this sink's batches: `commit` seals them as
        one, from their JSON array (`array`), and pipeline.prepare encodes them so at once."""
        shape = self.shape
        return shape is not None and count == shape.max_entries

    def takes_whole(self, count: int) -> bool:
        """Whether `commit` would seal a request body of `count` entries as it came, as one gzip batch."""
        shape = self.shape
        return shape is not None and count == shape.max_entries and shape.compression == "gzip"

    @property
    def senders_behind(self) -> bool:
        return not self._caught_up.is_set()

    async def wait_for_senders(self) -> None:
        """Until a sender takes a batch (or the sink stops sending): see SENDERS_BEHIND."""
        await self._caught_up.wait()

    def set_sending(self, sending: bool) -> None:
        self.sending = sending
        self._pace()

    def _pace(self) -> None:
        if self.sending and self.ready_entries >= SENDERS_BEHIND:
            self._caught_up.clear()
        else:
            self._caught_up.set()

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

    def sealed(self, ref: BatchRef | None, count: int, cursor: Cursor, consumed: list[InboxRef],
               batch: SealedBatch | None = None) -> None:
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
        if ref is not None and batch is not None:
            self.add_fresh(ref, batch)
        elif ref is not None:
            self.add_ready(ref)

    # ---- sender side ------------------------------------------------------------------

    def add_fresh(self, ref: BatchRef, batch: SealedBatch) -> None:
        if len(self.fresh) < FRESH_BATCHES:
            self.fresh[ref.key] = batch
        self.add_ready(ref)

    def add_ready(self, ref: BatchRef, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(ref)
        else:
            self.ready.append(ref)
        self.batch_entries += ref.count
        self.batch_bytes += ref.nbytes
        self.ready_entries += ref.count
        self._batches.set()
        self._pace()

    async def next_batch(self) -> BatchRef:
        while not self.ready:
            self._batches.clear()
            await self._batches.wait()
        ref = self.ready.popleft()
        self.ready_entries -= ref.count
        self.inflight[ref.key] = ref
        self._pace()
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
        self.ready_entries += ref.count
        self._batches.set()
        self._pace()

    def finished(self, ref: BatchRef) -> None:
        """The batch left the disk (delivered, dead-lettered or split)."""
        self.inflight.pop(ref.key, None)
        self.fresh.pop(ref.key, None)
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


async def commit(queue: DiskQueue, outboxes: list[Outbox], count: int, lines: bytes | Callable[[], bytes],
                 also: Also | None = None, originals: bytes | None = None, as_received: bytes | None = None,
                 array: Callable[[], bytes] | None = None) -> None:
    """Append one request's `count` entries (`lines`) to each outbox, in one transaction: as
    sealed batches as far as they fill whole ones, the rest to the inbox; a small request in an
    inbox item it shares with the others waiting for the DB thread (store/coalesce.py).

    `as_received`: the request's gzip body when it is already a batch body the relay would send
    (pipeline.Prepared): each outbox that `takes_whole(count)` seals it as it came, and `lines`
    (then a function) is encoded only if another outbox needs the entries.

    `array`: the entries encoded as one JSON array, when asked. An outbox for which they make
    exactly one whole batch seals that, with no `lines` to encode and turn into an array
    (bodies.from_ndjson: a copy and a scan of every byte, ~4 % of a mapped entry's CPU).

    Raises QueueFull when the disk budget cannot hold them; then none is kept."""
    whole = [as_received is not None and originals is None and outbox.takes_whole(count) for outbox in outboxes]
    one = [array is not None and originals is None and not as_is and outbox.takes_one_batch(count)
           for outbox, as_is in zip(outboxes, whole, strict=True)]
    needs_lines = not all(as_is or single for as_is, single in zip(whole, one, strict=True))
    encoded = (lines() if needs_lines else None) if callable(lines) else lines
    joined: bytes | None = None
    if (encoded is not None and originals is None and also is None and len(encoded) < coalesce.SMALL
            and all(outbox.shape is None or count < outbox.shape.max_entries for outbox in outboxes)):
        await queue.small.commit(queue, outboxes, count, encoded)  # shares an inbox item with others
        return
    writes: list[Write] = []
    for outbox, as_is, single in zip(outboxes, whole, one, strict=True):
        shape = outbox.shape
        if as_is:
            assert shape is not None and as_received is not None
            writes.append(Write(outbox.name, outbox.reserve_batch(), count, b"", shape, as_received))
            continue
        if single:
            assert shape is not None and array is not None
            joined = joined if joined is not None else array()
            writes.append(Write(outbox.name, outbox.reserve_batch(), count, b"", shape, array=joined))
            continue
        assert encoded is not None
        rest, left = encoded, count
        # kept records ride in inbox items only (the batcher carries them into batches)
        if shape is not None and originals is None and count >= shape.max_entries:
            runs, rest = bodies.cut(encoded, count, shape.max_entries)
            first = outbox.reserve_batch(len(runs))
            writes += [Write(outbox.name, first + i, shape.max_entries, run, shape) for i, run in enumerate(runs)]
            left = count - len(runs) * shape.max_entries
        if left:
            writes.append(Write(outbox.name, outbox.reserve(), left, rest))
    await _append(queue, outboxes, writes, also, originals)


async def _append(queue: DiskQueue, outboxes: list[Outbox], writes: list[Write], also: Also | None = None,
                  originals: bytes | None = None) -> None:
    by_name = {outbox.name: outbox for outbox in outboxes}

    def on_commit(refs: list[InboxRef | tuple[BatchRef, SealedBatch]]) -> None:
        for write, ref in zip(writes, refs, strict=True):
            outbox = by_name[write.sink]
            if isinstance(ref, InboxRef):
                outbox.committed(ref)
            else:
                outbox.add_fresh(*ref)

    await queue.append(writes, on_commit, also, originals)

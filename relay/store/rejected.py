"""The rejected-records store: records the mapping or decoding refused, kept to be replayed.

Keys live in the queue database, beside the sinks' (`r/<seq:020d>.<bytes>.<source>`), so they
are salvaged with it, and a replay can remove what it re-queues in the same transaction that
queues it (exactly once). The sequence number leads the key, so the oldest records are the
first keys: dropping past the bound is an index range scan, and memory holds no per-record
index, only per-source counts (O(sources); a full 64 MiB store is listed from SQLite's key
index when a replay asks). Values hold the record as received (MessagePack of the decoded
value, or the bytes of a line that did not decode), unredacted: a replay needs every field,
and the queue directory already holds the shippers' data. Redaction happens where records are shown.

Bounded by `queue.rejected_max_size` bytes of values (0: nothing is stored): past it the oldest
records of any source are dropped and counted per source. A rejection is not acknowledged
data, so writes do not hold the request's answer: they are handed to the DB thread and written
in one transaction per batch of requests; a clean stop writes what is pending. Every count
changes on the DB thread, where the keys are written and deleted, under one lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import msgspec

from relay.store.queue import Also, Cache, DiskQueue

log = logging.getLogger("relay.rejected")
PREFIX = "r/"
_END = "r0"  # the first key past every "r/..." one
_DROP_CHUNK = 1000
_WARN_EVERY = 60.0  # seconds between two "store full, dropping" warnings


class StoredRejection(msgspec.Struct, array_like=True, gc=False):
    time: float
    source: str
    index: int
    field: str | None
    reason: str
    message: str
    tag: str | None
    raw: bool  # record: the bytes of an undecodable line (True), or MessagePack of the decoded record
    record: bytes


_encode = msgspec.msgpack.Encoder(enc_hook=repr).encode
_decode = msgspec.msgpack.Decoder(StoredRejection).decode
_decode_any = msgspec.msgpack.Decoder().decode


def pack_record(record: Any) -> tuple[bool, bytes]:
    """(raw, bytes) for a record as pipeline.Prepared.rejected holds it."""
    if isinstance(record, bytes | bytearray):
        return True, bytes(record)
    try:
        return False, _encode(record)
    except (TypeError, ValueError, OverflowError):
        return False, _encode(repr(record))


def unpack_record(item: StoredRejection) -> Any:
    return unpack_packed(item.raw, item.record)


def unpack_packed(raw: bool, data: bytes) -> Any:
    return data if raw else _decode_any(data)


def parse_key(key: str) -> tuple[int, int, str] | None:
    """(seq, bytes, source) of a store key, None for another key."""
    if not key.startswith(PREFIX):
        return None
    try:
        seq, nbytes, source = key[len(PREFIX):].split(".", 2)
        return int(seq), int(nbytes), source
    except ValueError:
        return None


class RejectedStore:
    """Owned by the event loop; every disk operation runs on the queue's DB thread, in order."""

    def __init__(self, queue: DiskQueue, max_bytes: int) -> None:
        self.queue = queue
        self.max_bytes = max_bytes
        self.bytes = 0
        self.records: dict[str, int] = {}
        self.bytes_by_source: dict[str, int] = {}
        self.dropped: dict[str, int] = {}  # per source, since start
        self._seq = 0
        self._lock = threading.Lock()  # the counts and the pending writes, shared with the DB thread
        self._writes: list[tuple[str, bytes]] = []
        self._deletes: list[str] = []
        self._flush_queued = False
        self._last_warning = -1e9
        # one replay at a time: two would read the same records and queue them twice
        self.replaying = asyncio.Lock()

    async def load(self) -> None:
        """The counts, from the key index alone (sizes ride in the keys)."""
        def scan(cache: Cache) -> None:
            last = -1
            for key in _keys(cache):
                parsed = parse_key(key)
                if parsed is None:
                    log.error("rejected store: ignoring unreadable key %r", key)
                    continue
                self._counted(parsed[2], 1, parsed[1])
                last = max(last, parsed[0])
            self._seq = last + 1
        await self.queue.call(scan)

    async def settled(self) -> None:
        """Returns once every write handed over before is on disk (and counted)."""
        await self.queue.call(lambda cache: None)

    def sources(self) -> list[str]:
        return [name for name, n in self.records.items() if n]

    async def keys(self, source: str) -> list[str]:
        """The source's keys, oldest first."""
        def list_keys(cache: Cache) -> list[str]:
            return [key for key in _keys(cache) if (parsed := parse_key(key)) and parsed[2] == source]
        return await self.queue.call(list_keys)

    # ---- writes (the event loop hands them over; the DB thread makes and counts them) ---------

    def add(self, items: list[StoredRejection]) -> None:
        """Store these (not waiting for the disk); the oldest are dropped past the bound."""
        self._hand_over(self._keyed(items), [])

    def writer(self, items: list[StoredRejection]) -> Also:
        """For DiskQueue.append(also=...): store these inside the caller's transaction (a dead letter
        re-mapped into rejections leaves its store in the transaction that writes them)."""
        writes = self._keyed(items)

        def write(cache: Cache) -> None:
            self._set(cache, writes)
            self._enforce(cache)
        return write

    def _keyed(self, items: list[StoredRejection]) -> list[tuple[str, bytes]]:
        if self.max_bytes <= 0 or not items:
            return []
        writes = []
        for item in items:
            value = _encode(item)
            if len(value) > self.max_bytes:
                with self._lock:
                    self.dropped[item.source] = self.dropped.get(item.source, 0) + 1
                continue
            writes.append((f"{PREFIX}{self._seq:020d}.{len(value)}.{item.source}", value))
            self._seq += 1
        return writes

    def count_dropped(self, source: str, n: int) -> None:
        """Records not stored at all (over the per-request cap): counted like those dropped past the bound."""
        with self._lock:
            self.dropped[source] = self.dropped.get(source, 0) + n

    def discard(self, keys: list[str]) -> None:
        self._hand_over([], keys)

    def trim(self) -> None:
        """Apply a new (smaller) bound now rather than at the next write."""
        self._hand_over([], [], force=True)

    def deleter(self, keys: list[str]) -> Also:
        """For DiskQueue.append(also=...): delete keys inside the caller's transaction."""
        def delete(cache: Cache) -> None:
            self._delete(cache, keys)
        return delete

    def _hand_over(self, writes: list[tuple[str, bytes]], deletes: list[str], force: bool = False) -> None:
        if not writes and not deletes and not force:
            return
        with self._lock:
            self._writes += writes
            self._deletes += deletes
            if self._flush_queued:
                return
            self._flush_queued = True
        self.queue.submit(self._flush)

    def _flush(self, cache: Cache) -> None:
        """DB thread: every pending write and delete, then the bound, in one transaction."""
        with self._lock:
            writes, deletes = self._writes, self._deletes
            self._writes, self._deletes, self._flush_queued = [], [], False
        with cache.transact(retry=True):
            self._set(cache, writes)
            self._delete(cache, deletes)
            self._enforce(cache)

    def _set(self, cache: Cache, writes: list[tuple[str, bytes]]) -> None:
        for key, value in writes:
            cache.set(key, value)
        with self._lock:
            for key, value in writes:
                parsed = parse_key(key)
                assert parsed is not None
                self._counted(parsed[2], 1, len(value))

    def _delete(self, cache: Cache, keys: list[str]) -> None:
        for key in keys:
            parsed = parse_key(key)
            if parsed is not None and cache.delete(key):  # counted only if it was still there
                with self._lock:
                    self._counted(parsed[2], -1, -parsed[1])

    def _enforce(self, cache: Cache) -> None:
        """Drop the oldest records while over the bound."""
        dropped = 0
        while self.bytes > self.max_bytes:
            oldest = _keys(cache, limit=_DROP_CHUNK)
            if not oldest:
                break
            for key in oldest:
                if self.bytes <= self.max_bytes:
                    break
                parsed = parse_key(key)
                if cache.delete(key) and parsed is not None:
                    with self._lock:
                        self._counted(parsed[2], -1, -parsed[1])
                        self.dropped[parsed[2]] = self.dropped.get(parsed[2], 0) + 1
                    dropped += 1
        now = time.monotonic()
        if dropped and now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning("rejected store: over queue.rejected_max_size (%d bytes); dropping the oldest records "
                        "(relay_rejected_dropped_total counts them)", self.max_bytes)

    def _counted(self, source: str, records: int, nbytes: int) -> None:
        self.bytes += nbytes
        self.records[source] = self.records.get(source, 0) + records
        self.bytes_by_source[source] = self.bytes_by_source.get(source, 0) + nbytes

    # ---- reads ------------------------------------------------------------------------

    async def read(self, keys: list[str]) -> list[tuple[str, StoredRejection]]:
        """The records behind keys (after every write handed over before); missing ones
        (dropped past the bound meanwhile) are skipped, unreadable ones discarded."""
        def get(cache: Cache) -> list[tuple[str, Any]]:
            return [(key, cache.get(key)) for key in keys]
        out = []
        for key, raw in await self.queue.call(get):
            if raw is None:
                continue
            try:
                out.append((key, _decode(raw)))
            except (msgspec.DecodeError, TypeError):
                log.error("rejected store: %s is unreadable; dropped", key)
                self.discard([key])
        return out


def _keys(cache: Cache, limit: int = -1) -> list[str]:
    """Store keys in key order (= oldest first), from SQLite's key index."""
    rows = cache._sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
                      (PREFIX, _END, limit)).fetchall()
    return [row[0] for row in rows if isinstance(row[0], str)]


def stored_items(source: str, tag: str | None, rejected: list[tuple[Any, Any]], now: float | None = None
                 ) -> list[StoredRejection]:
    """One StoredRejection per rejected record (a record with several rejections: the first)."""
    now = time.time() if now is None else now
    seen: set[int] = set()
    items = []
    for rejection, record in rejected:
        if rejection.index in seen:
            continue
        seen.add(rejection.index)
        raw, data = pack_record(record)
        items.append(StoredRejection(now, source, rejection.index, rejection.field, rejection.reason,
                                     rejection.message, tag, raw, data))
    return items

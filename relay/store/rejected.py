"""The rejected-records store: records the mapping or decoding refused, kept to be replayed.

Keys live in the queue database, beside the sinks' (`r/<source>/<seq:020d>.<bytes>`), so they
are salvaged with it and a replay can remove what it re-queues in the same transaction that
queues it (exactly once). Values hold the record as received (MessagePack of the decoded value,
or the bytes of a line that did not decode), unredacted: a replay needs every field, and the
queue directory already holds the shippers' data. Redaction happens where records are shown.

Bounded by `queue.rejected_max_size` bytes of values (0: nothing is stored): past it the oldest
records of any source are dropped and counted per source. A rejection is not acknowledged
data, so writes do not hold the request's answer: they are handed to the DB thread and
written in one transaction per batch of requests; a clean stop writes what is pending.
Memory: the index holds ~150 bytes per stored record (a 64 MiB store of 1 KiB records: ~10 MB).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import msgspec

from relay.store.queue import Also, Cache, DiskQueue

log = logging.getLogger("relay.rejected")
PREFIX = "r/"


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
    return item.record if item.raw else _decode_any(item.record)


def _key(source: str, seq: int, nbytes: int) -> str:
    return f"{PREFIX}{source}/{seq:020d}.{nbytes}"


class RejectedStore:
    """Owned by the event loop; every disk operation runs on the queue's DB thread, in order."""

    def __init__(self, queue: DiskQueue, max_bytes: int) -> None:
        self.queue = queue
        self.max_bytes = max_bytes
        self._index: OrderedDict[str, tuple[str, int]] = OrderedDict()  # key -> (source, bytes), oldest first
        self.bytes = 0
        self.records: dict[str, int] = {}
        self.bytes_by_source: dict[str, int] = {}
        self.dropped: dict[str, int] = {}  # per source, since start
        self._seq = 0
        self._lock = threading.Lock()  # pending writes, shared with the DB thread
        self._writes: list[tuple[str, bytes]] = []
        self._deletes: list[str] = []
        self._flush_queued = False

    async def load(self) -> None:
        """Rebuild the index from the key index alone (sizes ride in the keys)."""
        def keys(cache: Cache) -> list[str]:
            rows = cache._sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key",
                              (PREFIX, PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1))).fetchall()
            return [row[0] for row in rows if isinstance(row[0], str)]
        found = []
        for key in await self.queue.call(keys):
            try:
                source, _, tail = key[len(PREFIX):].rpartition("/")
                seq, nbytes = (int(part) for part in tail.split("."))
            except ValueError:
                log.error("rejected store: ignoring unreadable key %r", key)
                continue
            found.append((seq, key, source, nbytes))
        for seq, key, source, nbytes in sorted(found):
            self._remember(key, source, nbytes)
            self._seq = seq + 1

    # ---- figures ----------------------------------------------------------------------

    def keys(self, source: str) -> list[str]:
        return [key for key, (name, _) in self._index.items() if name == source]

    def sources(self) -> list[str]:
        return [name for name, n in self.records.items() if n]

    # ---- writes -----------------------------------------------------------------------

    def add(self, items: list[StoredRejection]) -> None:
        """Store these (not waiting for the disk), dropping the oldest past the bound."""
        if self.max_bytes <= 0 or not items:
            return
        writes = []
        for item in items:
            value = _encode(item)
            if len(value) > self.max_bytes:
                self.dropped[item.source] = self.dropped.get(item.source, 0) + 1
                continue
            key = _key(item.source, self._seq, len(value))
            self._seq += 1
            self._remember(key, item.source, len(value))
            writes.append((key, value))
        self._write(writes, self.enforce_bound())

    def remove(self, keys: list[str]) -> None:
        """Forget these keys; the caller deletes them on disk (or `discard` does)."""
        for key in keys:
            found = self._index.pop(key, None)
            if found is not None:
                self._forget(key, *found)

    def discard(self, keys: list[str]) -> None:
        self.remove(keys)
        self._write([], keys)

    def enforce_bound(self) -> list[str]:
        """Drop the oldest records while over max_bytes (the caller deletes the keys returned)."""
        gone: list[str] = []
        while self.bytes > self.max_bytes and self._index:
            key, (source, nbytes) = self._index.popitem(last=False)
            self._forget(key, source, nbytes)
            self.dropped[source] = self.dropped.get(source, 0) + 1
            gone.append(key)
        if gone:
            log.warning("rejected store: over queue.rejected_max_size (%d bytes); dropped the %d oldest records",
                        self.max_bytes, len(gone))
        return gone

    def deleter(self, keys: list[str]) -> Also:
        """For DiskQueue.append(also=...): delete keys inside the caller's transaction."""
        def delete(cache: Cache) -> None:
            for key in keys:
                cache.delete(key)
        return delete

    def _write(self, writes: list[tuple[str, bytes]], deletes: list[str]) -> None:
        if not writes and not deletes:
            return
        with self._lock:
            self._writes += writes
            self._deletes += deletes
            if self._flush_queued:
                return
            self._flush_queued = True
        self.queue.submit(self._flush)

    def _flush(self, cache: Cache) -> None:
        """DB thread: every pending write and delete, in one transaction."""
        with self._lock:
            writes, deletes = self._writes, self._deletes
            self._writes, self._deletes, self._flush_queued = [], [], False
        with cache.transact(retry=True):
            for key, value in writes:
                cache.set(key, value)
            for key in deletes:
                cache.delete(key)

    # ---- reads ------------------------------------------------------------------------

    async def read(self, keys: list[str]) -> list[tuple[str, StoredRejection]]:
        """The records behind keys (after every write handed over before); unreadable ones are skipped."""
        def get(cache: Cache) -> list[tuple[str, Any]]:
            return [(key, cache.get(key)) for key in keys]
        out = []
        for key, raw in await self.queue.call(get):
            try:
                out.append((key, _decode(raw)))
            except (msgspec.DecodeError, TypeError):
                log.error("rejected store: %s is missing or unreadable; dropped", key)
                self.discard([key])
        return out

    # ---- the index --------------------------------------------------------------------

    def _remember(self, key: str, source: str, nbytes: int) -> None:
        self._index[key] = (source, nbytes)
        self.bytes += nbytes
        self.records[source] = self.records.get(source, 0) + 1
        self.bytes_by_source[source] = self.bytes_by_source.get(source, 0) + nbytes

    def _forget(self, key: str, source: str, nbytes: int) -> None:
        self.bytes -= nbytes
        self.records[source] -= 1
        self.bytes_by_source[source] -= nbytes


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

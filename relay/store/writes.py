"""What one request's commit writes, encoded on the DB thread before its transaction: an inbox
item per routed sink, and the sealed batches of a request that filled some (store/outbox.commit)."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import msgspec
from isal import igzip

from relay.store import bodies
from relay.store.bodies import BatchShape
from relay.store.layout import (
    BatchRef,
    InboxItem,
    InboxRef,
    SealedBatch,
    batch_key,
    checksum,
    encode,
    inbox_key,
    item_checksum,
)

_COMPRESS_FROM = 4096  # bytes of entries from which inbox items are stored compressed


class Write(msgspec.Struct, frozen=True, gc=False):
    """Entries of one request for one sink: an inbox item (`seq`), or, with `shape`, a sealed
    batch (`seq` is then its batch id) of a request that filled it."""

    sink: str
    seq: int
    count: int
    lines: bytes  # encoded entries, each ending in "\n"
    shape: BatchShape | None = None
    body: bytes | None = None  # a sealed batch's gzip body as the request sent it (outbox.commit, as_received)
    array: bytes | None = None  # or its entries as one JSON array, to compress (outbox.commit, array)


class _Cache(Protocol):  # the queue's diskcache.Cache, which lives behind DiskQueue alone
    def set(self, key: str, value: bytes) -> Any: ...


class Packed(NamedTuple):
    write: Write
    key: str
    value: bytes
    batch: SealedBatch | None  # for a sealed batch: handed to the senders as it is


def pack(writes: list[Write], originals: bytes | None, now: float) -> list[Packed]:
    """Each write as the key and value it is stored under.

    Inbox items are stored gzip-compressed (isal, level 1): about a tenth of the bytes to write
    and fsync, and isal runs without the GIL, so the DB thread overlaps the event loop. Small
    items (single-entry requests) are not worth the call. Sinks given the same lines share
    one compression of them."""
    packed: list[Packed] = []
    stored: dict[int, bytes] = {}
    kept: bytes | None = None
    for write in writes:
        sink, seq, count, lines, shape = write.sink, write.seq, write.count, write.lines, write.shape
        if shape is not None:
            encoding: str | None
            if write.body is not None:
                raw, encoding = write.body, "gzip"
            elif write.array is not None:
                raw, encoding = bodies.compress(write.array, shape.compression, shape.level)
            else:
                raw, encoding = bodies.from_ndjson(lines, shape.compression, shape.level)
            batch = SealedBatch(count, raw, encoding, checksum(raw), now)
            value = encode(batch)
            packed.append(Packed(write, batch_key(sink, seq, count, len(value)), value, batch))
            continue
        small = len(lines) < _COMPRESS_FROM
        body = stored.get(id(lines))
        if body is None:
            body = stored[id(lines)] = lines if small else igzip.compress(lines, compresslevel=1)
        if originals is None:
            item = InboxItem(count, body, checksum(body), now, None if small else "gzip")
        else:
            if kept is None:
                kept = originals if small else igzip.compress(originals, compresslevel=1)
            item = InboxItem(count, body, 0, now, None if small else "gzip", kept)
            item.crc = item_checksum(item)
        value = encode(item)
        packed.append(Packed(write, inbox_key(sink, seq, count, len(value)), value, None))
    return packed


def store(cache: _Cache, packed: list[Packed], now: float) -> list[Any]:
    """DB thread, in the group's transaction: per write, its InboxRef or (BatchRef, SealedBatch)."""
    refs: list[Any] = []
    for write, key, value, batch in packed:
        cache.set(key, value)
        if batch is None:
            refs.append(InboxRef(write.seq, write.count, len(value), now))
        else:
            refs.append((BatchRef(key, write.count, len(value), now), batch))
    return refs

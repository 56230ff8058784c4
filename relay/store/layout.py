"""What the durable queue stores, and where: item structs, key names, checksums, the start-up scan.

Layout (all keys in one Cache so that sealing a batch is one transaction):

    i/<sink>/<seq:020d>.<count>.<bytes>  inbox item: entries accepted for <sink>, not yet batched
    c/<sink>                             the sink's cursor: first unsealed (seq, offset), next batch id
    b/<sink>/<id:020d>.<count>.<bytes>   sealed batch: a compressed upstream body, deleted on 2xx
    d/<sink>/<id>.<count>.<bytes>        dead letter: entries upstream refused, with the reason
    q/<original key>                     quarantined: an item whose checksum failed

Counts and sizes ride in the keys so that start-up rebuilds every figure from
the key index alone, without reading a gigabyte of values.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

import diskcache
import msgspec

from relay.errors import CorruptItem

log = logging.getLogger("relay.queue")


class InboxItem(msgspec.Struct, array_like=True, gc=False):
    count: int
    entries: bytes  # encoded entries, one JSON object per line, each line ending in "\n"
    crc: int  # of `entries` as stored (compressed or not)
    created: float
    encoding: str | None = None  # "gzip": `entries` is stored compressed
    # keep_records: the entries' original records (store/originals.py), compressed like `entries`;
    # `crc` then covers entries + originals
    originals: bytes | None = None


class SealedBatch(msgspec.Struct, array_like=True, gc=False):
    count: int
    body: bytes  # the exact upstream request body (compressed when encoding is set)
    encoding: str | None
    crc: int
    oldest: float  # arrival time of its oldest entry
    originals: bytes | None = None  # store/originals.py, gzip-compressed; not covered by `crc` (never sent)


class DeadLetter(msgspec.Struct, array_like=True, gc=False):
    count: int
    entries: bytes  # as in InboxItem
    reason: str
    status: int | None
    failed_at: float
    originals: bytes | None = None  # store/originals.py: the records the entries were mapped from


class Cursor(msgspec.Struct, array_like=True, gc=False):
    seq: int = 0  # first inbox item not wholly sealed
    offset: int = 0  # entries of that item already sealed
    next_batch: int = 0
    crc: int = 0  # of the three numbers: a flipped bit must not skip entries silently

    def sealed(self) -> Cursor:
        return Cursor(self.seq, self.offset, self.next_batch, checksum(f"{self.seq}:{self.offset}:{self.next_batch}".encode()))

    def intact(self) -> bool:
        return self.crc == self.sealed().crc


class BatchRef(msgspec.Struct, frozen=True, gc=False):
    key: str
    count: int
    nbytes: int
    created: float = 0.0  # arrival of its oldest entry; 0: unknown (found on disk at start-up)


class InboxRef(msgspec.Struct, frozen=True, gc=False):
    seq: int
    count: int
    nbytes: int
    created: float = 0.0


class SinkSnapshot(msgspec.Struct, gc=False):
    """What start-up found on disk for one sink."""

    cursor: Cursor
    inbox: list[InboxRef]
    batches: list[BatchRef]
    dead: list[BatchRef]


encode = msgspec.msgpack.Encoder().encode
decode_item = msgspec.msgpack.Decoder(InboxItem).decode
decode_batch = msgspec.msgpack.Decoder(SealedBatch).decode
decode_dead = msgspec.msgpack.Decoder(DeadLetter).decode
decode_cursor = msgspec.msgpack.Decoder(Cursor).decode


def inbox_key(sink: str, seq: int, count: int, nbytes: int) -> str:
    return f"i/{sink}/{seq:020d}.{count}.{nbytes}"


def batch_key(sink: str, batch_id: int, count: int, nbytes: int) -> str:
    return f"b/{sink}/{batch_id:020d}.{count}.{nbytes}"


def batch_id(key: str) -> int:
    """The id in a batch or dead-letter key ("b/<sink>/<id>[LR...].<count>.<bytes>")."""
    return int(key.rsplit("/", 1)[1].split(".")[0].rstrip("LR"))


def dead_key(stem: str, count: int, nbytes: int) -> str:
    """stem: the refused batch's key without its counts, "b/<sink>/<id>" -> "d/<sink>/<id>..."."""
    return f"d/{stem[2:]}.{count}.{nbytes}"


def checksum(data: bytes) -> int:
    return zlib.crc32(data)


def item_checksum(item: InboxItem) -> int:
    """An inbox item's crc: of its entries, continued over its originals when it has them."""
    crc = zlib.crc32(item.entries)
    return crc if item.originals is None else zlib.crc32(item.originals, crc)


def scan(cache: diskcache.Cache, quarantine: Callable[[str, Any, str], None]) -> dict[str, SinkSnapshot]:
    """Every sink's items, from the key index alone; a damaged cursor is quarantined and rebuilt."""
    sinks: dict[str, SinkSnapshot] = {}

    def sink(name: str) -> SinkSnapshot:
        if name not in sinks:
            sinks[name] = SinkSnapshot(Cursor(), [], [], [])
        return sinks[name]

    damaged: list[str] = []
    for key in cache.iterkeys():
        if not isinstance(key, str) or key[1:2] != "/":
            continue
        kind, _, rest = key.partition("/")
        name, _, tail = rest.rpartition("/")
        try:
            if kind == "c":
                cursor = decode_cursor(cache[key])
                if not cursor.intact():
                    raise CorruptItem(f"{key} failed its checksum")
                sink(rest).cursor = cursor
            elif kind == "i":
                seq, count, nbytes = tail.split(".")
                sink(name).inbox.append(InboxRef(int(seq), int(count), int(nbytes)))
            elif kind == "b":
                _, count, nbytes = tail.split(".")
                sink(name).batches.append(BatchRef(key, int(count), int(nbytes)))
            elif kind == "d":
                _, count, nbytes = tail.split(".")
                sink(name).dead.append(BatchRef(key, int(count), int(nbytes)))
        except (ValueError, msgspec.DecodeError, CorruptItem) as exc:
            if kind != "c":
                log.error("queue: ignoring unreadable key %r", key)
                continue
            quarantine(key, cache.get(key), str(exc))
            damaged.append(rest)
    for name in damaged:
        sink(name).cursor = _rebuilt_cursor(sink(name))
    return sinks


def _rebuilt_cursor(found: SinkSnapshot) -> Cursor:
    """A cursor that failed its checksum: start again from the first inbox item still on disk.
    Entries of a partly sealed item may then go out twice; none is skipped, and batch ids
    continue past every batch on disk so none is overwritten."""
    seq = min((ref.seq for ref in found.inbox), default=0)
    ids = [batch_id(ref.key) for ref in (*found.batches, *found.dead)]
    cursor = Cursor(seq, 0, max(ids, default=-1) + 1)
    log.error("queue: rebuilt a damaged cursor from the inbox: it resumes at item %d (entries of that "
              "item sealed before may be delivered twice; none is lost)", seq)
    return cursor

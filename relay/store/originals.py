"""Original records kept beside queued entries (`[sources.X] keep_records`), so a dead letter can be re-mapped.

One blob per inbox item, sealed batch or dead letter: a MessagePack array holding, for each
entry in the same order, either nil (an entry kept without its record: its source had
`keep_records` off, or it was re-queued from an older letter) or `[source, tag, record]`.
Elements stay msgspec.Raw while items are cut into batches and bisected, so sealing and
splitting copy bytes and never decode a record.
"""

from __future__ import annotations

from typing import Any

import msgspec
from isal import igzip

_encode = msgspec.msgpack.Encoder(enc_hook=repr).encode
_split = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode
_NIL = b"\xc0"  # MessagePack nil


class Original(msgspec.Struct, array_like=True, gc=False):
    source: str
    tag: str | None
    record: Any


_decode_one = msgspec.msgpack.Decoder(Original).decode


def pack(source: str, tag: str | None, records: list[Any]) -> bytes:
    """The blob for one request's records (those that became entries, in entry order)."""
    return _encode([(source, tag, record) for record in records])


def split(blob: bytes | None, count: int) -> list[msgspec.Raw | None]:
    """One element per entry; `count` Nones when there is no blob."""
    if blob is None:
        return [None] * count
    parts: list[msgspec.Raw | None] = [None if bytes(raw) == _NIL else raw for raw in _split(blob)]
    if len(parts) != count:  # written with its entries in one transaction: a bug, not the disk
        raise ValueError(f"{len(parts)} original records for {count} entries")
    return parts


def join(parts: list[msgspec.Raw | None]) -> bytes | None:
    """The blob for a slice of entries; None when none of them has its record."""
    if all(part is None for part in parts):
        return None
    return _encode(parts)


def unpack(part: msgspec.Raw) -> Original:
    return _decode_one(part)


def sealed(parts: list[msgspec.Raw | None]) -> bytes | None:
    """`join`, compressed (isal level 1, about a fifth of the bytes): for sealed batches, which
    hold their originals until delivered although only a refusal reads them."""
    blob = join(parts)
    return igzip.compress(blob, compresslevel=1) if blob is not None else None


def unsealed(blob: bytes | None, count: int) -> list[msgspec.Raw | None]:
    return split(igzip.decompress(blob) if blob is not None else None, count)

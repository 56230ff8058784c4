"""The last rejected records of each source, in memory, and the top rejection reasons.

Bounds, per source: `max_records` records and `max_bytes` bytes (each record is kept as the
MessagePack of the record as received, or the bytes of a line that did not decode, at most about
redact.RECORD_MAX bytes, copied to their exact size, so the bytes counted are the bytes held,
plus a fixed ~300 bytes of bookkeeping per record counted with them). The counts per
(field, reason) are kept in one-minute buckets over `window` seconds: bounded by the schema's
fields times its rules. Capture runs only for requests with rejections, and packs at most
`max_records` of them per request (the older ones of a large request would be pushed out at once).
Redaction and JSON happen when someone asks (`recent`), not per rejection: MessagePack costs a
few µs a record, redacting ~50-100 µs.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import msgspec

from relay.models import Rejection
from relay.rejections.redact import RECORD_MAX, shown
from relay.store.rejected import pack_record, unpack_packed

OVERHEAD = 300  # bytes counted per record besides its JSON: the struct, strings, deque slot


class RecentRejection(msgspec.Struct, gc=False):
    """One rejected record as GET /-/rejections shows it (the console's contract: add, never rename)."""

    time: float
    source: str
    index: int
    field: str | None
    reason: str
    message: str
    record: msgspec.Raw  # the redacted record as received, JSON


class TopReason(msgspec.Struct, gc=False):
    field: str | None
    reason: str
    count: int


class StoredFigures(msgspec.Struct, gc=False):
    records: int
    bytes: int
    dropped: int


class _Kept(msgspec.Struct, gc=False):
    time: float
    rejection: Rejection
    kind: str  # "line": the bytes of an undecodable line; "msgpack": the record; "json": already shown
    data: bytes
    size: int

    def view(self, source: str) -> RecentRejection:
        record = self.data if self.kind == "json" else shown(unpack_packed(self.kind == "line", self.data))
        r = self.rejection
        return RecentRejection(self.time, source, r.index, r.field, r.reason, r.message, msgspec.Raw(record))


def _kept(now: float, rejection: Rejection, record: Any) -> _Kept:
    raw, data = pack_record(record)
    if raw:
        data = data[:RECORD_MAX]
        kind = "line"
    elif len(data) > RECORD_MAX:  # a huge record: shown (truncated, marked) now, once
        kind, data = "json", shown(record)
    else:
        kind, data = "msgpack", bytes(memoryview(data))  # exact size: the encoder's buffer may be larger
    return _Kept(now, rejection, kind, data, len(data) + len(rejection.message) + OVERHEAD)


class _Ring:
    __slots__ = ("buckets", "bytes", "dropped", "items")

    def __init__(self) -> None:
        self.items: deque[_Kept] = deque()
        self.bytes = 0
        self.dropped = 0  # pushed out by the bounds since start
        self.buckets: deque[tuple[int, Counter[tuple[str | None, str]]]] = deque()


class RecentRejections:
    def __init__(self, max_records: int = 200, max_bytes: int = 2 * 2**20, window: float = 900.0) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.window = window
        self._rings: dict[str, _Ring] = {}

    def capture(self, source: str, rejected: list[tuple[Rejection, Any]], now: float | None = None) -> None:
        if not rejected:
            return
        now = time.time() if now is None else now
        ring = self._rings.get(source)
        if ring is None:
            ring = self._rings[source] = _Ring()
        minute = int(now // 60)
        if not ring.buckets or ring.buckets[-1][0] != minute:
            ring.buckets.append((minute, Counter()))
            while ring.buckets and ring.buckets[0][0] <= minute - self.window / 60:
                ring.buckets.popleft()
        counts = ring.buckets[-1][1]
        for rejection, _ in rejected:
            counts[(rejection.field, rejection.reason)] += 1
        skipped = max(0, len(rejected) - self.max_records)
        ring.dropped += skipped
        for rejection, record in rejected[skipped:]:
            item = _kept(now, rejection, record)
            ring.items.append(item)
            ring.bytes += item.size
            while len(ring.items) > self.max_records or ring.bytes > self.max_bytes:
                ring.bytes -= ring.items.popleft().size
                ring.dropped += 1

    def recent(self, source: str | None = None, limit: int = 100) -> list[RecentRejection]:
        """Newest first; all sources merged by time when `source` is None. Redacted here."""
        names = [source] if source is not None else list(self._rings)
        items = [(item, name) for name in names if name in self._rings for item in reversed(self._rings[name].items)]
        items.sort(key=lambda pair: pair[0].time, reverse=True)  # stable: within one request, last record first
        return [item.view(name) for item, name in items[:max(0, limit)]]

    def top(self, source: str, now: float | None = None, limit: int = 10) -> list[TopReason]:
        ring = self._rings.get(source)
        if ring is None:
            return []
        since = int((time.time() if now is None else now) // 60) - self.window / 60
        total: Counter[tuple[str | None, str]] = Counter()
        for minute, counts in ring.buckets:
            if minute > since:
                total.update(counts)
        return [TopReason(f, r, n) for (f, r), n in total.most_common(limit)]

    def figures(self, source: str) -> StoredFigures:
        ring = self._rings.get(source)
        return StoredFigures(len(ring.items), ring.bytes, ring.dropped) if ring else StoredFigures(0, 0, 0)

    def keep_only(self, sources: Iterable[str]) -> None:
        """After a reload: forget sources no longer configured."""
        wanted = set(sources)
        for name in [n for n in self._rings if n not in wanted]:
            del self._rings[name]

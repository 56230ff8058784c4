"""decode -> map -> validate -> enqueue: what the ingest route calls per request.

The CPU part (`prepare`) is pure and runs once per request over the whole
body; the only I/O is one queue append per request, group-committed with
whatever other requests arrive meanwhile. The answer is given only after that
commit returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from relay.config import SourceConfig
from relay.errors import Unavailable
from relay.mapping import Mapper
from relay.mapping.spec import is_passthrough
from relay.models import Decoded, IngestResult, MapResult, RecordContext, Rejection
from relay.stages.compression import decompress
from relay.stages.decode import decode_data, inflate
from relay.stages.protocols import DecodeFn, ShapedDecodeFn, decoder, shaped_decoder
from relay.stages.schema import Validator
from relay.stages.typed import TypedRoute
from relay.store import bodies
from relay.store import originals as kept_records
from relay.store.outbox import Outbox
from relay.store.outbox import commit as outbox_commit
from relay.store.queue import Also, DiskQueue
from relay.telemetry import Metrics

ROOM_WAIT = 10.0  # seconds a request may wait for a CPU-starved batcher before a 503
# Seconds a request may wait for a sink's senders to take a batch when they are behind
# (outbox.SENDERS_BEHIND): they get the event loop, and a slow upstream costs at most this.
PACE_WAIT = 0.05
MAX_ERRORS_REPORTED = 100  # per answer; the rest are summarised in one line

_encoder = msgspec.json.Encoder()
_encode_lines = _encoder.encode_lines
_encode_array = _encoder.encode
_elements = msgspec.json.Decoder(list[msgspec.Raw]).decode
_TYPED_KINDS = frozenset(["json", "lines", "generic"])  # a JSON array, or NDJSON sent as such


@dataclass
class Route:
    """A configured source, compiled: what a request to its path goes through."""

    name: str
    config: SourceConfig
    mapper: Mapper
    validator: Validator
    outboxes: list[Outbox]
    tokens: list[bytes] = field(default_factory=list)
    # the typed fast route, for a mapping that takes upstream form as it is (None: every body per record)
    typed: TypedRoute | None = None
    # a native protocol's decoder (sources.X.protocol); None: plain HTTP, decoded by stages.decode
    decode: DecodeFn | None = None
    # its decoder into the mapping's record Struct, if the protocol has one (protocols.shaped_decoder)
    shaped: ShapedDecodeFn | None = None

    def __post_init__(self) -> None:
        if self.config.protocol != "http":
            self.decode = decoder(self.config.protocol)
            self.shaped = shaped_decoder(self.config.protocol)
        # keep_records needs the records: the typed route makes entries without any
        elif self.typed is None and is_passthrough(self.mapper.spec) and not self.config.keep_records:
            self.typed = TypedRoute()

    @property
    def protocol(self) -> str:
        return self.config.protocol


@dataclass
class Prepared:
    """A request's outcome before its commit.

    `prepare` encodes its entries (or, for a body kept `as_received`, needs no encoding) and lets
    them go: `result.entries` is emptied and `accepted` keeps their count. Freed at once, while
    the CPU's caches still hold them, they cost a fraction of what the same frees cost at the end
    of the request (docs/performance.md)."""

    result: MapResult
    encoded: bytes | None  # the entries, each encoded and ending in "\n"; None: made when asked (`lines`)
    received: int
    rejections: list[Rejection]
    # each rejection with what it points at (the decoded record, or the bytes of an undecodable
    # line): built only when there are rejections, for the rejected-records ring and store
    rejected: list[tuple[Rejection, Any]] = field(default_factory=list)
    tag: str | None = None
    meta: Any = None  # Decoded.meta: what a native protocol's answer needs
    originals: bytes | None = None  # keep_records: the entries' records (store/originals.py)
    # The request's gzip body when it is already a batch body the relay would send (a JSON
    # array of untouched entries, typed.check(exact=True)): a commit that seals it as one
    # whole batch stores it as it came, with no encoding and no compression of its own.
    as_received: bytes | None = None
    joined: bytes | None = None  # the entries as one JSON array; None: made when asked (`array`)
    # the entries again, for an `as_received` request whose entries were let go unencoded
    again: Callable[[], list[Any]] | None = None
    accepted: int = field(init=False)  # entries, also once `result.entries` is let go

    def __post_init__(self) -> None:
        self.accepted = len(self.result.entries)

    @property
    def lines(self) -> bytes:
        if self.encoded is None:
            if self.joined is not None:  # each element of the array as it was encoded, byte for byte
                self.encoded = b"".join([bytes(entry) + b"\n" for entry in _elements(self.joined)])
            else:
                entries = self._entries()
                self.encoded = _encode_lines(entries) if entries else b""
        return self.encoded

    def array(self) -> bytes:
        """The entries as one JSON array: `bodies.array_of(lines)`, byte for byte."""
        if self.joined is None:
            if self.encoded is not None:
                self.joined = bodies.array_of(self.encoded)
            else:
                self.joined = _encode_array(self._entries())
        return self.joined

    def _entries(self) -> list[Any]:
        return self.again() if self.again is not None else self.result.entries


def _encoded(route: Route, prepared: Prepared) -> Prepared:
    """`prepared` with its entries encoded now, while they are in the CPU's caches, and then let go.

    Encoded at the commit, after other requests have run, the same call took ~50 % longer
    (docs/performance.md). As one JSON array when they make exactly one batch for every sink
    (what store/outbox.commit seals as it is), else as lines; a commit that wants the other form
    gets it from this one (`lines`, `array`)."""
    result = prepared.result
    entries = result.entries
    count = len(entries)
    outboxes = route.outboxes
    if count and outboxes and prepared.originals is None and all(outbox.takes_one_batch(count) for outbox in outboxes):
        prepared.joined = _encode_array(entries)
    else:
        prepared.encoded = _encode_lines(entries) if entries else b""
    result.entries = []
    return prepared


def prepare(route: Route, body: bytes, *, content_type: str | None, content_encoding: str | None,
            headers: Mapping[str, str], max_size: int, path: str = "") -> Prepared:
    tag = headers.get(route.config.tag_header) if route.config.tag_header else None
    ctx = RecordContext(source=route.name, tag=tag, headers=headers, host=route.config.host)
    if route.decode is not None:
        data = decompress(body, content_encoding, max_size)
        shape = route.mapper.shape
        if route.shaped is not None and shape is not None and not route.config.keep_records:
            found = route.shaped(data, content_type=content_type, path=path, shape=shape)
            if found is not None:
                shaped = route.mapper.map_records(found.records, ctx, route.validator, shaped=True)
                # a rejection keeps its whole record: such a body is decoded and mapped again as dicts
                if not shaped.rejections:
                    return _encoded(route, Prepared(shaped, None, len(found.records), [], [], tag, found.meta))
        decoded = route.decode(data, content_type=content_type, path=path, max_size=max_size)
    else:
        kind, data, whole = inflate(body, content_type=content_type, content_encoding=content_encoding,
                                    max_size=max_size)
        start = data[:1]
        as_typed = kind in _TYPED_KINDS and (start == b"[" or (start == b"{" and kind == "lines"))
        if route.typed is not None and as_typed:
            typed = route.typed.check(data, lines=start != b"[", validator=route.validator,
                                      exact=whole and start == b"[")
            entries = typed.entries
            if entries is not None:  # every entry valid as it came: nothing to map, reject or repair
                if typed.as_sent:  # nothing to encode: the entries are let go at once, counted
                    prepared = Prepared(MapResult(entries, []), None, len(entries), [], as_received=body,
                                        again=lambda: TypedRoute.again(decompress(body, content_encoding, max_size)))
                    prepared.result.entries = []
                    return prepared
                return _encoded(route, Prepared(MapResult(entries, []), None, len(entries), []))
        shape = route.mapper.shape
        # only the keys the mapping reads (mapping/shape.py); keep_records needs whole records
        if shape is not None and as_typed and not route.config.keep_records:
            records = shape.decode(data, lines=start != b"[")
            if records is not None:
                shaped = route.mapper.map_records(records, ctx, route.validator, shaped=True)
                if not shaped.rejections:
                    return _encoded(route, Prepared(shaped, None, len(records), [], [], tag))
                # A rejection keeps its whole record, and a Struct holds only the keys the mapping
                # reads: the body is decoded again as dicts for them (in C), not mapped again (the
                # result is the same both ways; a million bad records mapped twice took 37 s)
                decoded = decode_data(kind, data)
                rejections = shaped.rejections
                return _encoded(route, Prepared(shaped, None, len(records), rejections,
                                                _pointed_at(decoded, rejections), tag))
        decoded = decode_data(kind, data)
    # decoding may have dropped records: indexes name the rest by their place in the body
    result = route.mapper.map_records(decoded.records, ctx, route.validator, decoded.indexes)
    rejections = result.rejections
    if decoded.errors:
        rejections = sorted([*decoded.errors, *rejections], key=lambda r: r.index)
    kept = None
    if route.config.keep_records and result.entries:
        records = entry_records(route, decoded.records, decoded.indexes, result, ctx)
        kept = kept_records.pack(route.name, tag, records) if records is not None else None
    return _encoded(route, Prepared(result, None, len(decoded.records) + len(decoded.errors), rejections,
                                    _pointed_at(decoded, rejections) if rejections else [], tag, decoded.meta, kept))


def entry_records(route: Route, records: list[Any], indexes: list[int] | None, result: MapResult,
                  ctx: RecordContext) -> list[Any] | None:
    """The records `result.entries` were made from, in entry order (keep_records only).

    A record makes one entry unless rejected or filtered: the rejections name theirs, so without
    drop_if filtering this is one pass. The mapper does not say which records drop_if filtered
    (saying it would cost every request), so then each remaining record is mapped again alone:
    double the mapping CPU, for requests of keep_records sources that filtered something."""
    refused = {r.index for r in result.rejections}
    if indexes is not None and refused:
        refused = {at for at, index in enumerate(indexes) if index in refused}
    left = [record for at, record in enumerate(records) if at not in refused] if refused else records
    if result.filtered:
        left = [record for record in left
                if route.mapper.map_records([record], ctx, route.validator).entries]
    if len(left) != len(result.entries):  # never seen: keep none rather than pair records wrongly
        return None
    return left


def _pointed_at(decoded: Decoded, rejections: list[Rejection]) -> list[tuple[Rejection, Any]]:
    """Each rejection with its record: O(rejections), plus one pass over `indexes` when decoding
    dropped some records (then rejection indexes count in the body, not in `records`)."""
    records = decoded.records
    bad = {r.index: what for r, what in zip(decoded.errors, decoded.bad, strict=False)}
    place = {index: at for at, index in enumerate(decoded.indexes)} if decoded.indexes is not None else None
    out: list[tuple[Rejection, Any]] = []
    for rejection in rejections:
        index = rejection.index
        if index in bad:
            out.append((rejection, bad[index]))
            continue
        at = place.get(index) if place is not None else index
        out.append((rejection, records[at] if at is not None and 0 <= at < len(records) else None))
    return out


async def commit(route: Route, prepared: Prepared, queue: DiskQueue, also: Also | None = None) -> None:
    """Append the entries to every routed sink's inbox in one transaction (`also`: further
    writes that must be in the same transaction, e.g. a replay removing what it re-queued)."""
    count = prepared.accepted
    if not count:
        return
    outboxes = route.outboxes
    for outbox in outboxes:
        if not outbox.has_room:  # has_room: the usual case, without a wait_for's task and timer
            try:
                await asyncio.wait_for(outbox.wait_for_room(), ROOM_WAIT)
            except TimeoutError:
                raise Unavailable(f"sink {outbox.name} is {outbox.unsealed} entries behind; retry later",
                                  retry_after=5.0) from None
        if outbox.senders_behind:
            try:
                await asyncio.wait_for(outbox.wait_for_senders(), PACE_WAIT)
            except TimeoutError:
                pass  # upstream is slow: the queue takes the request all the same
    await outbox_commit(queue, outboxes, count, lambda: prepared.lines, also, prepared.originals,
                        prepared.as_received, prepared.array)


def answer(prepared: Prepared) -> IngestResult:
    errors = [r.render() for r in prepared.rejections[:MAX_ERRORS_REPORTED]]
    if len(prepared.rejections) > MAX_ERRORS_REPORTED:
        errors.append(f"... and {len(prepared.rejections) - MAX_ERRORS_REPORTED} more rejected records")
    return IngestResult(accepted=prepared.accepted, rejected=len(prepared.rejections),
                        filtered=prepared.result.filtered, errors=errors)


def count(metrics: Metrics, route: Route, prepared: Prepared) -> None:
    name = route.name
    counters = metrics.source(name)
    counters.entries_received.inc(prepared.received)
    counters.entries_accepted.inc(prepared.accepted)
    if prepared.result.filtered:
        metrics.entries_filtered.labels(name).inc(prepared.result.filtered)
    reasons: dict[str, int] = {}
    for rejection in prepared.rejections:
        reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
    for reason, n in reasons.items():
        metrics.entries_rejected.labels(name, reason).inc(n)
    for key, n in prepared.result.repairs.items():
        field_name, _, rule = key.partition(":")
        metrics.repairs.labels(name, field_name, rule).inc(n)

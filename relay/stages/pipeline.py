"""decode -> map -> validate -> enqueue: what the ingest route calls per request.

The CPU part (`prepare`) is pure and runs once per request over the whole
body; the only I/O is one queue append per request, group-committed with
whatever other requests arrive meanwhile. The answer is given only after that
commit returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from relay.config import SourceConfig
from relay.errors import Unavailable
from relay.mapping import Mapper
from relay.mapping.spec import is_passthrough
from relay.models import IngestResult, MapResult, RecordContext, Rejection
from relay.stages.decode import decode_data, inflate
from relay.stages.schema import Validator
from relay.stages.typed import TypedRoute
from relay.store.outbox import Outbox
from relay.store.outbox import commit as outbox_commit
from relay.store.queue import DiskQueue
from relay.telemetry import Metrics

ROOM_WAIT = 10.0  # seconds a request may wait for a CPU-starved batcher before a 503
MAX_ERRORS_REPORTED = 100  # per answer; the rest are summarised in one line

_encode_lines = msgspec.json.Encoder().encode_lines
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

    def __post_init__(self) -> None:
        if self.typed is None and is_passthrough(self.mapper.spec):
            self.typed = TypedRoute()


@dataclass
class Prepared:
    result: MapResult
    lines: bytes
    received: int
    rejections: list[Rejection]


def prepare(route: Route, body: bytes, *, content_type: str | None, content_encoding: str | None,
            headers: Mapping[str, str], max_size: int) -> Prepared:
    kind, data = inflate(body, content_type=content_type, content_encoding=content_encoding, max_size=max_size)
    if route.typed is not None and kind in _TYPED_KINDS:
        start = data[:1]
        entries = route.typed.entries(data, lines=start != b"[", validator=route.validator) \
            if start == b"[" or (start == b"{" and kind == "lines") else None
        if entries is not None:  # every entry valid as it came: nothing to map, reject or repair
            return Prepared(MapResult(entries, []), _encode_lines(entries), len(entries), [])
    tag = headers.get(route.config.tag_header) if route.config.tag_header else None
    ctx = RecordContext(source=route.name, tag=tag, headers=headers, host=route.config.host)
    shape = route.mapper.shape
    if shape is not None and kind in _TYPED_KINDS:  # only the keys the mapping reads (mapping/shape.py)
        start = data[:1]
        records = shape.decode(data, lines=start != b"[") if start == b"[" or (start == b"{" and kind == "lines") \
            else None
        if records is not None:
            shaped = route.mapper.map_records(records, ctx, route.validator, shaped=True)
            # A rejection names its record, and a Struct holds only the keys the mapping reads:
            # a body with one is mapped again from dicts (rare, and then everything about it is
            # as before). Repairs and drop_if counts are the same both ways.
            if not shaped.rejections:
                lines = _encode_lines(shaped.entries) if shaped.entries else b""
                return Prepared(shaped, lines, len(records), [])
    decoded = decode_data(kind, data)
    # decoding may have dropped records: indexes name the rest by their place in the body
    result = route.mapper.map_records(decoded.records, ctx, route.validator, decoded.indexes)
    rejections = result.rejections
    if decoded.errors:
        rejections = sorted([*decoded.errors, *rejections], key=lambda r: r.index)
    lines = _encode_lines(result.entries) if result.entries else b""
    return Prepared(result, lines, len(decoded.records) + len(decoded.errors), rejections)


async def commit(route: Route, prepared: Prepared, queue: DiskQueue) -> None:
    """Append the entries to every routed sink's inbox in one transaction."""
    count = len(prepared.result.entries)
    if not count:
        return
    outboxes = route.outboxes
    for outbox in outboxes:
        try:
            await asyncio.wait_for(outbox.wait_for_room(), ROOM_WAIT)
        except TimeoutError:
            raise Unavailable(f"sink {outbox.name} is {outbox.unsealed} entries behind; retry later",
                              retry_after=5.0) from None
    await outbox_commit(queue, outboxes, count, prepared.lines)


def answer(prepared: Prepared) -> IngestResult:
    errors = [r.render() for r in prepared.rejections[:MAX_ERRORS_REPORTED]]
    if len(prepared.rejections) > MAX_ERRORS_REPORTED:
        errors.append(f"... and {len(prepared.rejections) - MAX_ERRORS_REPORTED} more rejected records")
    return IngestResult(accepted=len(prepared.result.entries), rejected=len(prepared.rejections),
                        filtered=prepared.result.filtered, errors=errors)


def count(metrics: Metrics, route: Route, prepared: Prepared) -> None:
    name = route.name
    metrics.entries_received.labels(name).inc(prepared.received)
    metrics.entries_accepted.labels(name).inc(len(prepared.result.entries))
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

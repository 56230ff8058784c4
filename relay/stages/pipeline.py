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
from relay.models import IngestResult, MapResult, RecordContext, Rejection
from relay.stages.decode import decode_body
from relay.stages.schema import Validator
from relay.store.outbox import Outbox
from relay.store.outbox import commit as outbox_commit
from relay.store.queue import DiskQueue
from relay.telemetry import Metrics

ROOM_WAIT = 10.0  # seconds a request may wait for a CPU-starved batcher before a 503
MAX_ERRORS_REPORTED = 100  # per answer; the rest are summarised in one line

_encode_lines = msgspec.json.Encoder().encode_lines


@dataclass
class Route:
    """A configured source, compiled: what a request to its path goes through."""

    name: str
    config: SourceConfig
    mapper: Mapper
    validator: Validator
    outboxes: list[Outbox]
    tokens: list[bytes] = field(default_factory=list)


@dataclass
class Prepared:
    result: MapResult
    lines: bytes
    received: int
    rejections: list[Rejection]


def prepare(route: Route, body: bytes, *, content_type: str | None, content_encoding: str | None,
            headers: Mapping[str, str], max_size: int) -> Prepared:
    decoded = decode_body(body, content_type=content_type, content_encoding=content_encoding, max_size=max_size)
    tag = headers.get(route.config.tag_header) if route.config.tag_header else None
    ctx = RecordContext(source=route.name, tag=tag, headers=headers, host=route.config.host)
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

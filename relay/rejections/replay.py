"""Replay: stored rejected records through the source's current mapping, validator and `host`.

What maps now is committed to the source's sinks like new traffic, and removed from the store
in that same transaction (so a crash leaves each record either queued or still stored, never
both nor neither); what is filtered (drop_if) is removed; what still fails stays, re-stored
with its new reason. Records go in chunks of CHUNK, so memory is bounded by one chunk.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import msgspec

from relay.errors import IngestError
from relay.models import RecordContext
from relay.stages import pipeline
from relay.stages.decode import decode_data
from relay.stages.pipeline import Prepared, Route
from relay.store.queue import DiskQueue
from relay.store.rejected import RejectedStore, StoredRejection, unpack_record

log = logging.getLogger("relay.rejected")
CHUNK = 500


class ReplayResult(msgspec.Struct):
    status: str = "replayed"
    replayed: int = 0
    accepted: int = 0
    still_rejected: int = 0
    filtered: int = 0
    reasons: dict[str, int] = msgspec.field(default_factory=dict)


async def replay(route: Route, store: RejectedStore, queue: DiskQueue) -> ReplayResult:
    async with store.replaying:
        return await _replay(route, store, queue)


async def _replay(route: Route, store: RejectedStore, queue: DiskQueue) -> ReplayResult:
    result = ReplayResult()
    reasons: Counter[str] = Counter()
    keys = await store.keys(route.name)
    for at in range(0, len(keys), CHUNK):
        stored = await store.read(keys[at:at + CHUNK])
        by_tag: dict[str | None, list[tuple[str, StoredRejection]]] = {}
        for key, item in stored:
            by_tag.setdefault(item.tag, []).append((key, item))
        for tag, group in by_tag.items():
            await _replay_group(route, store, queue, tag, group, result, reasons)
    result.reasons = dict(reasons)
    log.info("rejected records of source %s replayed: %d, now accepted %d, filtered %d, still rejected %d",
             route.name, result.replayed, result.accepted, result.filtered, result.still_rejected)
    return result


async def _replay_group(route: Route, store: RejectedStore, queue: DiskQueue, tag: str | None,
                        group: list[tuple[str, StoredRejection]], result: ReplayResult, reasons: Counter[str]) -> None:
    """One tag's records of a chunk: decode raw lines again, map everything, commit what maps."""
    records, owner = [], []  # owner[i]: the position in `group` of records[i]
    failed: dict[int, tuple[str | None, str, str]] = {}  # position in group -> (field, reason, message)
    for position, (_, item) in enumerate(group):
        if not item.raw:
            records.append(unpack_record(item))
            owner.append(position)
            continue
        try:  # the bytes never change, but the source's text parsing may have
            decoded = decode_data("lines", item.record)
        except IngestError as exc:
            failed[position] = (None, "invalid_json", exc.message)
            continue
        if decoded.errors or len(decoded.records) != 1:
            why = decoded.errors[0] if decoded.errors else None
            failed[position] = (None, why.reason if why else "invalid_json",
                                why.message if why else "the line holds no single record")
            continue
        records.append(decoded.records[0])
        owner.append(position)
    ctx = RecordContext(source=route.name, tag=tag, host=route.config.host)
    mapped = route.mapper.map_records(records, ctx, route.validator)
    for rejection in mapped.rejections:
        failed.setdefault(owner[rejection.index], (rejection.field, rejection.reason, rejection.message))
    done = [key for position, (key, _) in enumerate(group) if position not in failed]
    entries = mapped.entries
    if entries:
        prepared = Prepared(mapped, None, len(records), [])
        # the keys leave the store in the transaction that queues their entries
        await pipeline.commit(route, prepared, queue, also=store.deleter(done))
    else:
        store.discard(done)  # filtered by drop_if, or nothing left
    again = []
    now = time.time()
    for position, (field, reason, message) in failed.items():
        _, item = group[position]
        again.append(StoredRejection(now, item.source, item.index, field, reason, message, item.tag, item.raw,
                                     item.record))
        reasons[reason] += 1
    store.discard([group[position][0] for position in failed])
    store.add(again)
    result.replayed += len(group)
    result.accepted += len(entries)
    result.filtered += mapped.filtered
    result.still_rejected += len(failed)


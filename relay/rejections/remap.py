"""`dead-letter replay --remap`: dead letters re-mapped from their original records with the current mapping.

A letter kept by a `keep_records` source holds, beside each entry upstream refused, the record it
was made from and the source that received it (store/originals.py). After a mapping fix and a
reload, each such record goes through its source's current mapping, validator and `host`: what
maps is queued for the letter's sink (only that sink: the others took the first entry), in the
transaction that deletes the letter, so a crash leaves it either queued or still a letter; what
the mapping now rejects moves to the rejected store with its reason; what drop_if filters is gone.
Entries kept without their record (their source had keep_records off, or the source is no longer
configured) are queued again as they are, as a plain replay does, and the answer counts them.
Memory: one letter at a time (a letter holds the entries of one refused batch at most).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from relay.models import RecordContext, Rejection
from relay.stages import pipeline
from relay.stages.pipeline import Route
from relay.store import originals
from relay.store.deadletters import DeadLetters, dead_deleter, read_dead
from relay.store.layout import BatchRef, DeadLetter
from relay.store.outbox import Outbox
from relay.store.outbox import commit as outbox_commit
from relay.store.queue import Also, Cache
from relay.store.rejected import RejectedStore, StoredRejection, stored_items

log = logging.getLogger("relay.deadletter")
OnRejected = Callable[[str, list[tuple[Rejection, Any]]], None]
_encode_lines = msgspec.json.Encoder().encode_lines


class RemapResult(msgspec.Struct):
    status: str = "replayed"
    letters: int = 0
    remapped: int = 0  # entries made again from their records and queued
    rejected: int = 0  # records the current mapping rejects: now in the rejected store
    filtered: int = 0  # records drop_if now filters
    resent: int = 0  # entries without their record, queued again as they were
    reasons: dict[str, int] = msgspec.field(default_factory=dict)


async def remap(letters: DeadLetters, routes: dict[str, Route], rejected: RejectedStore,
                sink: str | None = None, on_rejected: OnRejected | None = None) -> RemapResult:
    """Re-map the dead letters of `sink` (or every sink). `routes`: the current routes by source name;
    `on_rejected(source, rejected)`: also told of what the mapping rejects (the recent-rejections ring)."""
    async with letters.replaying:
        return await _remap(letters, routes, rejected, sink, on_rejected)


async def _remap(letters: DeadLetters, routes: dict[str, Route], rejected: RejectedStore,
                 sink: str | None, on_rejected: OnRejected | None) -> RemapResult:
    result = RemapResult()
    for outbox in letters.chosen(sink):
        plain: list[BatchRef] = []
        for ref in list(outbox.dead):
            letter = await read_dead(letters.queue, ref)
            if letter is None:
                continue
            result.letters += 1
            if letter.originals is None:
                plain.append(ref)
                continue
            await _remap_one(letters, outbox, ref, letter, routes, rejected, result, on_rejected)
        if plain:
            result.resent += await letters.requeue(outbox, plain)
    log.info("dead letters re-mapped: %d letters, %d entries queued, %d rejected, %d filtered, %d re-sent as "
             "they were", result.letters, result.remapped, result.rejected, result.filtered, result.resent)
    return result


async def _remap_one(letters: DeadLetters, outbox: Outbox, ref: BatchRef, letter: DeadLetter,
                     routes: dict[str, Route], rejected: RejectedStore, result: RemapResult,
                     on_rejected: OnRejected | None) -> None:
    lines = [line + b"\n" for line in letter.entries.split(b"\n") if line]
    try:
        parts = originals.split(letter.originals, len(lines))
    except (ValueError, msgspec.DecodeError) as exc:  # re-sent as it is, like a letter without records
        log.error("dead letter %s: its original records are unreadable (%s); re-queued as it is", ref.key, exc)
        parts = [None] * len(lines)
    out_lines: list[bytes] = []
    out_kept: list[msgspec.Raw | None] = []
    groups: dict[tuple[str, str | None], list[Any]] = {}
    for line, part in zip(lines, parts, strict=True):
        original = originals.unpack(part) if part is not None else None
        if original is None or original.source not in routes:
            out_lines.append(line)  # nothing to re-map it with: sent again as it is
            out_kept.append(part)
            result.resent += 1
            continue
        groups.setdefault((original.source, original.tag), []).append(original.record)
    stored: list[StoredRejection] = []
    for (source, tag), records in groups.items():
        route = routes[source]
        ctx = RecordContext(source=source, tag=tag, host=route.config.host)
        mapped = route.mapper.map_records(records, ctx, route.validator)
        result.filtered += mapped.filtered
        for rejection in mapped.rejections:
            result.reasons[rejection.reason] = result.reasons.get(rejection.reason, 0) + 1
        made = pipeline.entry_records(route, records, None, mapped, ctx) if mapped.entries else []
        if mapped.entries:
            out_lines.append(_encode_lines(mapped.entries))
            packed = originals.split(originals.pack(source, tag, made), len(made)) if made is not None \
                else [None] * len(mapped.entries)
            out_kept.extend(packed)
            result.remapped += len(mapped.entries)
        refused: list[tuple[Rejection, Any]] = [(r, records[r.index]) for r in mapped.rejections]
        if refused:
            stored += stored_items(source, tag, refused)
            if on_rejected is not None:
                on_rejected(source, refused)
            result.rejected += len({r.index for r, _ in refused})
    # the letter leaves its store in the transaction that queues its entries and stores its rejections
    also = _together(dead_deleter(letters.queue, [ref]), rejected.writer(stored))
    count = len(out_kept)
    if count:
        await outbox_commit(letters.queue, [outbox], count, b"".join(out_lines), also, originals.join(out_kept))
    else:
        await letters.queue.call(lambda cache: _in_transaction(cache, also))
    outbox.dead = [other for other in outbox.dead if other != ref]


def _together(*writes: Also) -> Also:
    def run(cache: Cache) -> None:
        for write in writes:
            write(cache)
    return run


def _in_transaction(cache: Cache, also: Also) -> None:
    with cache.transact(retry=True):
        also(cache)


def add_up(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Workers' replay answers as one: counts summed, reasons summed per reason."""
    total: dict[str, Any] = {"status": "replayed"}
    for part in parts:
        for key, value in part.items():
            if key == "reasons":
                reasons = total.setdefault("reasons", {})
                for reason, n in value.items():
                    reasons[reason] = reasons.get(reason, 0) + n
            elif isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return total

"""`dead-letter replay --remap` on a real queue: letters re-mapped from their records with the current mapping."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from isal import igzip

from relay.config import load
from relay.rejections.remap import remap
from relay.routes import compile_routes
from relay.stages import pipeline
from relay.stages.pipeline import Route
from relay.store import originals
from relay.store.deadletters import DeadLetters
from relay.store.layout import BatchRef, DeadLetter
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue
from relay.store.rejected import RejectedStore, unpack_record
from relay.tools.local_config import relay_toml, sink_toml


def record(i: int, **overrides: Any) -> dict[str, Any]:
    return {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "path": f"/p/{i}", "status_code": 200,
            "ip": "192.0.2.1", "user_agent": "ua", **overrides}


def routes(tmp: Path, outboxes: dict[str, Outbox], host: str | None, drop: str = "") -> dict[str, Route]:
    source = ('[sources.web]\nmapping = "m"\nkeep_records = true\n' + (f'host = "{host}"\n' if host else "")
              + '[mappings.m]\nextends = "profound"\n' + drop)
    path = tmp / "relay.toml"
    path.write_text(relay_toml(port=1, queue_dir=tmp / "queue", now="2026-11-25T09:30:00Z", sources=source,
                               sinks=sink_toml("up", "http://127.0.0.1:9/v1/logs/custom", "k")))
    return {route.name: route for route in compile_routes(load(path, env={}), outboxes).values()}


async def letter(queue: DiskQueue, outbox: Outbox, n: int, entries: list[bytes], kept: bytes | None) -> None:
    stem = f"b/up/{n:020d}"
    value = DeadLetter(len(entries), b"".join(e + b"\n" for e in entries), "upstream answered 400", 400, 0.0, kept)
    _, dead = await queue.replace_batch(BatchRef(f"{stem}.1.1", 1, 1), [(stem, value)], [])
    outbox.dead.extend(dead)


async def inbox_entries(queue: DiskQueue, outbox: Outbox) -> list[tuple[dict[str, Any], Any]]:
    out = []
    for _, item in await queue.read_inbox("up", list(outbox.inbox)):
        assert item is not None
        text = igzip.decompress(item.entries) if item.encoding == "gzip" else item.entries
        lines = text.splitlines()
        kept = originals.split(item.originals, len(lines))
        out += [(json.loads(line), None if part is None else originals.unpack(part).record)
                for line, part in zip(lines, kept, strict=True)]
    return out


def test_remap_queues_what_maps_now_moves_what_fails_to_the_rejected_store_and_resends_the_rest(
        tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="normal")
        outbox = Outbox("up", queue.open().get("up"))
        store = RejectedStore(queue, 2**20)
        letters = DeadLetters(queue, {"up": outbox}, 2**20)
        # what a bad mapping made of three records, refused by upstream one by one
        await letter(queue, outbox, 1, [b'{"path":"wrong"}'], originals.pack("web", "t1", [record(0)]))
        await letter(queue, outbox, 2, [b'{"path":"wrong"}'], originals.pack("web", None, [record(1, status_code=999)]))
        await letter(queue, outbox, 3, [b'{"path":"kept as it is"}'], None)  # from a source without keep_records
        await letter(queue, outbox, 4, [b'{"path":"gone"}'], originals.pack("old", None, [record(4)]))

        fixed = routes(tmp_path, {"up": outbox}, host="www.example.com")
        told: list[tuple[str, str, str]] = []
        result = await remap(letters, fixed, store, "up",
                             lambda source, refused: told.extend((source, r.reason, rec["path"]) for r, rec in refused))
        assert (result.letters, result.remapped, result.rejected, result.filtered, result.resent) == (4, 1, 1, 0, 2)
        assert told == [("web", "range", "/p/1")]  # for the recent-rejections ring
        assert result.reasons == {"range": 1}
        assert outbox.dead == [] and letters.entries() == 0
        queued = await inbox_entries(queue, outbox)
        # the fixed entry, still with its record (a later fix can re-map it again); the others as they were
        assert sorted((entry["path"], entry.get("host"), kept is not None) for entry, kept in queued) == [
            ("/p/0", "www.example.com", True), ("gone", None, True), ("kept as it is", None, False)]
        await store.settled()
        (stored,) = [item for _, item in await store.read(await store.keys("web"))]
        assert (stored.reason, stored.field, stored.tag, unpack_record(stored)["path"]) == (
            "range", "status_code", None, "/p/1")
        # nothing is left to re-map: a second run queues nothing more
        again = await remap(letters, fixed, store, "up")
        assert (again.letters, again.remapped) == (0, 0)
        queue.close()

    asyncio.run(main())


def test_a_drop_if_filtered_record_leaves_and_prepare_pairs_entries_with_records(tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="normal")
        outbox = Outbox("up", queue.open().get("up"))
        drop = 'drop_if = [{ field = "path", prefix = "/p/1" }]\n'
        route = next(iter(routes(tmp_path, {"up": outbox}, host="www.example.com", drop=drop).values()))
        body = "\n".join(json.dumps(r) for r in [record(0), record(1), record(2, status_code=999), record(3)])
        prepared = pipeline.prepare(route, body.encode(), content_type="application/x-ndjson",
                                    content_encoding=None, headers={}, max_size=2**20)
        assert prepared.result.filtered == 1 and len(prepared.rejections) == 1
        kept = [originals.unpack(part) for part in originals.split(prepared.originals, 2) if part is not None]
        assert [(k.source, k.record["path"]) for k in kept] == [("web", "/p/0"), ("web", "/p/3")]
        await pipeline.commit(route, prepared, queue)
        assert [(e["path"], k["path"]) for e, k in await inbox_entries(queue, outbox)] == [
            ("/p/0", "/p/0"), ("/p/3", "/p/3")]
        queue.close()

    asyncio.run(main())


def test_two_remaps_at_once_queue_each_letter_once(tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="normal")
        outbox = Outbox("up", queue.open().get("up"))
        store = RejectedStore(queue, 2**20)
        letters = DeadLetters(queue, {"up": outbox}, 2**20)
        for n in range(5):
            await letter(queue, outbox, n, [b'{"path":"wrong"}'], originals.pack("web", None, [record(n)]))
        fixed = routes(tmp_path, {"up": outbox}, host="www.example.com")
        first, second = await asyncio.gather(remap(letters, fixed, store), letters.replay())
        assert (first.remapped, second) == (5, 0)
        assert sorted(entry["path"] for entry, _ in await inbox_entries(queue, outbox)) == [
            f"/p/{n}" for n in range(5)]
        queue.close()

    asyncio.run(main())


def test_a_plain_replay_keeps_the_records_with_their_entries(tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="normal")
        outbox = Outbox("up", queue.open().get("up"))
        letters = DeadLetters(queue, {"up": outbox}, 2**20)
        await letter(queue, outbox, 1, [b'{"path":"/a"}', b'{"path":"/b"}'],
                     originals.pack("web", None, [record(0), record(1)]))
        assert await letters.replay() == 2
        # refused again later, they can still be re-mapped
        assert [(entry["path"], kept["path"]) for entry, kept in await inbox_entries(queue, outbox)] == [
            ("/a", "/p/0"), ("/b", "/p/1")]
        queue.close()

    asyncio.run(main())

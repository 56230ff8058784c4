"""Replay on a real queue: what maps with the fixed config is queued and leaves the store; the rest stays."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from isal import igzip

from relay.config import load
from relay.rejections.replay import replay
from relay.routes import compile_routes
from relay.stages import pipeline
from relay.stages.pipeline import Route
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue
from relay.store.rejected import RejectedStore, stored_items, unpack_record
from relay.tools.local_config import relay_toml, sink_toml


def record(i: int, **overrides: Any) -> dict[str, Any]:
    return {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "path": f"/p/{i}", "status_code": 200,
            "ip": "192.0.2.1", "user_agent": "ua", **overrides}


def route(tmp: Path, outboxes: dict[str, Outbox] | None, host: str | None) -> Route:
    source = '[sources.web]\nmapping = "profound"\n' + (f'host = "{host}"\n' if host else "")
    path = tmp / "relay.toml"
    path.write_text(relay_toml(port=1, queue_dir=tmp / "queue", now="2026-11-25T09:30:00Z", sources=source,
                               sinks=sink_toml("up", "http://127.0.0.1:9/v1/logs/custom", "k")))
    return compile_routes(load(path, env={}), outboxes)["/ingest/web"]


def test_replay_queues_what_maps_now_and_keeps_what_still_fails_with_its_new_reason(tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="normal")
        outbox = Outbox("up", queue.open().get("up"))
        store = RejectedStore(queue, 2**20)
        before = route(tmp_path, {"up": outbox}, host=None)
        body = "\n".join([json.dumps(record(0)), json.dumps(record(1, status_code=999)), "{not json",
                          json.dumps(record(3))]).encode()
        prepared = pipeline.prepare(before, body, content_type="application/x-ndjson", content_encoding=None,
                                    headers={}, max_size=2**20)
        assert [(r.index, r.field, r.reason) for r in prepared.rejections] == [
            (0, "host", "required"), (1, "host", "required"), (2, None, "invalid_json"), (3, "host", "required")]
        store.add(stored_items("web", None, prepared.rejected))
        await store.settled()
        assert store.records["web"] == 4

        fixed = route(tmp_path, {"up": outbox}, host="www.example.com")
        result = await replay(fixed, store, queue)
        assert (result.replayed, result.accepted, result.still_rejected) == (4, 2, 2)
        assert result.reasons == {"invalid_json": 1, "range": 1}  # record 1 now fails on its status code
        # the two now mapped are in the sink's inbox, with the source's host
        (ref,) = list(outbox.inbox)
        (_, item), = await queue.read_inbox("up", [ref])
        assert item is not None
        text = igzip.decompress(item.entries) if item.encoding == "gzip" else item.entries
        queued = [json.loads(line) for line in text.splitlines()]
        assert [(e["path"], e["host"]) for e in queued] == [("/p/0", "www.example.com"), ("/p/3", "www.example.com")]
        # the store keeps the two that still fail, each with its reason from this replay
        left = [(item.reason, item.raw, unpack_record(item)) for _, item in await store.read(await store.keys("web"))]
        assert store.records["web"] == 2
        assert {reason for reason, _, _ in left} == set(result.reasons)
        assert [raw for _, raw, _ in left].count(True) == 1  # the bad line, still as its bytes
        # a second replay changes nothing and queues nothing more
        again = await replay(fixed, store, queue)
        assert (again.replayed, again.accepted, again.still_rejected) == (2, 0, 2)
        assert len(outbox.inbox) == 1
        queue.close()

    asyncio.run(main())


def test_two_replays_at_once_queue_each_record_once(tmp_path: Path) -> None:
    async def main() -> None:
        queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="normal")
        outbox = Outbox("up", queue.open().get("up"))
        store = RejectedStore(queue, 2**20)
        before = route(tmp_path, {"up": outbox}, host=None)
        body = json.dumps([record(i) for i in range(10)]).encode()
        prepared = pipeline.prepare(before, body, content_type="application/json", content_encoding=None,
                                    headers={}, max_size=2**20)
        store.add(stored_items("web", None, prepared.rejected))
        fixed = route(tmp_path, {"up": outbox}, host="www.example.com")
        first, second = await asyncio.gather(replay(fixed, store, queue), replay(fixed, store, queue))
        assert sorted([first.accepted, second.accepted]) == [0, 10]
        assert outbox.unsealed == 10
        await store.settled()
        assert store.records["web"] == 0
        queue.close()

    asyncio.run(main())

"""A request waits for a sink's senders while they are behind and upstream takes batches
(pipeline.commit, outbox.SENDERS_BEHIND), never while the sink is down, and never longer than
PACE_WAIT; then its batch is sealed as it came all the same. Real routes, a real disk queue."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from relay.config import load
from relay.routes import compile_routes
from relay.stages import pipeline
from relay.store.bodies import BatchShape
from relay.store.outbox import SENDERS_BEHIND, Outbox
from relay.store.queue import DiskQueue
from relay.tools.local_config import relay_toml, sink_toml

NOW = "2026-11-25T09:30:00Z"
SHAPE = BatchShape(1000, "gzip", 1)


def body(start: int) -> bytes:
    return gzip.compress(json.dumps([
        {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "host": "www.example.com", "path": f"/p/{i}",
         "status_code": 200, "ip": "192.0.2.1", "user_agent": "ua"} for i in range(start, start + 1000)]).encode())


def setup(tmp_path: Path) -> tuple[DiskQueue, Outbox, pipeline.Route]:
    path = tmp_path / "relay.toml"
    path.write_text(relay_toml(port=1, queue_dir=tmp_path / "queue", now=NOW,
                               sinks=sink_toml("up", "http://127.0.0.1:9/v1/logs/custom", "k")))
    queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="full")
    outbox = Outbox("up", queue.open().get("up"))
    outbox.shape = SHAPE
    outbox.set_sending(True)  # as the sink's dispatcher says while upstream takes batches
    route = compile_routes(load(path, env={}), {"up": outbox})["/ingest/custom"]
    return queue, outbox, route


async def commit(route: pipeline.Route, queue: DiskQueue, start: int) -> None:
    prepared = pipeline.prepare(route, body(start), content_type="application/json", content_encoding="gzip",
                                headers={}, max_size=2**24)
    assert prepared.as_received is not None
    await pipeline.commit(route, prepared, queue)


async def behind(route: pipeline.Route, queue: DiskQueue, outbox: Outbox) -> None:
    """Nobody sends: ready batches pile up to the mark."""
    for i in range(SENDERS_BEHIND // 1000):
        await commit(route, queue, i * 1000)
    assert outbox.ready_entries == SENDERS_BEHIND and outbox.unsealed == 0


async def pending(task: asyncio.Task[Any]) -> bool:
    """Still waiting after the DB thread had ample time to commit it (a commit takes ms)."""
    done, _ = await asyncio.wait({task}, timeout=0.3)
    return not done


def test_a_request_waits_until_a_sender_takes_a_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "PACE_WAIT", 30.0)

    async def main() -> None:
        queue, outbox, route = setup(tmp_path)
        await behind(route, queue, outbox)
        assert outbox.senders_behind
        task = asyncio.create_task(commit(route, queue, 100_000))
        assert await pending(task)
        assert outbox.ready_entries == SENDERS_BEHIND  # not committed yet: nothing acknowledged
        await outbox.next_batch()  # a sender takes one
        await asyncio.wait_for(task, 10)
        # sealed as it came, not sent through the inbox
        assert outbox.ready_entries == SENDERS_BEHIND and outbox.unsealed == 0
        queue.close()

    asyncio.run(main())


def test_a_sink_that_stops_sending_releases_waiting_requests(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "PACE_WAIT", 30.0)

    async def main() -> None:
        queue, outbox, route = setup(tmp_path)
        await behind(route, queue, outbox)
        task = asyncio.create_task(commit(route, queue, 100_000))
        assert await pending(task)
        outbox.set_sending(False)  # upstream went down: the queue takes the backlog
        await asyncio.wait_for(task, 10)
        assert not outbox.senders_behind
        for i in range(3):  # and nothing waits while it is down, however far behind
            await asyncio.wait_for(commit(route, queue, 200_000 + i * 1000), 10)
        assert outbox.ready_entries == SENDERS_BEHIND + 4000 and outbox.unsealed == 0
        queue.close()

    asyncio.run(main())


def test_a_slow_upstream_costs_a_request_at_most_pace_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "PACE_WAIT", 0.01)

    async def main() -> None:
        queue, outbox, route = setup(tmp_path)
        await behind(route, queue, outbox)
        await asyncio.wait_for(commit(route, queue, 100_000), 10)  # no sender ever takes one
        assert outbox.ready_entries == SENDERS_BEHIND + 1000 and outbox.senders_behind
        queue.close()

    asyncio.run(main())


def test_requests_do_not_wait_while_the_senders_keep_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "PACE_WAIT", 30.0)

    async def main() -> None:
        queue, outbox, route = setup(tmp_path)
        for i in range(SENDERS_BEHIND // 1000 - 1):
            await asyncio.wait_for(commit(route, queue, i * 1000), 10)
        assert not outbox.senders_behind
        await asyncio.wait_for(commit(route, queue, 100_000), 10)
        assert outbox.senders_behind  # the mark is reached: the next one would wait
        outbox.requeue(await outbox.next_batch())  # a batch handed back counts as waiting again
        assert outbox.senders_behind
        queue.close()

    asyncio.run(main())

"""prepare encodes a request's entries at once, while they are in the CPU's caches: as one JSON
array when they make exactly one batch for every sink (outbox.commit seals that as it is), else
as lines. Either way the batches upstream gets hold the same entries. Real routes from a real
config, real generated Fluent Bit bodies (the lane), a real disk queue."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from isal import igzip

from relay.config import load
from relay.routes import compile_routes
from relay.stages import pipeline
from relay.store import bodies
from relay.store.bodies import BatchShape
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue
from relay.tools.bench.processes import PINNED_NOW
from relay.tools.bench.workloads import build_bodies, workload
from relay.tools.local_config import relay_toml, sink_toml

BODY = next(build_bodies(workload("fluentbit"), 1))  # 1,000 distinct nginx records, gzip


def opened(tmp_path: Path, shapes: dict[str, BatchShape | None],
           extra: str = "") -> tuple[DiskQueue, dict[str, Outbox], pipeline.Route]:
    path = tmp_path / "relay.toml"
    sinks = "\n".join(sink_toml(name, "http://127.0.0.1:9/v1/logs/custom", "k") for name in shapes)
    sources = f'[sources.fluentbit]\nmapping = "fluentbit-nginx"\nhost = "www.example.com"\n{extra}'
    path.write_text(relay_toml(port=1, queue_dir=tmp_path / "queue", now=PINNED_NOW, sinks=sinks, sources=sources))
    queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="full")
    snapshot = queue.open()
    outboxes = {name: Outbox(name, snapshot.get(name)) for name in shapes}
    for name, shape in shapes.items():
        outboxes[name].shape = shape
    return queue, outboxes, compile_routes(load(path, env={}), outboxes)["/ingest/fluentbit"]


def prepare(route: pipeline.Route) -> pipeline.Prepared:
    prepared = pipeline.prepare(route, BODY, content_type="application/json", content_encoding="gzip",
                                headers={}, max_size=2**24)
    assert prepared.accepted == 1000 and not prepared.rejections
    return prepared


async def sent(queue: DiskQueue, outbox: Outbox) -> list[Any]:
    """Every entry in the outbox's sealed batches, in order, as upstream would read them."""
    out: list[Any] = []
    for ref in list(outbox.ready):
        batch = await queue.load_batch(ref)
        assert batch is not None
        body = igzip.decompress(batch.body) if batch.encoding == "gzip" else batch.body
        out += json.loads(body)
    return out


@pytest.fixture(scope="module")
def dict_entries(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The entries of BODY made the dict way (keep_records turns the shaped path and the lane off)."""
    tmp = tmp_path_factory.mktemp("dict")
    _, _, route = opened(tmp, {"up": None}, "keep_records = true\n")
    prepared = prepare(route)
    return [json.loads(line) for line in prepared.lines.splitlines()]


def test_one_whole_batch_for_every_sink_is_encoded_as_an_array_and_sealed_from_it(
        tmp_path: Path, dict_entries: list[Any]) -> None:
    async def main() -> None:
        queue, outboxes, route = opened(tmp_path, {"a": BatchShape(1000, "gzip", 1), "b": BatchShape(1000, "none", 1)})
        prepared = prepare(route)
        assert prepared.joined is not None and prepared.encoded is None
        assert json.loads(prepared.joined) == dict_entries
        await pipeline.commit(route, prepared, queue)
        assert prepared.encoded is None  # no lines were made for any sink
        for outbox in outboxes.values():
            assert [ref.count for ref in outbox.ready] == [1000] and outbox.unsealed == 0
            assert await sent(queue, outbox) == dict_entries
        queue.close()

    asyncio.run(main())


@pytest.mark.parametrize("shapes", [
    {"up": BatchShape(500, "gzip", 1)},  # two batches: cut from lines
    {"up": None},  # the sink's dispatcher is stopped: to the inbox
    {"whole": BatchShape(1000, "gzip", 1), "cut": BatchShape(300, "gzip", 1)},  # one sink each way
])
def test_other_requests_are_encoded_as_lines_and_reach_every_sink_the_same(
        tmp_path: Path, dict_entries: list[Any], shapes: dict[str, BatchShape | None]) -> None:
    async def main() -> None:
        queue, outboxes, route = opened(tmp_path, shapes)
        prepared = prepare(route)
        assert prepared.encoded is not None and prepared.joined is None
        await pipeline.commit(route, prepared, queue)
        for name, shape in shapes.items():
            outbox = outboxes[name]
            whole = 0 if shape is None else 1000 // shape.max_entries * shape.max_entries
            assert outbox.unsealed == 1000 - whole
            assert await sent(queue, outbox) == dict_entries[:whole]
        if "whole" in shapes:  # the array was made at the commit, for the one sink it fits
            assert prepared.joined is not None
        queue.close()

    asyncio.run(main())


def test_a_sink_stopped_before_the_commit_gets_lines_split_from_the_array(
        tmp_path: Path, dict_entries: list[Any]) -> None:
    async def main() -> None:
        queue, outboxes, route = opened(tmp_path, {"a": BatchShape(1000, "gzip", 1), "b": BatchShape(1000, "gzip", 1)})
        prepared = prepare(route)
        assert prepared.joined is not None and prepared.encoded is None
        outboxes["b"].shape = None  # its dispatcher stopped (a reload) while the request was prepared
        await pipeline.commit(route, prepared, queue)
        assert prepared.encoded is not None
        assert [json.loads(line) for line in prepared.encoded.splitlines()] == dict_entries
        assert prepared.encoded.count(b"\n") == 1000 and prepared.encoded.endswith(b"\n")
        assert await sent(queue, outboxes["a"]) == dict_entries
        assert not outboxes["b"].ready and outboxes["b"].unsealed == 1000
        queue.close()

    asyncio.run(main())


def route_of(tmp_path: Path, shape: BatchShape, extra: str = "") -> pipeline.Route:
    queue, _, route = opened(tmp_path, {"up": shape}, extra)
    queue.close()  # prepare reads only the outboxes' shapes
    return route


def test_entries_are_let_go_once_encoded_and_counted_all_the_same(tmp_path: Path) -> None:
    prepared = prepare(route_of(tmp_path, BatchShape(1000, "gzip", 1)))
    assert prepared.result.entries == [] and prepared.accepted == 1000
    assert pipeline.answer(prepared).accepted == 1000
    # the lines split from the array are its elements byte for byte (encoded JSON holds no raw newline)
    assert bodies.from_ndjson(prepared.lines, "none", 1)[0] == prepared.array()
    # and an array made from lines is the same bytes as one encoded at once
    (tmp_path / "other").mkdir()
    other = prepare(route_of(tmp_path / "other", BatchShape(500, "gzip", 1)))
    assert other.encoded is not None and other.joined is None and other.array() == prepared.array()


def test_kept_records_are_encoded_as_lines(tmp_path: Path) -> None:
    prepared = prepare(route_of(tmp_path, BatchShape(1000, "gzip", 1), "keep_records = true\n"))
    assert prepared.originals is not None and prepared.encoded is not None and prepared.joined is None


def test_a_body_kept_as_it_came_is_decoded_again_for_a_sink_that_cuts_it(tmp_path: Path) -> None:
    """Its entries were let go unencoded: the sink that cuts batches of 300 gets them decoded from the
    body once more, written as the relay writes them, the same as the per-record path's."""
    body = next(build_bodies(workload("passthrough"), 1))
    shapes = {"whole": BatchShape(1000, "gzip", 1), "cut": BatchShape(300, "gzip", 1)}
    path = tmp_path / "relay.toml"
    sinks = "\n".join(sink_toml(name, "http://127.0.0.1:9/v1/logs/custom", "k") for name in shapes)
    sources = '[sources.custom]\npath = "/v1/logs/custom"\nmapping = "profound"\n'
    kept = '[sources.kept]\npath = "/v1/logs/kept"\nmapping = "profound"\nkeep_records = true\n'  # per record
    path.write_text(relay_toml(port=1, queue_dir=tmp_path / "queue", now=PINNED_NOW, sinks=sinks,
                               sources=sources + kept))

    async def main() -> None:
        queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="full")
        snapshot = queue.open()
        outboxes = {name: Outbox(name, snapshot.get(name)) for name in shapes}
        for name, shape in shapes.items():
            outboxes[name].shape = shape
        routes = compile_routes(load(path, env={}), outboxes)
        args: dict[str, Any] = {"content_type": "application/json", "content_encoding": "gzip", "headers": {},
                                "max_size": 2**24}
        prepared = pipeline.prepare(routes["/v1/logs/custom"], body, **args)
        assert prepared.as_received is body and prepared.result.entries == [] and prepared.accepted == 1000
        await pipeline.commit(routes["/v1/logs/custom"], prepared, queue)
        expected = [json.loads(line) for line in pipeline.prepare(routes["/v1/logs/kept"], body, **args).lines.splitlines()]
        assert await sent(queue, outboxes["cut"]) == expected[:900] and outboxes["cut"].unsealed == 100
        assert await sent(queue, outboxes["whole"]) == json.loads(igzip.decompress(body))
        queue.close()

    asyncio.run(main())

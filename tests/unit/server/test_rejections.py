"""GET /-/rejections and POST /-/rejections/replay on the real app (as test_ingest.py serves it)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.server.test_ingest import ELSEWHERE, entry, post, run, serving

SOURCES = '[sources.web]\nmapping = "profound"\n\n[sources.other]\n'


def test_rejections_answer_the_contract_shape_and_check_their_arguments(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            no_host = {k: v for k, v in entry(0).items() if k != "host"}
            status, _, answer = await post(client, "/ingest/web", json.dumps([no_host, entry(1)]).encode())
            assert status == 200 and answer["rejected"] == 1
            async with client.get("/-/rejections?source=web&limit=5") as response:
                assert response.status == 200
                shown = await response.json()
            assert set(shown) >= {"rejections", "top", "stored"}
            (item,) = shown["rejections"]
            assert set(item) == {"time", "source", "index", "field", "reason", "message", "record"}
            assert (item["source"], item["index"], item["field"], item["reason"]) == ("web", 0, "host", "required")
            assert item["record"] == no_host
            assert shown["top"] == {"web": [{"field": "host", "reason": "required", "count": 1}]}
            assert shown["stored"]["web"]["records"] == 1 and shown["stored"]["web"]["dropped"] == 0
            async with client.get("/-/rejections") as response:  # every source
                every = await response.json()
            assert set(every["top"]) == {"web", "other"} and every["stored"]["other"]["records"] == 0
            async with client.get("/-/rejections?limit=many") as response:
                assert response.status == 400 and "limit" in (await response.json())["error"]
            async with client.get("/-/rejections?source=nope") as response:
                assert response.status == 404 and "web, other" in (await response.json())["error"]
            async with client.post("/-/rejections/replay?source=nope") as response:
                assert response.status == 404
            async with client.post("/-/rejections/replay?source=web") as response:
                assert await response.json() == {"status": "replayed", "replayed": 1, "accepted": 0,
                                                 "still_rejected": 1, "filtered": 0, "reasons": {"required": 1}}
            assert runtime.metrics.registry.get_sample_value(
                "relay_rejected_replayed_total", {"source": "web", "result": "still_rejected"}) == 1

    run(test)


def test_other_machines_are_refused_without_the_admin_token(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, remote=ELSEWHERE, sources=SOURCES) as (client, _):
            for method, path in (("GET", "/-/rejections"), ("POST", "/-/rejections/replay")):
                async with client.request(method, path) as response:
                    assert response.status == 403, path

    run(test)

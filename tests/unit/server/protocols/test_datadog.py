"""Datadog sources through the real app: 202 after the commit, DD-API-KEY, the intake's error shape."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from tests.unit.server.protocols.test_elasticsearch import call
from tests.unit.server.test_ingest import entry, run, serving

SOURCES = """\
[sources.dd]
protocol = "datadog"
tokens = ["dd-key"]
"""
KEY = {"DD-API-KEY": "dd-key", "Content-Type": "application/json"}


def test_202_after_the_commit_deflate_and_rejections_named(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            body = zlib.compress(json.dumps([entry(0), entry(1, status_code=999), entry(2)]).encode())
            status, _, answer = await call(client, "POST", "/api/v2/logs?ddsource=nginx", body,
                                           **KEY, **{"Content-Encoding": "deflate"})
            assert status == 202 and answer["rejected"] == 1 and answer["accepted"] == 2, answer
            assert runtime.outboxes["up"].queued_entries == 2
            status, _, answer = await call(client, "POST", "/v1/input", json.dumps(entry(3)).encode(), **KEY)
            assert (status, answer) == (202, {})

    run(test)


def test_errors_in_the_intakes_shape(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES, max_body_size="64KiB", queue_max_size="1MiB") as (client, _):
            status, _, answer = await call(client, "POST", "/api/v2/logs", b"[]", **{"DD-API-KEY": "wrong"})
            assert status == 403 and answer["errors"][0]["status"] == "403"
            status, _, answer = await call(client, "POST", "/api/v2/logs", b"[{", **KEY)
            assert status == 400 and answer["errors"][0]["title"] == "Bad Request"
            status, _, answer = await call(client, "POST", "/api/v2/logs", b"[" + b" " * 70_000 + b"]", **KEY)
            assert status == 413 and "limit" in answer["errors"][0]["detail"]

    run(test)

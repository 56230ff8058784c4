"""Loki push sources through the real app: 204 after the commit, text reasons otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cramjam

from tests.support import FIXTURES
from tests.unit.server.test_ingest import run, serving
from tests.unit.stages.protocols.test_loki import PROMTAIL, _entry, _push, _varint

SOURCES = """\
[sources.loki]
protocol = "loki"
mapping = "loki-nginx"
tokens = ["loki-token"]
host = "www.example.com"
"""
FLUENT_BIT = FIXTURES / "fluent-bit-protocols" / "loki.nginx-json" / "body.bin"


async def call(client: Any, path: str, body: bytes, token: str | None, content_type: str) -> tuple[int, Any, str]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with client.post(path, data=body, headers=headers) as response:
        return response.status, response.headers, await response.text()


def test_fluent_bit_json_and_promtail_protobuf_are_204(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            status, _, text = await call(client, "/loki/api/v1/push", FLUENT_BIT.read_bytes(), "loki-token",
                                         "application/json")
            assert (status, text) == (204, ""), text
            assert runtime.outboxes["up"].queued_entries == 200
            line = '203.0.113.9 - - [25/Nov/2026:09:00:01 +0100] "GET /a?b=1 HTTP/1.1" 200 512 "-" "curl/8.5.0"'
            body = bytes(cramjam.snappy.compress_raw(_push([('{job="nginx"}', [_entry(1795593601, 0, line, {})], 0)])))
            status, _, text = await call(client, "/ingest/loki/loki/api/v1/push", body, "loki-token",
                                         "application/x-protobuf")
            assert status == 204, text
            assert runtime.outboxes["up"].queued_entries == 201

    run(test)


def test_some_entries_rejected_is_400_naming_them_and_the_rest_are_kept(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            # PROMTAIL's second entry ({"status":404}) has no method, path, ...; its third is "bare"
            status, _, text = await call(client, "/loki/api/v1/push", bytes(cramjam.snappy.compress_raw(PROMTAIL)),
                                         "loki-token", "application/x-protobuf")
            assert status == 400 and text.startswith("2 of 3 entries rejected (1 accepted"), text
            assert "$[1]" in text and "$[2].line" in text
            assert runtime.outboxes["up"].queued_entries == 1

    run(test)


def test_errors_are_text(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            bomb = _varint(1 << 30) + b"\x00" * 16
            status, _, text = await call(client, "/loki/api/v1/push", bomb, "loki-token", "application/x-protobuf")
            assert status == 413 and "snappy" in text
            status, _, text = await call(client, "/loki/api/v1/push", b'{"streams": 1}', "loki-token",
                                         "application/json")
            assert status == 400 and "streams must be an array" in text
            status, _, text = await call(client, "/loki/api/v1/push", json.dumps({"streams": []}).encode(), None,
                                         "application/json")
            assert status == 401
            assert runtime.outboxes["up"].queued_entries == 0

    run(test)

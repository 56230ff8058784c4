"""Splunk HEC sources through the real app: HEC answers and codes, raw, health, indexer acknowledgement."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from tests.unit.server.protocols.test_elasticsearch import call
from tests.unit.server.test_ingest import entry, run, serving

SOURCES = """\
[sources.hec]
protocol = "splunk_hec"
tokens = ["hec-token"]

[sources.hec-raw]
protocol = "splunk_hec"
path = "/raw-only"
mapping = "nginx-combined"
host = "www.example.com"
tokens = ["raw-token"]
"""
LINE = '192.0.2.9 - - [25/Nov/2026:09:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 5 "-" "curl/8"'
AUTH = {"Authorization": "Splunk hec-token"}


def events(*values: Any) -> bytes:
    return b"".join(json.dumps(v).encode() for v in values)


def test_events_answer_success_after_the_commit_and_name_rejections(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            body = gzip.compress(events({"time": 1, "event": entry(0)}, {"event": entry(1, status_code=999)},
                                        {"event": entry(2)}))
            status, _, answer = await call(client, "POST", "/services/collector/event", body,
                                           **AUTH, **{"Content-Encoding": "gzip"})
            assert status == 200 and answer["text"] == "Success" and answer["code"] == 0, answer
            assert answer["rejected"] == 1 and answer["errors"][0].startswith("$[1].status_code")
            assert "ackId" not in answer
            assert runtime.outboxes["up"].queued_entries == 2
            status, _, answer = await call(client, "POST", "/services/collector", events({"event": entry(3)}), **AUTH)
            assert (status, answer) == (200, {"text": "Success", "code": 0})

    run(test)


def test_raw_lines_and_the_token_picks_the_source(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            status, _, answer = await call(client, "POST", "/services/collector/raw?channel=abc",
                                           (LINE + "\n" + LINE).encode(), Authorization="Splunk raw-token")
            assert status == 200 and answer["code"] == 0 and isinstance(answer["ackId"], int), answer
            metric = runtime.metrics.registry.get_sample_value
            assert metric("relay_entries_accepted_total", {"source": "hec-raw"}) == 2
            status, _, answer = await call(client, "POST", "/raw-only/services/collector/raw", LINE.encode(),
                                           Authorization="Splunk raw-token")
            assert status == 200

    run(test)


def test_errors_carry_hec_codes(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            path = "/services/collector/event"
            status, headers, answer = await call(client, "POST", path, events({"event": "x"}))
            assert (status, answer) == (401, {"text": "Token is required", "code": 2})
            assert headers["WWW-Authenticate"] == "Splunk"  # (comparing whole headers failed across a second's Date)
            status, _, answer = await call(client, "POST", path, events({"event": "x"}), Authorization="Splunk bad")
            assert (status, answer) == (403, {"text": "Invalid token", "code": 4})
            for body, code in ((b"", 5), (b"{bad", 6), (events({"time": 1}), 12), (events({"event": ""}), 13)):
                status, _, answer = await call(client, "POST", path, body, **AUTH)
                assert status == 400 and answer["code"] == code, (body, answer)
            runtime.draining = True
            status, headers, answer = await call(client, "POST", path, events({"event": entry(0)}), **AUTH)
            assert status == 503 and answer == {"text": "Server is busy", "code": 9, "detail": answer["detail"]}
            assert headers["Retry-After"] == "5"

    run(test)


def test_health_and_indexer_acknowledgement(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            status, _, answer = await call(client, "GET", "/services/collector/health")
            assert (status, answer) == (200, {"text": "HEC is healthy", "code": 17})
            ids = []
            for i in range(3):
                status, _, answer = await call(client, "POST", "/services/collector/event", events({"event": entry(i)}),
                                               **AUTH, **{"X-Splunk-Request-Channel": "0aeeac95-ac74-4aa9-b30d"})
                ids.append(answer["ackId"])
            assert len(set(ids)) == 3
            assert runtime.outboxes["up"].queued_entries == 3  # every issued id is already durable
            status, _, answer = await call(client, "POST", "/services/collector/ack", json.dumps({"acks": ids}).encode(),
                                           **AUTH, **{"X-Splunk-Request-Channel": "0aeeac95-ac74-4aa9-b30d"})
            assert (status, answer) == (200, {"acks": {str(i): True for i in ids}})
            status, _, answer = await call(client, "POST", "/services/collector/ack", b"[]", **AUTH)
            assert status == 400 and answer["code"] == 6

    run(test)

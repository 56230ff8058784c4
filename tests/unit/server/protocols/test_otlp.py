"""OTLP/HTTP logs sources through the real app: OTLP's answers in the request's encoding."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from tests.support import FIXTURES
from tests.unit.server.test_ingest import run, serving

SOURCES = """\
[sources.otlp]
protocol = "otlp"
mapping = "otlp-nginx-json"
tokens = ["otlp-token"]

[sources.otel]
protocol = "otlp"
mapping = "otel"
tokens = ["otel-token"]
host = "www.example.com"
"""
FLUENT_BIT = FIXTURES / "fluent-bit-protocols" / "opentelemetry.nginx-json.gzip" / "body.bin"
PROTOBUF = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}


async def call(client: Any, path: str, body: bytes, token: str | None, **headers: str) -> tuple[int, Any, bytes]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with client.post(path, data=body, headers=headers) as response:
        return response.status, response.headers, await response.read()


def test_fluent_bit_body_is_taken_and_answered_in_protobuf(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            status, headers, raw = await call(client, "/v1/logs", FLUENT_BIT.read_bytes(), "otlp-token", **PROTOBUF)
            assert (status, headers["Content-Type"]) == (200, "application/x-protobuf"), raw
            answer = ExportLogsServiceResponse.FromString(raw)
            assert not answer.HasField("partial_success")
            assert runtime.outboxes["up"].queued_entries == 200
            # the same under the source's own prefix
            status, _, _ = await call(client, "/ingest/otlp/v1/logs", FLUENT_BIT.read_bytes(), "otlp-token",
                                      **PROTOBUF)
            assert status == 200 and runtime.outboxes["up"].queued_entries == 400

    run(test)


def _json_request(*records: dict[str, Any]) -> bytes:
    def attrs(values: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
                for k, v in values.items()]
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1795593600000000000", "attributes": attrs(r)} for r in records]}]}]}).encode()


GOOD = {"http.request.method": "GET", "url.path": "/a", "http.response.status_code": 200,
        "client.address": "203.0.113.9", "user_agent.original": "curl/8"}


def test_rejected_records_are_a_partial_success_in_json(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            body = _json_request(GOOD, {**GOOD, "http.response.status_code": 999}, GOOD)
            status, headers, raw = await call(client, "/v1/logs", body, "otel-token",
                                              **{"Content-Type": "application/json"})
            assert (status, headers["Content-Type"]) == (200, "application/json"), raw
            partial = json.loads(raw)["partialSuccess"]
            assert partial["rejectedLogRecords"] == "1"  # int64, as OTLP/JSON writes it
            assert partial["errorMessage"].startswith("$[1].status_code")
            assert runtime.outboxes["up"].queued_entries == 2

    run(test)


def test_errors_are_a_status_message_clients_do_not_retry(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            status, _, raw = await call(client, "/v1/logs", gzip.compress(b"\x0a\xff\xff"), "otlp-token",
                                              **PROTOBUF)
            error = status_pb2.Status.FromString(raw)
            assert (status, error.code) == (400, code_pb2.INVALID_ARGUMENT) and "protobuf" in error.message
            status, _, raw = await call(client, "/v1/logs", b"{}", None, **{"Content-Type": "application/json"})
            assert status == 401 and json.loads(raw)["code"] == code_pb2.UNAUTHENTICATED
            status, _, raw = await call(client, "/v1/logs", b"x", "otlp-token", **{"Content-Type": "text/plain"})
            assert status == 415 and status_pb2.Status.FromString(raw).code == code_pb2.INVALID_ARGUMENT
            assert runtime.outboxes["up"].queued_entries == 0

    run(test)


def test_draining_is_503_with_retry_after(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            runtime.draining = True
            status, headers, raw = await call(client, "/v1/logs", FLUENT_BIT.read_bytes(), "otlp-token", **PROTOBUF)
            assert status == 503 and int(headers["Retry-After"]) >= 1
            assert status_pb2.Status.FromString(raw).code == code_pb2.UNAVAILABLE
            runtime.draining = False

    run(test)

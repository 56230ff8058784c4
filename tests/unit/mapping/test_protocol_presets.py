"""Presets for what OTLP and Loki clients carry, on the decoded captures of real clients."""

from __future__ import annotations

import gzip
import json
from typing import Any

import msgspec
import pytest

from relay.mapping import MappingLibrary
from relay.models import MapResult, RecordContext
from relay.stages.protocols import loki, otlp
from relay.stages.schema import ValidationPolicy, Validator
from tests.support import FIXTURES

NOW = 1795599000.0  # 2026-11-25T09:30:00Z: the fixtures are dated 2026-11-25
LIBRARY = MappingLibrary({})
PROTOCOLS = FIXTURES / "fluent-bit-protocols"


def run(preset: str, records: list[Any], host: str | None = None, now: float = NOW) -> MapResult:
    return LIBRARY.get(preset).map_records(records, RecordContext(source="test", host=host),
                                           Validator(ValidationPolicy(now=now)))


def plain(result: MapResult) -> list[dict[str, Any]]:
    assert not result.rejections, [r.render() for r in result.rejections[:5]]
    return [msgspec.to_builtins(e) for e in result.entries]


def reference() -> list[dict[str, Any]]:
    """The same 200 requests through Fluent Bit's http output and the nginx-json preset."""
    with open(FIXTURES / "fluent-bit" / "nginx-json.json" / "records.jsonl", encoding="utf-8") as fh:
        return plain(run("nginx-json", [json.loads(line) for line in fh]))


def test_otlp_nginx_json_reads_fluent_bits_opentelemetry_output() -> None:
    body = gzip.decompress((PROTOCOLS / "opentelemetry.nginx-json.gzip" / "body.bin").read_bytes())
    records = otlp.decode(body, content_type="application/x-protobuf").records
    assert plain(run("otlp-nginx-json", records)) == reference()


def test_otlp_nginx_json_falls_back_to_the_record_time() -> None:
    record = {"timeUnixNano": 1795593600250000000, "attributes": {}, "resource": {},
              "body": {"request_method": "GET", "host": "www.example.com", "request_uri": "/a", "status": 200,
                       "remote_addr": "203.0.113.9", "http_user_agent": "curl/8"}}
    [entry] = plain(run("otlp-nginx-json", [record]))
    assert entry["timestamp"] == "2026-11-25T08:00:00.250Z"


def test_loki_nginx_reads_fluent_bits_loki_output_with_structured_metadata() -> None:
    body = (PROTOCOLS / "loki.nginx-json" / "body.bin").read_bytes()
    records = loki.decode(body, content_type="application/json").records
    assert "request_method" not in records[0]["json"]  # it went to structured metadata
    assert plain(run("loki-nginx", records)) == reference()


def test_loki_nginx_reads_combined_text_lines() -> None:
    with open(FIXTURES / "fluent-bit" / "raw-line.json.gzip" / "records.jsonl", encoding="utf-8") as fh:
        lines = [json.loads(line)["log"] for line in fh]
    body = json.dumps({"streams": [{"stream": {"job": "nginx", "vhost": "www.example.com"},
                                    "values": [[str(1795593600 * 10**9 + i), line] for i, line in enumerate(lines)]}]})
    records = loki.decode(body.encode(), content_type="application/json").records
    entries = plain(run("loki-nginx", records))
    assert {e["host"] for e in entries} == {"www.example.com"}  # from the `vhost` label
    strip = lambda e: {k: v for k, v in e.items() if k not in ("host", "duration_ms")}
    assert [strip(e) for e in entries] == [strip(e) for e in reference()]  # the line's own [time]


def test_otel_preset_reads_the_sdks_semantic_convention_attributes() -> None:
    body = gzip.decompress((FIXTURES / "otel-sdk" / "logging-extra.gzip" / "body.bin").read_bytes())
    records = otlp.decode(body, content_type="application/x-protobuf").records
    now = records[-1]["timeUnixNano"] / 1e9
    entries = plain(run("otel", records, now=now))
    expected = reference()[:50]
    assert len(entries) == 50
    strip = lambda e: {k: v for k, v in e.items() if k != "timestamp"}  # the SDK stamps the logging call
    assert [strip(e) for e in entries] == [strip(e) for e in expected]


@pytest.mark.parametrize("attributes", [
    {"url.full": "https://shop.example.com/cart?id=7"},
    {"url.path": "/cart", "url.query": "id=7"},
])
def test_otel_preset_path_from_url_full_or_path_and_query(attributes: dict[str, Any]) -> None:
    record = {"observedTimeUnixNano": 1795593600000000000, "resource": {},
              "attributes": {"http.request.method": "GET", "http.response.status_code": 200,
                             "client.address": "203.0.113.9", "user_agent.original": "curl/8",
                             "server.address": "shop.example.com", **attributes}}
    [entry] = plain(run("otel", [record]))
    assert (entry["path"], entry["query_params"], entry["timestamp"]) == ("/cart", {"id": "7"}, "2026-11-25T08:00:00Z")

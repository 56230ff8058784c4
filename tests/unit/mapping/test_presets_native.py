"""The presets for what the native protocols carry: ECS off `_bulk`, nginx through HEC and Datadog,
on records as the decoders make them of real client bodies."""

from __future__ import annotations

import json
from typing import Any

from relay.stages.protocols import datadog, elasticsearch, splunk_hec
from tests.unit.mapping.test_presets import only, plain, run

LINE = '203.0.113.9 - - [25/Nov/2026:09:15:02 +0000] "GET /shop/cart?id=7 HTTP/1.1" 404 153 ' \
       '"https://ref.example/" "Mozilla/5.0 (X11)"'
WANT = {"timestamp": "2026-11-25T09:15:02Z", "method": "GET", "host": "www.example.com", "path": "/shop/cart",
        "query_params": {"id": "7"}, "status_code": 404, "ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (X11)",
        "referer": "https://ref.example/", "bytes_sent": 153}
NGINX_JSON = {"time_iso8601": "2026-11-25T10:15:02+01:00", "remote_addr": "203.0.113.9", "request_method": "GET",
              "host": "www.example.com", "request_uri": "/shop/cart?id=7", "status": 404, "body_bytes_sent": 153,
              "http_referer": "https://ref.example/", "http_user_agent": "Mozilla/5.0 (X11)", "request_time": 0.002}


def ndjson(*values: Any) -> bytes:
    return b"".join(json.dumps(v).encode() + b"\n" for v in values)


def test_ecs_bulk_reads_filebeat_module_lines_and_parsed_ecs() -> None:
    filebeat = {"@timestamp": "2026-11-25T09:15:09.120Z", "message": LINE, "event": {"dataset": "nginx.access",
                "module": "nginx"}, "fileset": {"name": "access"}, "input": {"type": "log"},
                "host": {"name": "web-1"}, "agent": {"type": "filebeat", "version": "9.1.0"}}
    parsed = {"@timestamp": "2026-11-25T09:15:02.000Z", "url": {"original": "/shop/cart?id=7", "domain": "www.example.com"},
              "http": {"request": {"method": "GET", "referrer": "https://ref.example/"},
                       "response": {"status_code": 404, "body": {"bytes": 153}}},
              "source": {"ip": "203.0.113.9"}, "user_agent": {"original": "Mozilla/5.0 (X11)"}}
    decoded = elasticsearch.decode(ndjson({"create": {"_index": "filebeat-9.1.0"}}, filebeat, {"create": {}}, parsed),
                                   content_type="application/json", path="/_bulk")
    result = run("ecs-bulk", decoded.records, host="www.example.com")
    assert not result.rejections, [r.render() for r in result.rejections]
    assert [plain(e) for e in result.entries] == [WANT, WANT]


def test_hec_nginx_reads_json_events_string_events_and_raw_lines() -> None:
    body = b"".join(json.dumps(v).encode() for v in (
        {"time": 1795598100.5, "event": NGINX_JSON}, {"time": 1795598100.5, "host": "web-1", "event": LINE}))
    records = splunk_hec.decode(body, content_type=None, path="/services/collector/event").records
    records += splunk_hec.decode(LINE.encode(), content_type=None, path="/services/collector/raw").records
    result = run("hec-nginx", records, host="www.example.com")
    assert not result.rejections, [r.render() for r in result.rejections]
    assert [plain(e) for e in result.entries] == [{**WANT, "duration_ms": 2.0}, WANT, WANT]


def test_hec_nginx_falls_back_to_the_hec_time() -> None:
    record = {k: v for k, v in NGINX_JSON.items() if k != "time_iso8601"}
    records = splunk_hec.decode(json.dumps({"time": 1795598102, "event": record}).encode(), content_type=None,
                                path="/services/collector").records
    assert plain(only("hec-nginx", records[0]))["timestamp"] == "2026-11-25T09:15:02Z"


def test_datadog_nginx_reads_attributes_json_messages_and_raw_lines() -> None:
    body = json.dumps([
        {"timestamp": 1795598109120, "ddsource": "nginx", **NGINX_JSON},           # Fluent Bit datadog
        {"message": json.dumps(NGINX_JSON), "ddsource": "nginx", "hostname": "web-1"},  # an agent tailing JSON
        {"message": LINE, "ddsource": "nginx", "service": "shop", "timestamp": 1795598109120},  # the agent, raw
    ]).encode()
    records = datadog.decode(body, content_type="application/json", path="/api/v2/logs").records
    result = run("datadog-nginx", records, host="www.example.com")
    assert not result.rejections, [r.render() for r in result.rejections]
    assert [plain(e) for e in result.entries] == [{**WANT, "duration_ms": 2.0}, {**WANT, "duration_ms": 2.0}, WANT]

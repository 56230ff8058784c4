"""OTLP/HTTP logs decoder: real client bodies byte for byte, OTLP/JSON, hostile input."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from relay.errors import BadRequest, IngestError, UnsupportedMedia
from relay.stages.protocols import otlp
from tests.support import FIXTURES

FLUENT_BIT = FIXTURES / "fluent-bit-protocols" / "opentelemetry.nginx-json.gzip"
SDK = FIXTURES / "otel-sdk" / "logging-extra.gzip"


def _headers(case: Path) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads((case / "request.json").read_text())["headers"]}


def _body(case: Path) -> bytes:
    return gzip.decompress((case / "body.bin").read_bytes())


def _lines(case: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (case / "source.log").read_text().splitlines()]


def _ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp()) * 1_000_000_000


def test_fluent_bit_opentelemetry_output_carries_each_record_as_its_body() -> None:
    headers = _headers(FLUENT_BIT)
    assert (headers["content-type"], headers["content-encoding"]) == ("application/x-protobuf", "gzip")
    decoded = otlp.decode(_body(FLUENT_BIT), content_type=headers["content-type"], path="/v1/logs")
    lines = _lines(FLUENT_BIT)
    assert decoded.format == "otlp_protobuf" and not decoded.errors
    assert [r["body"] for r in decoded.records] == lines  # every value, ints as ints, decimals as floats
    assert [r["timeUnixNano"] for r in decoded.records] == [_ns(line["time_iso8601"]) for line in lines]
    assert all(r["attributes"] == {} and r["resource"] == {} for r in decoded.records)


def test_otel_sdk_logging_extra_arrives_as_semantic_convention_attributes() -> None:
    decoded = otlp.decode(_body(SDK), content_type=_headers(SDK)["content-type"], path="/v1/logs")
    lines = _lines(SDK)[:50]
    assert len(decoded.records) == 50 and not decoded.errors
    for record, line in zip(decoded.records, lines, strict=True):
        attributes = record["attributes"]
        assert attributes["http.request.method"] == line["request_method"]
        assert attributes["http.response.status_code"] == line["status"]
        assert attributes["client.address"] == line["remote_addr"]
        assert attributes["user_agent.original"] == line["http_user_agent"]
        assert attributes["http.server.request.duration"] == float(line["request_time"])
        assert attributes["url.path"] + ("?" + attributes["url.query"] if "url.query" in attributes else "") \
            == line["request_uri"]
        assert attributes.get("http.request.header.referer", "") == line["http_referer"]
        assert record["body"] == f"{line['request_method']} {line['request_uri']} {line['status']}"
        assert record["severityText"] == "INFO" and record["severityNumber"] == 9
        assert record["resource"]["service.name"] == "shop-web"
        assert record["scope"] == {"name": "shop.access"}
        assert record["timeUnixNano"] > 1.7e18 and record["observedTimeUnixNano"] >= record["timeUnixNano"]


@pytest.mark.parametrize("case", [FLUENT_BIT, SDK], ids=["fluent-bit", "otel-sdk"])
def test_otlp_json_of_the_same_request_decodes_to_the_same_records(case: Path) -> None:
    request = ExportLogsServiceRequest.FromString(_body(case))
    as_json = json_format.MessageToJson(request).encode()  # camelCase, 64-bit integers as strings
    assert b'"timeUnixNano": "' in as_json
    protobuf = otlp.decode(_body(case), content_type="application/x-protobuf")
    assert otlp.decode(as_json, content_type="application/json; charset=utf-8").records == protobuf.records
    snake = json_format.MessageToJson(request, preserving_proto_field_name=True).encode()
    assert otlp.decode(snake, content_type="application/json").records == protobuf.records


def test_otlp_json_as_the_spec_writes_it() -> None:
    # the example of opentelemetry-proto's examples/logs.json: hex ids, string int64
    body = json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeLogs": [{"scope": {"name": "my.library", "version": "1.0.0",
                                 "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "x"}}]},
                       "logRecords": [{
                           "timeUnixNano": "1544712660300000000", "observedTimeUnixNano": "1544712660300000000",
                           "severityNumber": 10, "severityText": "Information",
                           "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                           "body": {"stringValue": "Example log record"},
                           "attributes": [
                               {"key": "string.attribute", "value": {"stringValue": "some string"}},
                               {"key": "boolean.attribute", "value": {"boolValue": True}},
                               {"key": "int.attribute", "value": {"intValue": "10"}},
                               {"key": "double.attribute", "value": {"doubleValue": 637.704}},
                               {"key": "array.attribute", "value": {"arrayValue": {"values": [
                                   {"stringValue": "many"}, {"stringValue": "values"}]}}},
                               {"key": "map.attribute", "value": {"kvlistValue": {"values": [
                                   {"key": "some.map.key", "value": {"stringValue": "some value"}}]}}},
                               {"key": "empty", "value": {}}]}]}]}]}).encode()
    [record] = otlp.decode(body, content_type="application/json").records
    assert record == {
        "timeUnixNano": 1544712660300000000, "observedTimeUnixNano": 1544712660300000000,
        "severityNumber": 10, "severityText": "Information",
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "body": "Example log record",
        "attributes": {"string.attribute": "some string", "boolean.attribute": True, "int.attribute": 10,
                       "double.attribute": 637.704, "array.attribute": ["many", "values"],
                       "map.attribute": {"some.map.key": "some value"}, "empty": None},
        "resource": {"service.name": "my.service"},
        "scope": {"name": "my.library", "version": "1.0.0", "attributes": {"my.scope.attribute": "x"}}}


def test_unset_times_are_left_out_so_a_mapping_falls_back() -> None:
    request = ExportLogsServiceRequest()
    log = request.resource_logs.add().scope_logs.add().log_records.add()
    log.observed_time_unix_nano = 1_764_900_000_000_000_000
    [record] = otlp.decode(request.SerializeToString(), content_type="application/x-protobuf").records
    assert "timeUnixNano" not in record and record["observedTimeUnixNano"] == 1_764_900_000_000_000_000
    assert "body" not in record and "scope" not in record


def _nested(depth: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        outer = AnyValue()
        outer.kvlist_value.values.add(key="k").value.CopyFrom(value)
        value = outer
    return value


def test_a_record_nested_too_deep_is_rejected_alone() -> None:
    request = ExportLogsServiceRequest()
    logs = request.resource_logs.add().scope_logs.add().log_records
    logs.add().body.CopyFrom(_nested(otlp.MAX_DEPTH + 5))
    logs.add().body.string_value = "fine"
    logs.add().body.CopyFrom(_nested(otlp.MAX_DEPTH - 1))
    decoded = otlp.decode(request.SerializeToString(), content_type="application/x-protobuf")
    assert [(e.index, e.reason) for e in decoded.errors] == [(0, "too_deep")]
    assert "deeper than 20 levels" in decoded.errors[0].render()
    assert decoded.indexes == [1, 2] and decoded.records[0]["body"] == "fine"

    as_json = json_format.MessageToJson(request).encode()
    decoded = otlp.decode(as_json, content_type="application/json")
    assert [(e.index, e.reason) for e in decoded.errors] == [(0, "too_deep")] and decoded.indexes == [1, 2]


def test_truncated_protobuf_is_400() -> None:
    body = _body(FLUENT_BIT)
    for cut in (1, 7, len(body) // 2, len(body) - 1):
        with pytest.raises(BadRequest, match="not an OTLP ExportLogsServiceRequest"):
            otlp.decode(body[:cut], content_type="application/x-protobuf")


def test_deep_protobuf_nesting_is_400_not_a_crash() -> None:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.CopyFrom(_nested(40))
    # protobuf's own limit (100 message levels) stops it before any Python recursion
    with pytest.raises(BadRequest, match="MaxDepth"):
        otlp.decode(request.SerializeToString(), content_type="application/x-protobuf")


def test_attributes_of_every_kind_and_repeated_keys() -> None:
    request = ExportLogsServiceRequest()
    logs = request.resource_logs.add().scope_logs.add().log_records
    for _ in range(3):
        attributes = logs.add().attributes
        attributes.add(key="http.request.method").value.string_value = "GET"
        attributes.add(key="tags").value.array_value.values.add().string_value = "a"
        attributes.add(key="map").value.kvlist_value.values.add(key="k").value.int_value = 1
        attributes.add(key="http.request.method").value.string_value = "POST"  # the last of a key wins
        attributes.add(key="empty").value.string_value = ""  # set to "": not the same as unset
        attributes.add(key="unset")
        attributes.add(key="zero").value.int_value = 0  # the same for 0 (strings and ints are read first)
        attributes.add(key="status").value.int_value = 200
        attributes.add(key="seconds").value.double_value = 0.25
        attributes.add(key="no").value.bool_value = False
    records = otlp.decode(request.SerializeToString(), content_type="application/x-protobuf").records
    assert [r["attributes"] for r in records] == [{"http.request.method": "POST", "tags": ["a"], "map": {"k": 1},
                                                   "empty": "", "unset": None, "zero": 0, "status": 200,
                                                   "seconds": 0.25, "no": False}] * 3
    assert list(records[0]["attributes"])[:5] == ["http.request.method", "tags", "map", "empty", "unset"]
    assert records[0]["attributes"]["no"] is False and type(records[0]["attributes"]["zero"]) is int
    assert records[0]["attributes"]["tags"] is not records[1]["attributes"]["tags"]  # never shared between records


def test_a_record_with_attributes_nested_too_deep_is_rejected_alone() -> None:
    request = ExportLogsServiceRequest()
    logs = request.resource_logs.add().scope_logs.add().log_records
    logs.add().attributes.add(key="deep").value.CopyFrom(_nested(otlp.MAX_DEPTH + 1))
    logs.add().attributes.add(key="deep").value.CopyFrom(_nested(otlp.MAX_DEPTH - 1))
    logs.add().attributes.add(key="deep").value.CopyFrom(_nested(otlp.MAX_DEPTH + 1))
    decoded = otlp.decode(request.SerializeToString(), content_type="application/x-protobuf")
    assert [(e.index, e.reason) for e in decoded.errors] == [(0, "too_deep"), (2, "too_deep")]
    assert decoded.indexes == [1]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-ndjson", "image/png"])
def test_wrong_content_type_is_415(content_type: str) -> None:
    with pytest.raises(UnsupportedMedia, match="not OTLP"):
        otlp.decode(b"{}", content_type=content_type)


def test_no_content_type_is_sniffed() -> None:
    assert otlp.decode(_body(FLUENT_BIT), content_type=None).format == "otlp_protobuf"
    assert otlp.decode(b'{"resourceLogs": []}', content_type=None).format == "otlp_json"


@pytest.mark.parametrize("body, message", [
    (b"[]", "the body must be an object"),
    (b'{"resourceLogs": {}}', "resourceLogs must be an array"),
    (b'{"resourceLogs": [{"scopeLogs": 3}]}', "scopeLogs must be an array"),
    (b'{"resourceLogs": [', "not OTLP/JSON"),
])
def test_malformed_otlp_json_is_400_naming_the_place(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        otlp.decode(body, content_type="application/json")


def test_a_malformed_json_record_is_rejected_alone() -> None:
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "soon"}, {"attributes": [{"key": "a", "value": {"intValue": "1"}}]}, 7]}]}]}).encode()
    decoded = otlp.decode(body, content_type="application/json")
    assert [(e.index, e.reason) for e in decoded.errors] == [(0, "invalid"), (2, "invalid")]
    assert "timeUnixNano must be an integer" in decoded.errors[0].message
    assert decoded.records == [{"attributes": {"a": 1}, "resource": {}}] and decoded.indexes == [1]


# --- property: nothing but IngestError escapes ----------------------------------------------

_REAL = _body(FLUENT_BIT)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(_REAL)), flips=st.lists(st.tuples(st.integers(0, len(_REAL) - 1),
                                                                 st.integers(0, 255)), max_size=4),
       content_type=st.sampled_from([None, "application/x-protobuf", "application/json"]))
def test_mutated_protobuf_raises_only_ingest_errors(cut: int, flips: list[tuple[int, int]],
                                                    content_type: str | None) -> None:
    body = bytearray(_REAL)
    for at, byte in flips:
        body[at] = byte
    try:
        decoded = otlp.decode(bytes(body[:cut]), content_type=content_type)
    except IngestError as exc:
        assert exc.message
    else:
        assert decoded.indexes is None or len(decoded.indexes) == len(decoded.records)


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from(["resourceLogs", "scopeLogs", "logRecords", "attributes",
                                                           "key", "value", "body", "stringValue", "intValue",
                                                           "kvlistValue", "arrayValue", "values", "resource",
                                                           "scope", "timeUnixNano", "doubleValue"]),
                                          inner, max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(value=_JSONISH)
def test_arbitrary_json_raises_only_ingest_errors(value: Any) -> None:
    try:
        decoded = otlp.decode(json.dumps(value).encode(), content_type="application/json")
    except IngestError as exc:
        assert exc.message
    else:
        assert decoded.indexes is None or len(decoded.indexes) == len(decoded.records)

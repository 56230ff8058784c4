"""Loki push decoder: Fluent Bit's JSON body byte for byte, Promtail's snappy protobuf, hostile input."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import cramjam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.errors import BadRequest, IngestError, PayloadTooLarge, UnsupportedMedia
from relay.stages.protocols import loki
from relay.stages.protocols.loki_proto import PushRequest
from tests.support import FIXTURES

FLUENT_BIT = FIXTURES / "fluent-bit-protocols" / "loki.nginx-json"


def test_fluent_bit_loki_output_labels_lines_and_structured_metadata() -> None:
    meta = json.loads((FLUENT_BIT / "request.json").read_text())
    headers = {k.lower(): v for k, v in meta["headers"]}
    assert meta["path"] == "/loki/api/v1/push" and "content-encoding" not in headers
    decoded = loki.decode((FLUENT_BIT / "body.bin").read_bytes(), content_type=headers["content-type"],
                          path=meta["path"])
    lines = [json.loads(line) for line in (FLUENT_BIT / "source.log").read_text().splitlines()]
    assert decoded.format == "loki_json" and not decoded.errors and len(decoded.records) == len(lines)
    for record, line in zip(decoded.records, lines, strict=True):
        assert record["labels"] == {"job": "nginx", "env": "prod"}
        # Fluent Bit moves a structured-metadata key out of the line
        assert record["metadata"] == {"method": line.pop("request_method")}
        assert record["json"] == line and json.loads(record["line"]) == line
        assert record["timestamp"] == int(datetime.fromisoformat(line["time_iso8601"]).timestamp()) * 10**9


# --- Promtail / Alloy: snappy-compressed logproto.PushRequest -----------------------------------
# Written here by hand from the protobuf wire format (as Go's gogoproto marshals push.proto),
# independently of relay's descriptor, so a wrong field number or type there fails these.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(seconds: int, nanos: int, line: str, metadata: dict[str, str]) -> bytes:
    # proto3 leaves zero fields out
    stamp = (_varint(1 << 3) + _varint(seconds) if seconds else b"") + (_varint(2 << 3) + _varint(nanos) if nanos else b"")
    pairs = b"".join(_len_field(3, _len_field(1, k.encode()) + _len_field(2, v.encode())) for k, v in metadata.items())
    return _len_field(1, stamp) + _len_field(2, line.encode()) + pairs


def _push(streams: list[tuple[str, list[bytes], int]]) -> bytes:
    return b"".join(_len_field(1, _len_field(1, labels.encode()) + b"".join(_len_field(2, e) for e in entries)
                               + (_varint(3 << 3) + _varint(hash_) if hash_ else b""))
                    for labels, entries, hash_ in streams)


COMBINED = ('203.0.113.9 - - [25/Nov/2026:09:00:01 +0100] "GET /a?b=1 HTTP/1.1" 200 512 "-" "curl/8.5.0"')
PROMTAIL = _push([
    ('{filename="/var/log/nginx/access.log", job="nginx", note="say \\"hi\\"\\n"}',
     [_entry(1_795_593_601, 123_456_789, COMBINED, {}),
      _entry(1_795_593_602, 0, '{"status":404}', {"trace_id": "abc", "pod": "web-1"})], 0x1234_5678_9ABC),
    ("{}", [_entry(1_795_593_603, 1, "bare", {})], 0),
])


def test_promtail_snappy_protobuf_body() -> None:
    body = bytes(cramjam.snappy.compress_raw(PROMTAIL))
    decoded = loki.decode(body, content_type="application/x-protobuf", path="/loki/api/v1/push")
    labels = {"filename": "/var/log/nginx/access.log", "job": "nginx", "note": 'say "hi"\n'}
    assert decoded.format == "loki_protobuf" and decoded.records == [
        {"line": COMBINED, "timestamp": 1_795_593_601_123_456_789, "labels": labels},
        {"line": '{"status":404}', "timestamp": 1_795_593_602_000_000_000, "labels": labels,
         "metadata": {"trace_id": "abc", "pod": "web-1"}, "json": {"status": 404}},
        {"line": "bare", "timestamp": 1_795_593_603_000_000_001, "labels": {}},
    ]


def test_the_descriptor_writes_what_loki_writes() -> None:
    assert PushRequest.FromString(PROMTAIL).SerializeToString() == PROMTAIL


def test_a_snappy_bomb_is_refused_before_inflating() -> None:
    # the preamble says 1 GiB: refused from the first bytes, whatever follows
    with pytest.raises(PayloadTooLarge, match="snappy"):
        loki.decode(_varint(1 << 30) + b"\x00" * 16, content_type="application/x-protobuf", max_size=1 << 20)
    # a real body over the limit once inflated
    body = bytes(cramjam.snappy.compress_raw(_push([("{}", [_entry(1, 0, "x" * 70_000, {})], 0)])))
    assert len(body) < 5_000
    with pytest.raises(PayloadTooLarge):
        loki.decode(body, content_type="application/x-protobuf", max_size=65_536)


@pytest.mark.parametrize("body", [
    PROMTAIL,  # protobuf sent without its snappy layer
    bytes(cramjam.snappy.compress_raw(PROMTAIL))[:-3],
    bytes(cramjam.snappy.compress_raw(PROMTAIL[:-5])),  # truncated protobuf, whole snappy
])
def test_broken_protobuf_or_snappy_is_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        loki.decode(body, content_type="application/x-protobuf")


def test_unreadable_labels_reject_their_stream_only() -> None:
    body = bytes(cramjam.snappy.compress_raw(_push([
        ('{job="nginx"', [_entry(1, 0, "a", {}), _entry(2, 0, "b", {})], 0),
        ('{job="ok"}', [_entry(3, 0, "c", {})], 0)])))
    decoded = loki.decode(body, content_type="application/x-protobuf")
    assert [(e.index, e.field) for e in decoded.errors] == [(0, "labels"), (1, "labels")]
    assert "streams[0].labels" in decoded.errors[0].message
    assert decoded.indexes == [2] and decoded.records[0]["line"] == "c"


@pytest.mark.parametrize("text, labels", [
    ("{}", {}),
    (' { a = "1" ,b="x\\\\y\\"z" } ', {"a": "1", "b": 'x\\y"z'}),
    ('{app_kubernetes_io_name="web", x="\\u00e9\\t"}', {"app_kubernetes_io_name": "web", "x": "é\t"}),
    ('{a="}", b="{"}', {"a": "}", "b": "{"}),
])
def test_label_strings(text: str, labels: dict[str, str]) -> None:
    assert loki.parse_labels(text) == labels


@pytest.mark.parametrize("text", ["", "job=nginx", '{job="nginx"', '{job=nginx}', '{1a="b"}', '{a="b"} x',
                                  '{a="b" c="d"}'])
def test_bad_label_strings_say_where(text: str) -> None:
    with pytest.raises(ValueError, match="labels"):
        loki.parse_labels(text)


def test_json_push_with_bad_values_rejects_those_values_only() -> None:
    body = json.dumps({"streams": [
        {"stream": {"job": "a"}, "values": [["1795593600000000000", "ok"], ["soon", "x"], ["1", 5],
                                            ["1", "m", {"k": 1}], ["2"], ["3", "meta", {"k": "v"}]]},
        {"stream": {"job": 1}, "values": [["1", "y"]]},
    ]}).encode()
    decoded = loki.decode(body, content_type="application/json")
    assert [(e.index, e.field) for e in decoded.errors] == [(1, "values"), (2, "values"), (3, "values"),
                                                              (4, "values"), (6, "labels")]
    assert decoded.errors[0].message.startswith("streams[0].values[1]: the timestamp must be Unix nanoseconds")
    assert [r["line"] for r in decoded.records] == ["ok", "meta"] and decoded.indexes == [0, 5]
    assert decoded.records[1]["metadata"] == {"k": "v"}


@pytest.mark.parametrize("body, message", [
    (b"[]", "must be an object"),
    (b'{"streams": {}}', "streams must be an array"),
    (b'{"streams": [3]}', r"streams\[0\] must be an object"),
    (b'{"streams": [{"values": {}}]}', r"streams\[0\].values must be an array"),
    (b'{"streams": [', "not Loki push JSON"),
])
def test_malformed_json_push_is_400(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        loki.decode(body, content_type="application/json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-ndjson", "application/msgpack"])
def test_wrong_content_type_is_415(content_type: str) -> None:
    with pytest.raises(UnsupportedMedia, match="not Loki push"):
        loki.decode(b"{}", content_type=content_type)


def test_empty_push_has_no_records() -> None:
    assert loki.decode(b"", content_type="application/x-protobuf").records == []
    assert loki.decode(b'{"streams": []}', content_type="application/json").records == []


# --- property: nothing but IngestError escapes ----------------------------------------------

_SNAPPY = bytes(cramjam.snappy.compress_raw(PROMTAIL))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.booleans(), cut=st.integers(0, len(PROMTAIL)),
       flips=st.lists(st.tuples(st.integers(0, len(PROMTAIL) - 1), st.integers(0, 255)), max_size=4))
def test_mutated_protobuf_and_snappy_raise_only_ingest_errors(raw: bool, cut: int,
                                                               flips: list[tuple[int, int]]) -> None:
    body = bytearray(PROMTAIL if raw else _SNAPPY)
    for at, byte in flips:
        body[at % len(body)] = byte
    try:
        decoded = loki.decode(bytes(body[:cut]), content_type="application/x-protobuf", max_size=4096)
    except IngestError as exc:
        assert exc.message
    else:
        assert decoded.indexes is None or len(decoded.indexes) == len(decoded.records)


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                        lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(["streams", "stream", "values", "labels", "job"]),
                                          inner, max_size=3), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(value=_JSONISH)
def test_arbitrary_json_raises_only_ingest_errors(value: Any) -> None:
    try:
        decoded = loki.decode(json.dumps(value).encode(), content_type="application/json")
    except IngestError as exc:
        assert exc.message
    else:
        assert decoded.indexes is None or len(decoded.indexes) == len(decoded.records)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40))
def test_arbitrary_label_strings_raise_only_value_errors(text: str) -> None:
    try:
        labels = loki.parse_labels(text)
    except ValueError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())

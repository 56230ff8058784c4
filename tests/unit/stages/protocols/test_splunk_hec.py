"""The HEC decoder: concatenated events, object and string events, the envelope under `hec`, raw lines, HEC codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import BadRequest, IngestError
from relay.stages.protocols.splunk_hec import decode


def events(*values: Any, sep: bytes = b"") -> bytes:
    return sep.join(json.dumps(v).encode() for v in values)


def test_concatenated_events_object_and_string() -> None:
    body = events({"time": 1764061200.25, "host": "web-1", "sourcetype": "nginx", "fields": {"env": "prod"},
                   "event": {"remote": "192.0.2.1", "code": "200"}},
                  {"event": '192.0.2.9 - - [25/Nov/2026:09:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl"'})
    decoded = decode(body, content_type=None, path="/services/collector/event")
    assert decoded.records == [
        {"remote": "192.0.2.1", "code": "200",
         "hec": {"time": 1764061200.25, "host": "web-1", "sourcetype": "nginx", "fields": {"env": "prod"}}},
        {"message": '192.0.2.9 - - [25/Nov/2026:09:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl"'}]
    assert decode(events({"event": "a"}, {"event": "b"}, sep=b"\n"), content_type="application/json",
                  path="/services/collector").records == [{"message": "a"}, {"message": "b"}]


def test_events_without_event_are_rejected_alone() -> None:
    body = events({"event": "a"}, {"time": 1}, {"event": ""}, {"event": "b"}) + b"{broken"
    decoded = decode(body, content_type=None, path="/services/collector/event/1.0")
    assert decoded.records == [{"message": "a"}, {"message": "b"}] and decoded.indexes == [0, 3]
    assert [(r.index, r.reason) for r in decoded.errors] == [(1, "required"), (2, "blank"), (4, "invalid_json")]


@pytest.mark.parametrize("body,code", [
    (b"", 5), (b"  \n", 5), (b"{nope", 6), (events({"time": 1}), 12), (events({"event": {}}), 13), (b"[1]", 6),
])
def test_whole_request_errors_carry_hec_codes(body: bytes, code: int) -> None:
    with pytest.raises(BadRequest) as raised:
        decode(body, content_type=None, path="/services/collector/event")
    assert raised.value.code == code


def test_raw_lines_with_the_envelope_from_the_query() -> None:
    body = b"line one\n\nline two\r\nline \xff three\n"
    decoded = decode(body, content_type="text/plain", path="/services/collector/raw?channel=c&host=web-2&source=x")
    assert decoded.records == [{"message": m, "hec": {"host": "web-2", "source": "x"}}
                               for m in ("line one", "line two", "line \ufffd three")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.sampled_from(["/services/collector/event", "/services/collector/raw"]))
def test_hostile_bodies_decode_or_raise_an_ingest_error(body: bytes, path: str) -> None:
    try:
        decoded = decode(body, content_type=None, path=path)
    except IngestError:
        return
    assert all(isinstance(r, dict) for r in decoded.records)

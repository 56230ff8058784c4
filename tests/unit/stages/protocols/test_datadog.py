"""The Datadog intake decoder: arrays or one object, query defaults, text lines, per-log rejections."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import BadRequest, IngestError, UnsupportedMedia
from relay.stages.protocols.datadog import decode


def test_an_array_with_query_defaults_for_what_logs_lack() -> None:
    body = json.dumps([{"message": "m1", "ddsource": "nginx", "timestamp": 1764061200250},
                       {"message": "m2", "remote": "192.0.2.1"}]).encode()
    decoded = decode(body, content_type="application/json", path="/api/v2/logs?ddsource=web&service=shop")
    assert decoded.records == [
        {"message": "m1", "ddsource": "nginx", "timestamp": 1764061200250, "service": "shop"},
        {"message": "m2", "remote": "192.0.2.1", "ddsource": "web", "service": "shop"}]


def test_one_object_and_text_lines() -> None:
    assert decode(b'{"message":"x"}', content_type="application/json", path="/v1/input").records == [{"message": "x"}]
    assert decode(b"a\nb\n", content_type="text/plain", path="/v1/input?hostname=h").records == [
        {"hostname": "h", "message": "a"}, {"hostname": "h", "message": "b"}]


def test_elements_that_are_not_objects_are_rejected_alone() -> None:
    decoded = decode(b'[{"message":"a"}, 3, "x", {"message":"b"}]', content_type=None, path="/api/v2/logs")
    assert decoded.indexes == [0, 3] and [r.index for r in decoded.errors] == [1, 2]
    with pytest.raises(BadRequest):
        decode(b"[1, 2]", content_type=None, path="/api/v2/logs")
    with pytest.raises(BadRequest):
        decode(b"[{", content_type=None, path="/api/v2/logs")
    with pytest.raises(UnsupportedMedia):
        decode(b"[]", content_type="application/x-protobuf", path="/api/v2/logs")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_hostile_bodies_decode_or_raise_an_ingest_error(body: bytes) -> None:
    try:
        decoded = decode(body, content_type="application/json", path="/api/v2/logs")
    except IngestError:
        return
    assert all(isinstance(r, dict) for r in decoded.records)

"""The `_bulk` decoder: items in body order, per-item rejections, whole-request errors, hostile input."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import BadRequest, IngestError, UnsupportedMedia
from relay.stages.protocols.elasticsearch import Item, _decode_lines, _decode_values, decode


def ndjson(*values: Any) -> bytes:
    return b"".join(json.dumps(v).encode() + b"\n" for v in values)


def test_index_and_create_items_become_records_with_their_index() -> None:
    body = ndjson({"create": {"_index": "nginx"}}, {"remote": "192.0.2.1", "@timestamp": "2026-11-25T09:00:00Z"},
                  {"index": {}}, {"n": 2})
    decoded = decode(body, content_type="application/x-ndjson", path="/logs/_bulk")
    assert decoded.records == [{"remote": "192.0.2.1", "@timestamp": "2026-11-25T09:00:00Z", "_index": "nginx"},
                               {"n": 2, "_index": "logs"}]
    assert decoded.meta == [Item("create", "nginx", None), Item("index", "logs", None)]
    assert decoded.errors == []


def test_delete_update_and_bad_documents_are_rejected_alone_naming_their_item() -> None:
    body = ndjson({"delete": {"_index": "a", "_id": "1"}}, {"index": {"_id": 7}}, {"ok": 1},
                  {"update": {"_id": "2"}}, {"doc": {"x": 1}}) + b'{"create":{}}\n{not json\n' \
        + ndjson({"create": {}}, [1, 2], {"index": {}}, {"ok": 2})
    decoded = decode(body, content_type="application/vnd.elasticsearch+x-ndjson; compatible-with=9", path="/_bulk")
    assert [(r.index, r.reason) for r in decoded.errors] == [
        (0, "unsupported_action"), (2, "unsupported_action"), (3, "invalid_json"), (4, "not_an_object")]
    assert decoded.records == [{"ok": 1}, {"ok": 2}] and decoded.indexes == [1, 5]
    assert [item.op for item in decoded.meta] == ["delete", "index", "update", "create", "create", "index"]
    assert decoded.meta[1].id == "7"


@pytest.mark.parametrize("body,words", [
    (b"{oops\n{}\n", "line 1: malformed action line"),
    (ndjson({"index": {}, "create": {}}, {}), "only key"),
    (ndjson({"upsert": {}}, {}), "unknown action 'upsert'"),
    (ndjson({"index": "x"}, {}), "must be an object"),
    (ndjson({"index": {}}, {"a": 1}, {"index": {}}), "line 3: the index action has no document line"),
    (ndjson([1]), "malformed action line"),
])
def test_an_unreadable_action_line_is_a_400_for_the_whole_request(body: bytes, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        decode(body, content_type="application/x-ndjson", path="/_bulk")


def test_wrong_content_type_is_415() -> None:
    with pytest.raises(UnsupportedMedia, match="text/plain"):
        decode(ndjson({"index": {}}, {}), content_type="text/plain", path="/_bulk")


def test_no_content_type_and_no_final_newline_are_taken() -> None:
    body = ndjson({"index": {}}, {"a": 1}).rstrip(b"\n")
    assert decode(body, content_type=None, path="/_bulk").records == [{"a": 1}]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | st.lists(st.sampled_from([b'{"index":{}}', b'{"create":{"_index":"x"}}',
                                                          b'{"a":1}', b"[", b'{"delete":{}}', b"\xff", b"",
                                                          b'{"a":' * 50]), max_size=12).map(b"\n".join))
def test_hostile_bodies_decode_or_raise_an_ingest_error(body: bytes) -> None:
    try:
        decoded = decode(body, content_type="application/x-ndjson", path="/_bulk")
    except IngestError:
        return
    assert len(decoded.records) + len(decoded.errors) == len(decoded.meta)


_LINE = st.sampled_from([{"index": {}}, {"create": {"_index": "x", "_id": 3}}, {"delete": {"_id": "1"}},
                         {"update": {}}, {"a": 1}, [1], "s", {"index": {}, "x": 1}, {"upsert": {}}, {"index": 1}])


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=14))
def test_the_fast_path_and_the_line_by_line_path_agree(values: list[Any]) -> None:
    """A body whose lines are all JSON is decoded in one call; one with a bad line, line by line:
    on the same lines both give the same records, rejections, items and whole-request errors."""
    body = ndjson(*values)
    outcomes = []
    for run in (lambda: _decode_values(msgspec.json.Decoder().decode_lines(body), "i"),
                lambda: _decode_lines([line for line in body.split(b"\n") if line.strip()], "i")):
        try:
            decoded = run()
        except BadRequest as exc:
            outcomes.append(str(exc))
        else:
            outcomes.append((decoded.records, decoded.meta, decoded.indexes,
                             [(r.index, r.reason) for r in decoded.errors]))
    assert outcomes[0] == outcomes[1]

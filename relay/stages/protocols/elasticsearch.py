"""Elasticsearch `_bulk` bodies -> records: NDJSON action lines, each `index`/`create` followed by its document.

    {"create":{"_index":"nginx"}}
    {"@timestamp":"2026-11-25T09:00:00.000Z","remote":"192.0.2.1",...}

Each document becomes a record as it is, with `_index` (the action's, else the one in the
path `/<index>/_bulk`) merged in: Elasticsearch reserves `_index` as a metadata field, so
no document carries its own. `delete` and `update` items are rejected on their own (the
relay appends, it cannot change what it sent); a document that is not a JSON object is
rejected on its own. An action line that cannot be read makes the whole request a 400, as
Elasticsearch answers it: after it, nothing says where the next item starts.

`Decoded.meta` is a list of `Item`, one per action in body order: what the per-item answer
names. Bounded: one Item per action line of a body <= server.max_body_size.
"""

from __future__ import annotations

from typing import Any

import msgspec

from relay.errors import BadRequest, UnsupportedMedia
from relay.models import Decoded, Rejection
from relay.stages.protocols import media_type, split_query

# Elasticsearch's own, plus what clients send when nobody set a type (curl, bare HTTP libraries)
MEDIA_TYPES = frozenset(["", "application/x-ndjson", "application/json", "application/vnd.elasticsearch+x-ndjson",
                         "application/vnd.elasticsearch+json", "application/octet-stream",
                         "application/x-www-form-urlencoded"])
_ACTIONS = frozenset(["index", "create", "delete", "update"])
_WITH_SOURCE = frozenset(["index", "create", "update"])  # delete has no document line
_json = msgspec.json.Decoder()
_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class Item(msgspec.Struct, frozen=True, gc=False):
    op: str  # index, create, delete, update
    index: str | None
    id: str | None


def _index_in(path: str) -> str | None:
    """`/nginx/_bulk` (after any source prefix) -> "nginx"; `/_bulk` -> None."""
    head = split_query(path)[0].rstrip("/").removesuffix("/_bulk")
    name = head.rsplit("/", 1)[-1] if head else ""
    return name or None


def _action(line: bytes, number: int) -> tuple[str, dict[str, Any]]:
    try:
        value = _json.decode(line)
    except _ERRORS as exc:
        raise BadRequest(f"line {number}: malformed action line, expected "
                         f'{{"index"|"create"|...: {{...}}}}: {exc}') from None
    if not isinstance(value, dict) or len(value) != 1:
        raise BadRequest(f"line {number}: malformed action line, expected one of index, create, delete, "
                         "update as the only key")
    ((op, params),) = value.items()
    return op, params


def decode(body: bytes, *, content_type: str | None, path: str, max_size: int = 0) -> Decoded:
    media = media_type(content_type)
    if media not in MEDIA_TYPES:
        raise UnsupportedMedia(f"Content-Type {media!r} is not supported by _bulk; send application/x-ndjson")
    default_index = _index_in(path)
    lines = _lines(body)
    uniform = _uniform(lines, default_index)
    if uniform is not None:
        return uniform
    try:  # every line at once, in C; a line that is not JSON sends the body the slow way, line by line
        values = _json.decode_lines(body)
    except _ERRORS:
        return _decode_lines([line for line in lines if line.strip()], default_index)
    return _decode_values(values, default_index)


def _lines(body: bytes) -> list[bytes]:
    lines = body.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()
    return lines


def _one_action(lines: list[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """One `index`/`create` action line repeated byte for byte, each followed by its document:
    (the action, the documents as one JSON array); None for any other body."""
    actions, docs = lines[0::2], lines[1::2]
    if not docs or len(actions) != len(docs) or len(set(actions)) != 1:
        return None
    try:
        action = _json.decode(actions[0])
    except _ERRORS:
        return None
    if type(action) is not dict or len(action) != 1 or next(iter(action)) not in ("index", "create"):
        return None
    return action, b"[" + b",".join(docs) + b"]"


def decode_shaped(body: bytes, *, content_type: str | None, path: str, shape: Any) -> Decoded | None:
    """`_uniform`'s bodies with the documents decoded into `shape` (a mapping's record Struct)
    instead of dicts: None for any other body, a document that is not an object, and a mapping
    that reads `_index` (which `decode` merges into each document)."""
    if "_index" in shape.keys or media_type(content_type) not in MEDIA_TYPES:
        return None
    found = _one_action(_lines(body))
    if found is None:
        return None
    records = shape.decode(found[1], lines=False)
    if records is None:
        return None
    return Decoded(records=records, format="es_bulk", meta=[_item(found[0], 1, _index_in(path))] * len(records))


def _uniform(lines: list[bytes], default_index: str | None) -> Decoded | None:
    """What most clients send, fast: one `index`/`create` action line repeated byte for byte
    (Fluent Bit, Beats, Logstash per index), each followed by its document. The action is read
    once and the documents in one call; None for any other body (the general paths decide).
    Same outcome as the general paths, which the tests check."""
    found = _one_action(lines)
    if found is None:
        return None
    action, docs = found
    try:
        values = _json.decode(docs)
    except _ERRORS:
        return None  # a blank or bad line somewhere: the general paths find it and name it
    item = _item(action, 1, default_index)
    errors: list[Rejection] = []
    records: list[Any] = []
    index = item.index
    for number, doc in enumerate(values):
        if type(doc) is not dict:
            errors.append(Rejection(number, None, "not_an_object",
                                    f"document must be a JSON object, got {type(doc).__name__}"))
            continue
        if index is not None:
            doc["_index"] = index
        records.append(doc)
    items = [item] * len(values)
    if not errors:
        return Decoded(records=records, format="es_bulk", meta=items)
    bad = {e.index for e in errors}
    return _result(records, errors, [n for n in range(len(values)) if n not in bad], items)


def _decode_values(values: list[Any], default_index: str | None) -> Decoded:
    """The fast way: every line is JSON. Same outcome as _decode_lines on the same body."""
    records: list[Any] = []
    items: list[Item] = []
    indexes: list[int] = []
    errors: list[Rejection] = []
    at, count = 0, len(values)
    last: tuple[Any, Item] | None = None  # actions repeat: one Item per distinct action object
    while at < count:
        action = values[at]
        if last is not None and action == last[0]:
            item = last[1]
        else:
            if type(action) is not dict or len(action) != 1:
                raise BadRequest(f"line {at + 1}: malformed action line, expected one of index, create, "
                                 "delete, update as the only key")
            item = _item(action, at + 1, default_index)
            last = (action, item)
        number = len(items)
        items.append(item)
        op = item.op
        if op in _WITH_SOURCE:
            if at + 1 >= count:
                raise BadRequest(f"line {at + 1}: the {op} action has no document line after it")
            doc, at = values[at + 1], at + 2
        else:
            at += 1
        if op == "delete" or op == "update":
            errors.append(_unsupported(number, op))
        elif type(doc) is not dict:
            errors.append(Rejection(number, None, "not_an_object",
                                    f"document must be a JSON object, got {type(doc).__name__}"))
        else:
            if item.index is not None:
                doc["_index"] = item.index
            indexes.append(number)
            records.append(doc)
    return _result(records, errors, indexes, items)


def _decode_lines(lines: list[bytes], default_index: str | None) -> Decoded:
    records: list[Any] = []
    errors: list[Rejection] = []
    indexes: list[int] = []
    items: list[Item] = []
    at = 0
    while at < len(lines):
        op, params = _action(lines[at], at + 1)
        item = _item({op: params}, at + 1, default_index)
        number = len(items)
        items.append(item)
        if op in _WITH_SOURCE:
            if at + 1 >= len(lines):
                raise BadRequest(f"line {at + 1}: the {op} action has no document line after it")
            source, at = lines[at + 1], at + 2
        else:
            at += 1
        if op in ("delete", "update"):
            errors.append(_unsupported(number, op))
            continue
        try:
            doc = _json.decode(source)
        except _ERRORS as exc:
            errors.append(Rejection(number, None, "invalid_json", f"document is not valid JSON: {exc}"))
            continue
        if not isinstance(doc, dict):
            errors.append(Rejection(number, None, "not_an_object",
                                    f"document must be a JSON object, got {type(doc).__name__}"))
            continue
        if item.index is not None:
            doc["_index"] = item.index
        indexes.append(number)
        records.append(doc)
    return _result(records, errors, indexes, items)


def _item(action: dict[str, Any], number: int, default_index: str | None) -> Item:
    ((op, params),) = action.items()
    if op not in _ACTIONS:
        raise BadRequest(f"line {number}: unknown action {op!r}; expected index, create, delete or update")
    if not isinstance(params, dict):
        raise BadRequest(f"line {number}: the {op} action's value must be an object")
    raw_index, raw_id = params.get("_index", default_index), params.get("_id")
    return Item(op, str(raw_index) if raw_index is not None else None, str(raw_id) if raw_id is not None else None)


def _unsupported(number: int, op: str) -> Rejection:
    return Rejection(number, None, "unsupported_action",
                     f"{op}: the relay only appends (index, create); it cannot {op} a document")


def _result(records: list[Any], errors: list[Rejection], indexes: list[int], items: list[Item]) -> Decoded:
    if not errors:
        return Decoded(records=records, format="es_bulk", meta=items)
    return Decoded(records=records, format="es_bulk", errors=errors, indexes=indexes, meta=items)

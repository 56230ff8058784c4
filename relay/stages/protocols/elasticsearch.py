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
    if op not in _ACTIONS:
        raise BadRequest(f"line {number}: unknown action {op!r}; expected index, create, delete or update")
    if not isinstance(params, dict):
        raise BadRequest(f"line {number}: the {op} action's value must be an object")
    return op, params


def decode(body: bytes, *, content_type: str | None, path: str, max_size: int = 0) -> Decoded:
    media = media_type(content_type)
    if media not in MEDIA_TYPES:
        raise UnsupportedMedia(f"Content-Type {media!r} is not supported by _bulk; send application/x-ndjson")
    default_index = _index_in(path)
    lines = [line for line in body.split(b"\n") if line.strip()]
    records: list[Any] = []
    errors: list[Rejection] = []
    indexes: list[int] = []
    items: list[Item] = []
    at = 0
    while at < len(lines):
        op, params = _action(lines[at], at + 1)
        raw_index, raw_id = params.get("_index", default_index), params.get("_id")
        item = Item(op, str(raw_index) if raw_index is not None else None,
                    str(raw_id) if raw_id is not None else None)
        number = len(items)
        items.append(item)
        if op in _WITH_SOURCE:
            if at + 1 >= len(lines):
                raise BadRequest(f"line {at + 1}: the {op} action has no document line after it")
            source, at = lines[at + 1], at + 2
        else:
            at += 1
        if op in ("delete", "update"):
            errors.append(Rejection(number, None, "unsupported_action",
                                    f"{op}: the relay only appends (index, create); it cannot {op} a document"))
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
    if not errors:
        return Decoded(records=records, format="es_bulk", meta=items)
    return Decoded(records=records, format="es_bulk", errors=errors, indexes=indexes, meta=items)

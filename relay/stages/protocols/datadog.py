"""Datadog log intake bodies -> records: `POST /api/v2/logs` (and `/v1/input`).

A JSON array of log objects, or one object, as the Datadog Agent, Vector's `datadog_logs` and
Fluent Bit's `datadog` output send them:

    [{"message": "...", "ddsource": "nginx", "ddtags": "env:prod", "hostname": "web-1",
      "service": "shop", "status": "info", "timestamp": 1764061200250, ...attributes}]

Each object is the record as it is: Datadog's reserved keys (`message`, `ddsource`, `ddtags`,
`hostname`, `service`, `status`, `timestamp`) are already top-level keys, the attributes beside
them. `ddsource`, `ddtags`, `hostname` and `service` from the query string fill records that lack
them (`/api/v2/logs?ddsource=nginx`). A `message` that is a JSON object (an agent tailing a JSON
log sends the line as it is) is read into attributes, as Datadog's intake does: its keys join the
record where the record has none of that name. A `text/plain` body to `/v1/input` is one record per line,
`{"message": line}`. An element that is not an object is rejected on its own.
"""

from __future__ import annotations

from typing import Any

import msgspec

from relay.errors import BadRequest, UnsupportedMedia
from relay.models import Decoded, Rejection
from relay.stages.decode import decode_data
from relay.stages.protocols import media_type, split_query

_JSON = msgspec.json.Decoder()
_QUERY_KEYS = ("ddsource", "ddtags", "hostname", "service")
_JSON_TYPES = frozenset(["", "application/json", "text/json", "application/octet-stream",
                         "application/x-www-form-urlencoded"])


def decode(body: bytes, *, content_type: str | None, path: str, max_size: int = 0) -> Decoded:
    path, query = split_query(path)
    defaults = {key: query[key] for key in _QUERY_KEYS if query.get(key)}
    media = media_type(content_type)
    if media == "text/plain":
        text = body.decode("utf-8", errors="replace")
        return Decoded(records=[{**defaults, "message": line} for line in text.splitlines() if line.strip()],
                       format="datadog_text")
    if media not in _JSON_TYPES:
        raise UnsupportedMedia(f"Content-Type {media!r} is not supported: send application/json")
    if not body.strip():
        return Decoded(records=[], format="datadog")
    if body.lstrip()[:1] not in (b"[", b"{"):  # not JSON (decode_data would also try MessagePack)
        raise BadRequest("body is not a JSON array or object of logs")
    decoded = decode_data("json", body)
    errors = list(decoded.errors)
    records: list[Any] = []
    indexes: list[int] = []
    places = decoded.indexes if decoded.indexes is not None else range(len(decoded.records))
    for index, value in zip(places, decoded.records, strict=True):
        if not isinstance(value, dict):
            errors.append(Rejection(index, None, "not_an_object",
                                    f"a log must be a JSON object, got {type(value).__name__}"))
            continue
        message = value.get("message")
        if type(message) is str and message[:1] == "{":
            _merge_json_message(value, message)
        if defaults:
            for key, default in defaults.items():
                value.setdefault(key, default)
        indexes.append(index)
        records.append(value)
    if not errors:
        return Decoded(records=records, format="datadog")
    if not records:
        raise BadRequest(f"no log could be read: {errors[0].render()}")
    errors.sort(key=lambda r: r.index)
    return Decoded(records=records, format="datadog", errors=errors, indexes=indexes)


def _merge_json_message(record: dict[str, Any], message: str) -> None:
    try:
        parsed = _JSON.decode(message)
    except (msgspec.DecodeError, RecursionError):
        return  # a message that merely starts with "{" stays a message
    if type(parsed) is dict:
        for key, item in parsed.items():
            record.setdefault(key, item)

"""Splunk HTTP Event Collector bodies -> records.

`/services/collector`, `/services/collector/event` (and `/1.0`): concatenated (or newline-separated)
event objects

    {"time": 1764061200.25, "host": "web-1", "source": "nginx", "sourcetype": "access_combined",
     "index": "main", "fields": {"env": "prod"}, "event": {...} | "a raw line"}

An object `event` becomes the record as it is; a string `event` becomes `{"message": line}` (what
the line presets read). The envelope is merged in under `hec`: `hec.time`, `hec.host`,
`hec.source`, `hec.sourcetype`, `hec.index`, `hec.fields` (every key of the envelope besides
`event`, as sent).

`/services/collector/raw` (and `/1.0`): each non-empty line is `{"message": line}`, with `hec.host`,
`hec.source`, `hec.sourcetype`, `hec.index` from the query string when given there.

Errors carry HEC's codes (IngestError.code): 5 no data, 6 invalid data format, 12 event field is
required, 13 event field cannot be blank. An event without `event` (or blank) is rejected on its own;
the request is a 400 only when no event could be read.
"""

from __future__ import annotations

from typing import Any

import msgspec

from relay.errors import BadRequest
from relay.models import Decoded, Rejection
from relay.stages.decode import decode_data
from relay.stages.protocols import split_query

NO_DATA, INVALID_FORMAT, EVENT_REQUIRED, EVENT_BLANK = 5, 6, 12, 13
_json = msgspec.json.Decoder()
_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_RAW_PATHS = ("/services/collector/raw", "/services/collector/raw/1.0")


def decode(body: bytes, *, content_type: str | None, path: str, max_size: int = 0) -> Decoded:
    # HEC takes any Content-Type (Fluent Bit sends none, curl form-urlencoded): the path says the format
    path, query = split_query(path)
    if not body.strip():
        raise BadRequest("No data: the request body is empty", code=NO_DATA)
    if path.rstrip("/") in _RAW_PATHS:
        return _raw(body, query)
    return _events(body)


def _raw(body: bytes, query: dict[str, str]) -> Decoded:
    envelope = {key: query[key] for key in ("host", "source", "sourcetype", "index") if query.get(key)}
    text = body.decode("utf-8", errors="replace")  # raw is text; a bad byte costs that character, not the line
    records: list[Any] = []
    for line in text.splitlines():
        if line.strip():
            records.append({"message": line, "hec": envelope} if envelope else {"message": line})
    return Decoded(records=records, format="hec_raw")


def _events(body: bytes) -> Decoded:
    if body.lstrip()[:1] != b"{":  # not JSON objects (decode_data would also try MessagePack)
        raise BadRequest("Invalid data format: expected JSON event objects", code=INVALID_FORMAT)
    try:  # every event at once, in C; a bad one sends the body the slow way, which names it
        values = Decoded(records=_json.decode_lines(body), format="hec_event")
    except _ERRORS:
        try:
            values = decode_data("json", body)
        except BadRequest as exc:
            raise BadRequest(f"Invalid data format: {exc.message}", code=INVALID_FORMAT) from None
    records: list[Any] = []
    errors = list(values.errors)
    indexes: list[int] = []
    places = values.indexes if values.indexes is not None else range(len(values.records))
    for index, value in zip(places, values.records, strict=True):
        event = value.get("event") if type(value) is dict else None
        if type(event) is dict and event:  # the usual case, checked first
            record = event  # the decoded event is this request's own: it becomes the record, no copy
        elif type(event) is str and event.strip():
            record = {"message": event}
        else:
            problem = _problem(value)
            if problem is not None:
                errors.append(Rejection(index, "event", *problem))
                continue
            record = {"message": str(event)}  # a number or a list: kept as its text
        if len(value) > 1:  # an envelope besides `event`
            envelope = value.copy()
            del envelope["event"]
            record["hec"] = envelope
        indexes.append(index)
        records.append(record)
    if not errors:
        return Decoded(records=records, format="hec_event")
    errors.sort(key=lambda r: r.index)
    if not records:
        first = errors[0]
        code = EVENT_BLANK if first.reason == "blank" else EVENT_REQUIRED if first.reason == "required" \
            else INVALID_FORMAT
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BadRequest(f"{first.message}, event {first.index}{more}", code=code)
    return Decoded(records=records, format="hec_event", errors=errors, indexes=indexes)


def _problem(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        return "not_an_object", f"Invalid data format: an event must be a JSON object, got {type(value).__name__}"
    if "event" not in value:
        return "required", "Event field is required"
    event = value["event"]
    if event is None or event == "" or event == {} or (isinstance(event, str) and not event.strip()):
        return "blank", "Event field cannot be blank"
    return None

"""Loki push (`POST /loki/api/v1/push`) -> records; pure.

    decode(body, content_type=..., path=..., max_size=...) -> Decoded

Two bodies, as Loki itself reads them (its Content-Encoding already undone):
- `application/x-protobuf` (Promtail, Grafana Alloy `loki.write`): a raw-block snappy
  `logproto.PushRequest`. The snappy length preamble is checked against `max_size` before
  anything is inflated, so a snappy bomb costs nothing.
- `application/json` (Fluent Bit `loki`, Vector `loki`): `{"streams": [{"stream": {labels},
  "values": [["<unix ns>", "<line>", {structured metadata}?], ...]}]}`.

Each entry becomes one record:

    {"line": "<the log line>", "timestamp": 1764900000123456789,   # Unix ns
     "labels": {"job": "nginx", ...}, "metadata": {"trace_id": "..."},
     "json": {...}}   # the line parsed, only when the line is a JSON object

`labels` are the stream's labels (the protobuf form's `{a="b", c="d"}` string parsed);
`metadata` is the entry's structured metadata, absent when it has none.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from google.protobuf.message import DecodeError

from relay.errors import BadRequest, UnsupportedMedia
from relay.models import Decoded
from relay.stages.compression import decompress
from relay.stages.protocols import Collected
from relay.stages.protocols.loki_proto import PushRequest

PATHS = ("/loki/api/v1/push", "/api/prom/push")
DEFAULT_MAX_SIZE = 16 * 2**20  # server.max_body_size's default; callers pass the configured one

_JSON = msgspec.json.Decoder()
_JSON_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
# Prometheus label syntax, as Loki's parser reads it: name="value" with Go string escapes.
_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})', re.DOTALL)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|[0-7]{3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b",
                   "f": "\f", "v": "\v"}


def media(content_type: str | None, body: bytes) -> str:
    name = (content_type or "").split(";", 1)[0].strip().lower()
    if name in ("application/x-protobuf", "application/protobuf"):
        return "protobuf"
    if name == "application/json":
        return "json"
    if name in ("", "application/octet-stream"):  # Loki itself treats a missing type as protobuf
        return "json" if body.lstrip()[:1] == b"{" else "protobuf"
    raise UnsupportedMedia(f"Content-Type {name!r} is not Loki push; send application/x-protobuf or application/json")


def decode(body: bytes, *, content_type: str | None, path: str = "/loki/api/v1/push",
           max_size: int = DEFAULT_MAX_SIZE) -> Decoded:
    if media(content_type, body) == "json":
        return _decode_json(body)
    return _decode_protobuf(decompress(body, "snappy", max_size) if body else body)


def parse_labels(text: str) -> dict[str, str]:
    """`{job="nginx", path="a\\"b"}` -> {"job": "nginx", "path": 'a"b'}; ValueError naming the spot."""
    text = text.strip()
    if not text.startswith("{"):
        raise ValueError(f"labels must look like {{name=\"value\", ...}}, got {text[:80]!r}")
    labels: dict[str, str] = {}
    pos = 1
    if text[1:].strip() == "}":
        return labels
    while True:
        match = _PAIR.match(text, pos)
        if match is None:
            raise ValueError(f"labels {text[:120]!r} cannot be read at character {pos}")
        labels[match[1]] = _unescape(match[2]) if "\\" in match[2] else match[2]
        pos = match.end()
        if match[3] == "}":
            if text[pos:].strip():
                raise ValueError(f"labels {text[:120]!r} have text after the closing brace")
            return labels


def _unescape(value: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match[1]
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code]
        if code[0] in "uUx":
            return chr(int(code[1:], 16))
        if code[0] in "01234567" and len(code) == 3:
            return chr(int(code, 8))
        raise ValueError(f"unknown escape \\{code} in label value {value[:80]!r}")
    return _ESCAPE.sub(one, value)


def _record(line: str, ns: int, labels: dict[str, str], metadata: dict[str, str] | None) -> dict[str, Any]:
    record: dict[str, Any] = {"line": line, "timestamp": ns, "labels": labels}
    if metadata:
        record["metadata"] = metadata
    if line[:1] == "{":  # a JSON line (Fluent Bit's default line_format): readable field by field
        try:
            parsed = _JSON.decode(line)
        except _JSON_ERRORS:
            parsed = None
        if isinstance(parsed, dict):
            record["json"] = parsed
    return record


def _decode_protobuf(data: bytes) -> Decoded:
    request = PushRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, RecursionError) as exc:
        raise BadRequest(f"body is not a Loki PushRequest in snappy protobuf: {exc or 'truncated or corrupt'}"
                         ) from None
    out = Collected()
    for s, stream in enumerate(request.streams):
        try:
            labels: dict[str, str] | str = parse_labels(stream.labels)
        except ValueError as exc:
            labels = f"streams[{s}].labels: {exc}"
        for entry in stream.entries:
            if isinstance(labels, str):
                out.reject("labels", "invalid", labels)
                continue
            stamp = entry.timestamp
            metadata = {pair.name: pair.value for pair in entry.structuredMetadata} or None
            out.keep(_record(entry.line, stamp.seconds * 1_000_000_000 + stamp.nanos, labels, metadata))
    return out.decoded("loki_protobuf")


def _decode_json(body: bytes) -> Decoded:
    try:
        request = _JSON.decode(body) if body.strip() else {}
    except _JSON_ERRORS as exc:
        raise BadRequest(f"body is not Loki push JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest(f'body must be an object {{"streams": [...]}}, got {type(request).__name__}')
    streams = request.get("streams", [])
    if not isinstance(streams, list):
        raise BadRequest(f"streams must be an array, got {type(streams).__name__}")
    out = Collected()
    for s, stream in enumerate(streams):
        if not isinstance(stream, dict):
            raise BadRequest(f"streams[{s}] must be an object, got {type(stream).__name__}")
        labels, problem = _json_labels(stream, s)
        values = stream.get("values", [])
        if not isinstance(values, list):
            raise BadRequest(f"streams[{s}].values must be an array, got {type(values).__name__}")
        for v, value in enumerate(values):
            if problem:
                out.reject("labels", "invalid", problem)
                continue
            record = _json_value(value, labels)
            if isinstance(record, str):
                out.reject("values", "invalid", f"streams[{s}].values[{v}]: {record}")
            else:
                out.keep(record)
    return out.decoded("loki_json")


def _json_labels(stream: dict[str, Any], s: int) -> tuple[dict[str, str], str | None]:
    labels = stream.get("stream")
    if labels is None and isinstance(stream.get("labels"), str):  # the labels string, as protobuf has it
        try:
            return parse_labels(stream["labels"]), None
        except ValueError as exc:
            return {}, f"streams[{s}].labels: {exc}"
    if labels is None:
        return {}, None
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        return {}, f"streams[{s}].stream must be an object of string labels, got {labels!r:.80}"
    return labels, None


def _json_value(value: Any, labels: dict[str, str]) -> dict[str, Any] | str:
    """["<ns>", "<line>", {metadata}?] -> a record, or why it is not one."""
    if not isinstance(value, list) or len(value) not in (2, 3):
        return f'must be ["<unix ns>", "<line>"] or with structured metadata third, got {value!r:.80}'
    stamp, line = value[0], value[1]
    if not isinstance(line, str):
        return f"the line must be a string, got {type(line).__name__}"
    if isinstance(stamp, bool) or not isinstance(stamp, (str, int)):
        return f"the timestamp must be Unix nanoseconds as a string, got {stamp!r:.40}"
    try:
        ns = int(stamp)
    except ValueError:
        return f"the timestamp must be Unix nanoseconds as a string, got {stamp!r:.40}"
    metadata = value[2] if len(value) == 3 else None
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(m, str) for m in metadata.values())):
        return f"structured metadata must be an object of strings, got {metadata!r:.80}"
    return _record(line, ns, labels, metadata)

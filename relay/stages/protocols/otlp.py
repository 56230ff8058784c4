"""OTLP/HTTP logs (`POST /v1/logs`) -> records; pure.

    decode(body, content_type=..., path=...) -> Decoded

The body (its Content-Encoding already undone) is an ExportLogsServiceRequest, as
protobuf (`application/x-protobuf`, parsed by the `opentelemetry-proto` classes) or as
OTLP/JSON (`application/json`: lowerCamelCase keys, hex trace/span ids, 64-bit integers
as strings; snake_case keys are read too). Each LogRecord becomes one record:

    {"timeUnixNano": 1764900000000000000, "observedTimeUnixNano": ..., "severityNumber": 9,
     "severityText": "INFO", "body": <value>, "attributes": {"http.request.method": "GET", ...},
     "resource": {"service.name": "web", ...}, "scope": {"name": ..., "version": ..., "attributes": {...}},
     "traceId": "<hex>", "spanId": "<hex>", "flags": 1, "eventName": "..."}

Keys whose field is unset (0, "", empty) are left out, so a mapping's fallbacks reach the
next candidate (`timeUnixNano` unset -> `observedTimeUnixNano`). AnyValue trees become plain
JSON values (kvlist -> object, array -> list, bytes -> base64 text), at most MAX_DEPTH
levels deep: a deeper record is rejected on its own, the others go on.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import msgspec
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

from relay.errors import BadRequest, UnsupportedMedia
from relay.models import Decoded
from relay.stages.protocols import Collected

# AnyValue levels (a kvlist in a kvlist is 2); access logs use 1 or 2. Below protobuf's own
# limit of 100 message levels (a kvlist level is 3 of them), which makes a deeper body a 400.
MAX_DEPTH = 20
PATHS = ("/v1/logs",)
PROTOBUF_TYPES = frozenset(["application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf"])
JSON_TYPES = frozenset(["application/json"])

_JSON = msgspec.json.Decoder()
_JSON_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class TooDeep(ValueError):
    """An AnyValue tree nested deeper than MAX_DEPTH."""


def media(content_type: str | None, body: bytes) -> str:
    """"protobuf" or "json", from the Content-Type; sniffed only when none was sent."""
    name = (content_type or "").split(";", 1)[0].strip().lower()
    if name in PROTOBUF_TYPES:
        return "protobuf"
    if name in JSON_TYPES:
        return "json"
    if name in ("", "application/octet-stream"):
        return "json" if body.lstrip()[:1] == b"{" else "protobuf"
    raise UnsupportedMedia(f"Content-Type {name!r} is not OTLP; send application/x-protobuf or application/json")


def decode(body: bytes, *, content_type: str | None, path: str = "/v1/logs", max_size: int = 0) -> Decoded:
    """An ExportLogsServiceRequest body -> one record per LogRecord; 400 when it does not parse."""
    if media(content_type, body) == "json":
        return _decode_json(body)
    return _decode_protobuf(body)


def _too_deep(where: str) -> str:
    return f"{where} nests AnyValues deeper than {MAX_DEPTH} levels"


# --- protobuf ---------------------------------------------------------------------------


def _decode_protobuf(body: bytes) -> Decoded:
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError) as exc:
        raise BadRequest(f"body is not an OTLP ExportLogsServiceRequest in protobuf: {exc or 'truncated or corrupt'}"
                         ) from None
    out = Collected()
    for resource_logs in request.resource_logs:
        try:
            resource: dict[str, Any] | None = _kvs(resource_logs.resource.attributes, 1)
        except TooDeep:
            resource = None
        for scope_logs in resource_logs.scope_logs:
            scope = _scope_pb(scope_logs.scope)
            for log in scope_logs.log_records:
                if resource is None:
                    out.reject("resource", "too_deep", _too_deep("the resource's attributes"))
                    continue
                if scope is None:
                    out.reject("scope", "too_deep", _too_deep("the scope's attributes"))
                    continue
                record: dict[str, Any] = {"attributes": {}, "resource": resource}
                if scope:
                    record["scope"] = scope
                try:
                    record["attributes"] = _kvs(log.attributes, 1)
                    body_value = log.body
                    text = body_value.string_value
                    if text:  # the usual body: one field read, not HasField + WhichOneof + read
                        record["body"] = text
                    elif log.HasField("body"):
                        record["body"] = _any(body_value, 1)
                except TooDeep:
                    out.reject("attributes", "too_deep", _too_deep("the log record"))
                    continue
                _fields_pb(log, record)
                out.keep(record)
    return out.decoded("otlp_protobuf")


def _fields_pb(log: Any, record: dict[str, Any]) -> None:
    if log.time_unix_nano:
        record["timeUnixNano"] = log.time_unix_nano
    if log.observed_time_unix_nano:
        record["observedTimeUnixNano"] = log.observed_time_unix_nano
    if log.severity_number:
        record["severityNumber"] = log.severity_number
    if log.severity_text:
        record["severityText"] = log.severity_text
    if log.trace_id:
        record["traceId"] = log.trace_id.hex()
    if log.span_id:
        record["spanId"] = log.span_id.hex()
    if log.flags:
        record["flags"] = log.flags
    if log.event_name:
        record["eventName"] = log.event_name


def _scope_pb(scope: Any) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if scope.name:
        out["name"] = scope.name
    if scope.version:
        out["version"] = scope.version
    if scope.attributes:
        try:
            out["attributes"] = _kvs(scope.attributes, 1)
        except TooDeep:
            return None
    return out


def _kvs(pairs: Iterable[KeyValue], depth: int) -> dict[str, Any]:
    # Each protobuf field access from Python costs about what a dict lookup and a call do
    # together, and attributes are most of a log record's fields: so strings, most attribute
    # values, are read first, with no WhichOneof (a non-empty string_value can only be the
    # set member of the oneof; "" may be an unset one, so it goes the long way).
    out: dict[str, Any] = {}
    for pair in pairs:
        value = pair.value
        text = value.string_value
        if text:
            out[pair.key] = text
            continue
        number = value.int_value  # the same holds for a non-zero int_value (statuses, sizes)
        out[pair.key] = number if number else _any(value, depth)
    return out


def _any(value: AnyValue, depth: int) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind is None:
        return None
    if depth >= MAX_DEPTH:
        raise TooDeep
    if kind == "kvlist_value":
        return _kvs(value.kvlist_value.values, depth + 1)
    if kind == "array_value":
        return [_any(item, depth + 1) for item in value.array_value.values]
    return base64.b64encode(value.bytes_value).decode("ascii")  # bytes_value, as OTLP/JSON writes it


# --- OTLP/JSON --------------------------------------------------------------------------


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _list(obj: dict[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{where}.{camel} must be an array, got {type(value).__name__}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be an object, got {type(value).__name__}")
    return value


def _decode_json(body: bytes) -> Decoded:
    try:
        request = _JSON.decode(body) if body.strip() else {}
    except _JSON_ERRORS as exc:
        raise BadRequest(f"body is not OTLP/JSON: {exc}") from None
    request = _object(request, "the body")
    out = Collected()
    for r, resource_logs in enumerate(_list(request, "resourceLogs", "resource_logs", "$")):
        where = f"resourceLogs[{r}]"
        resource_logs = _object(resource_logs, where)
        resource_obj = _object(resource_logs.get("resource"), f"{where}.resource")
        resource: dict[str, Any] | str
        try:
            resource = _json_kvs(resource_obj.get("attributes"), 1)
        except (TooDeep, ValueError) as exc:
            resource = f"{where}.resource.attributes: {_reason(exc)}"
        for s, scope_logs in enumerate(_list(resource_logs, "scopeLogs", "scope_logs", where)):
            swhere = f"{where}.scopeLogs[{s}]"
            scope_logs = _object(scope_logs, swhere)
            scope: dict[str, Any] | str
            try:
                scope = _json_scope(_object(scope_logs.get("scope"), f"{swhere}.scope"))
            except (TooDeep, ValueError) as exc:
                scope = f"{swhere}.scope: {_reason(exc)}"
            for log in _list(scope_logs, "logRecords", "log_records", swhere):
                if isinstance(resource, str):
                    out.reject("resource", _kind(resource), resource)
                    continue
                if isinstance(scope, str):
                    out.reject("scope", _kind(scope), scope)
                    continue
                try:
                    record = _json_record(log)
                except (TooDeep, ValueError) as exc:
                    out.reject("logRecord", "too_deep" if isinstance(exc, TooDeep) else "invalid",
                               f"the log record: {_reason(exc)}")
                    continue
                record["resource"] = resource
                if scope:
                    record["scope"] = scope
                out.keep(record)
    return out.decoded("otlp_json")


def _reason(exc: Exception) -> str:
    return f"nests AnyValues deeper than {MAX_DEPTH} levels" if isinstance(exc, TooDeep) else str(exc)


def _kind(message: str) -> str:
    return "too_deep" if "deeper than" in message else "invalid"


def _json_scope(scope: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("name", "version"):
        if scope.get(key):
            out[key] = scope[key]
    if scope.get("attributes"):
        out["attributes"] = _json_kvs(scope["attributes"], 1)
    return out


_INT_FIELDS = (("timeUnixNano", "time_unix_nano"), ("observedTimeUnixNano", "observed_time_unix_nano"),
               ("severityNumber", "severity_number"), ("flags", "flags"))
_TEXT_FIELDS = (("severityText", "severity_text"), ("traceId", "trace_id"), ("spanId", "span_id"),
                ("eventName", "event_name"))


def _json_record(log: Any) -> dict[str, Any]:
    if not isinstance(log, dict):
        raise ValueError(f"must be an object, got {type(log).__name__}")
    record: dict[str, Any] = {"attributes": _json_kvs(log.get("attributes"), 1)}
    body = log.get("body")
    if body is not None:
        record["body"] = _json_any(body, 1)
    for camel, snake in _INT_FIELDS:
        value = _get(log, camel, snake)
        if value is not None and value != "":
            number = _int(value, camel)
            if number:
                record[camel] = number
    for camel, snake in _TEXT_FIELDS:
        value = _get(log, camel, snake)
        if value:
            record[camel] = value if isinstance(value, str) else str(value)
    return record


def _int(value: Any, name: str) -> int:
    # OTLP/JSON writes 64-bit integers as strings and enums (severityNumber) as integers;
    # protobuf's own JSON printer writes enum names, which some clients pass on
    if name == "severityNumber" and isinstance(value, str) and value.startswith("SEVERITY_NUMBER_"):
        try:
            return int(SeverityNumber.Value(value))
        except ValueError:
            raise ValueError(f"severityNumber {value!r} is not a SeverityNumber") from None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{name} must be an integer or a decimal string, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer or a decimal string, got {value!r}") from None


def _json_kvs(pairs: Any, depth: int) -> dict[str, Any]:
    if pairs is None:
        return {}
    if not isinstance(pairs, list):
        raise ValueError(f"attributes must be an array of {{key, value}}, got {type(pairs).__name__}")
    out: dict[str, Any] = {}
    for pair in pairs:
        if not isinstance(pair, dict) or not isinstance(pair.get("key"), str):
            raise ValueError(f"a key-value pair must be an object with a string key, got {pair!r:.80}")
        value = pair.get("value")
        out[pair["key"]] = None if value is None else _json_any(value, depth)
    return out


def _json_any(value: Any, depth: int) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"an AnyValue must be an object, got {value!r:.80}")
    for key, item in value.items():
        if key in ("stringValue", "string_value", "boolValue", "bool_value"):
            return item
        if key in ("intValue", "int_value"):
            return _int(item, "intValue")
        if key in ("doubleValue", "double_value"):
            return float(item) if isinstance(item, (int, float, str)) and not isinstance(item, bool) else item
        if key in ("bytesValue", "bytes_value"):
            return item
        if depth >= MAX_DEPTH:
            raise TooDeep
        if key in ("kvlistValue", "kvlist_value"):
            return _json_kvs(_values(item, "kvlistValue"), depth + 1)
        if key in ("arrayValue", "array_value"):
            items = _values(item, "arrayValue") or []
            if not isinstance(items, list):
                raise ValueError("arrayValue.values must be an array")
            return [_json_any(element, depth + 1) for element in items]
    return None  # {} is an empty AnyValue


def _values(item: Any, name: str) -> Any:
    if not isinstance(item, dict):
        raise ValueError(f"{name} must be an object with `values`, got {item!r:.80}")
    return item.get("values")

"""Bodies of the bench's native-protocol workloads, from the same generated traffic.

    otlp   ExportLogsServiceRequest in protobuf, gzip, as the OTel SDK's OTLP/HTTP exporter
           sends it: one LogRecord per request with HTTP semantic-convention attributes
           (`http.request.method`, `url.path`, `url.query`, `server.address`, ...), a string
           body, severity INFO, time_unix_nano; one resource and scope (mapping preset `otel`)
    loki   logproto.PushRequest, snappy (raw block), as Promtail and Alloy send it: one stream
           `{job="nginx"}` holding the nginx JSON access line of each request (mapping preset
           `loki-nginx`)

Entry n carries `entry_token(n)` in its path, as every workload does (records.py), so the
bench counts losses and duplicates entry by entry. Bodies are built before the timed window.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import cramjam
import msgspec
from isal import igzip
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from relay.stages.protocols.loki_proto import PushRequest
from relay.tools.bench.records import ID_SLOT, base_records, entry_token, query_string

GZIP_LEVEL = 1
_encode = msgspec.json.encode


def _path(record: dict[str, Any], index: int | None) -> str:
    path: str = record["path"]
    return path if index is None else path.replace(ID_SLOT, entry_token(index))


def _attributes(log: Any, record: dict[str, Any], index: int | None) -> None:
    def put(key: str, value: Any) -> None:
        item = log.attributes.add(key=key).value
        if isinstance(value, str):
            item.string_value = value
        elif isinstance(value, float):
            item.double_value = value
        else:
            item.int_value = value

    put("http.request.method", record["method"])
    put("url.path", _path(record, index))
    query = query_string(record["query"])
    if query:
        put("url.query", query)
    put("server.address", record["host"])
    put("http.response.status_code", record["status"])
    put("client.address", record["ip"])
    put("user_agent.original", record["agent"])
    if record["referer"] != "-":
        put("http.request.header.referer", record["referer"])
    put("http.response.body.size", record["size"])
    put("http.server.request.duration", round(record["duration_ms"] / 1000, 6))


_PLACEHOLDER = "\x01\x02\x03\x04\x05\x06\x07\x08"  # as long as an entry token; in no generated text


@functools.cache
def _log_record(base_index: int) -> bytes:
    """Base record i as a serialized LogRecord, its id slot holding _PLACEHOLDER (same length as an id)."""
    record = base_records()[base_index]
    log = LogRecord()
    log.time_unix_nano = log.observed_time_unix_nano = round(record["time"] * 1e9)
    log.severity_number, log.severity_text = 9, "INFO"  # type: ignore[assignment]
    path = record["path"].replace(ID_SLOT, _PLACEHOLDER)
    log.body.string_value = f"{record['method']} {path} {record['status']}"
    _attributes(log, {**record, "path": path}, None)
    data: bytes = log.SerializeToString()
    return data


def otlp_bodies(per_body: int, count: int) -> Iterator[bytes]:
    # Each LogRecord is parsed by protobuf from a cached template with the id put in (setting ten
    # attributes from Python per record would make a pool of bodies take minutes to build).
    n = len(base_records())
    placeholder = _PLACEHOLDER.encode()
    for b in range(count):
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = "shop-web"
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = "shop.access"
        records = scope_logs.log_records
        for index in range(b * per_body, (b + 1) * per_body):
            records.add().MergeFromString(_log_record(index % n).replace(placeholder, entry_token(index).encode()))
        yield igzip.compress(request.SerializeToString(), compresslevel=GZIP_LEVEL, mtime=0)


def nginx_json_line(record: dict[str, Any], index: int) -> str:
    """A base record as nginx `log_format escape=json` writes it (the nginx-json preset's keys)."""
    query = query_string(record["query"])
    return _encode({
        "msec": f"{record['time']:.3f}", "remote_addr": record["ip"], "request_method": record["method"],
        "host": record["host"], "request_uri": _path(record, index) + (f"?{query}" if query else ""),
        "status": record["status"], "body_bytes_sent": record["size"],
        "http_referer": "" if record["referer"] == "-" else record["referer"],
        "http_user_agent": record["agent"], "request_time": f"{record['duration_ms'] / 1000:.3f}",
    }).decode()


def loki_bodies(per_body: int, count: int) -> Iterator[bytes]:
    base = base_records()
    for b in range(count):
        request = PushRequest()
        stream = request.streams.add()
        stream.labels = '{job="nginx", env="prod"}'
        for index in range(b * per_body, (b + 1) * per_body):
            record = base[index % len(base)]
            entry = stream.entries.add()
            nanos = round(record["time"] * 1e9)
            entry.timestamp.seconds, entry.timestamp.nanos = divmod(nanos, 1_000_000_000)
            entry.line = nginx_json_line(record, index)
        yield bytes(cramjam.snappy.compress_raw(request.SerializeToString()))

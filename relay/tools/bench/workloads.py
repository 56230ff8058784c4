"""The workloads of `relay bench`: where each posts, in what shape, and its bodies, built before the timed window.

    fluentbit    1,000 records a body as Fluent Bit's http output sends them (`format json`, gzip)
                 from its built-in nginx parser: remote, host, user, method, path, code, size,
                 referer, agent, all strings, after the `date` key (whole seconds, as nginx's
                 `$time_local` gives them); to /ingest/fluentbit
                 (mapping preset fluentbit-nginx)
    passthrough  1,000 entries a body in the upstream API's own form, a JSON array, gzip, to
                 /v1/logs/custom (mapping `profound`), as an application posts them
    ndjson       the same entries as NDJSON (application/x-ndjson, gzip), as Vector and most
                 HTTP log clients send, to /v1/logs/custom
    single       one upstream-form entry a request, no compression, to /v1/logs/custom
    es_bulk      the fluentbit records as Fluent Bit's `es` output sends them: `_bulk` NDJSON,
                 `{"create":{"_index":"nginx"}}` + record, gzip, to /_bulk (an elasticsearch source
                 with mapping fluentbit-nginx): against `fluentbit`, the cost of the envelope
    splunk_hec   the fluentbit records as concatenated HEC events `{"time":..,"event":{record}}`,
                 gzip, to /services/collector/event (a splunk_hec source, fluentbit-nginx)
    datadog      the fluentbit records as a Datadog intake array with `ddsource`, gzip, to
                 /api/v2/logs (a datadog source, fluentbit-nginx)
    otlp         1,000 log records a body, OTLP/HTTP protobuf, gzip, as the OTel SDK sends them, to
                 /v1/logs (a `protocol = "otlp"` source, preset `otel`; bench/protocol_bodies.py)
    loki         1,000 entries a body, Loki push snappy protobuf as Promtail sends it, nginx JSON
                 lines, to /loki/api/v1/push (a `protocol = "loki"` source, preset `loki-nginx`)

Every entry comes from the generated traffic of bench/records.py: entry n of a run is
base record n % BASE_RECORDS with the unique id `entry_token(n)` in its path, so body b
holds the entries b*per_body .. (b+1)*per_body-1 and what reaches upstream can be
matched, entry by entry, to what the relay acknowledged (records.ids_in).

API (the load generator and other drivers use only these):
    workload(name, records)        -> Workload (path, entries a body, content type, gzip)
    build_bodies(workload, count)  -> the first `count` bodies, bytes, in order
    request_bytes(workload, host, body, token) -> one whole HTTP/1.1 request
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

import msgspec
from isal import igzip

from relay.tools.bench.protocol_bodies import loki_bodies, otlp_bodies
from relay.tools.bench.records import ID_SLOT, base_records, entry_token, query_string

WORKLOADS = ("fluentbit", "passthrough", "ndjson", "single", "es_bulk", "splunk_hec", "datadog", "otlp", "loki")
# The native protocols' workloads: (path, content type, the protocol of the source serving them)
PROTOCOL_WORKLOADS = {
    "es_bulk": ("/_bulk", "application/x-ndjson", "elasticsearch"),
    "splunk_hec": ("/services/collector/event", "application/json", "splunk_hec"),
    "datadog": ("/api/v2/logs", "application/json", "datadog"),
}
# What `relay bench` adds to the relay's sources for them (loopback clients need no token)
PROTOCOL_SOURCES = "".join(f'\n[sources.bench-{protocol}]\nprotocol = "{protocol}"\nmapping = "fluentbit-nginx"\n'
                           'host = "www.example.com"\n' for _, _, protocol in PROTOCOL_WORKLOADS.values())
# otlp and loki: sources with their own presets
PROTOCOL_SOURCES += """
[sources.otlp]
protocol = "otlp"
mapping = "otel"

[sources.loki]
protocol = "loki"
mapping = "loki-nginx"
"""
_BULK_ACTION = b'{"create":{"_index":"nginx"}}\n'
GZIP_LEVEL = 1  # bodies are built before the run; the level only changes bytes in, not decode cost
_SLOT = msgspec.json.encode(ID_SLOT)[1:-1]  # how the id's place looks once JSON-encoded


class Workload(msgspec.Struct, frozen=True):
    name: str
    path: str  # where the relay takes it
    per_body: int  # entries per request
    gzip: bool
    content_type: str = "application/json"


def workload(name: str, records: int = 1000) -> Workload:
    if name == "fluentbit":
        return Workload(name, "/ingest/fluentbit", records, True)
    if name == "passthrough":
        return Workload(name, "/v1/logs/custom", records, True)
    if name == "ndjson":
        return Workload(name, "/v1/logs/custom", records, True, "application/x-ndjson")
    if name == "single":
        return Workload(name, "/v1/logs/custom", 1, False)
    if name in PROTOCOL_WORKLOADS:
        path, content_type, _ = PROTOCOL_WORKLOADS[name]
        return Workload(name, path, records, True, content_type)
    if name == "otlp":
        return Workload(name, "/v1/logs", records, True, "application/x-protobuf")
    if name == "loki":  # snappy is part of the format: no Content-Encoding
        return Workload(name, "/loki/api/v1/push", records, False, "application/x-protobuf")
    raise ValueError(f"unknown workload {name!r}; one of {', '.join(WORKLOADS)}")


def fluentbit_record(record: dict[str, Any]) -> dict[str, Any]:
    """A base record as Fluent Bit's nginx parser + http output send it: strings, `date` first.

    `date` in whole seconds: the parser reads nginx's `$time_local`, which has no fraction, so
    the real Fluent Bit sends `"date":1795593600.0` (fixtures/fluent-bit/nginx-combined.json).
    Until session 9 the bench sent the base record's milliseconds here, which real traffic of
    this shape never carries and which cost the mapping ~1.3 µs an entry of formatting."""
    query = query_string(record["query"])
    return {"date": float(int(record["time"])), "remote": record["ip"], "host": "-", "user": record["user"],
            "method": record["method"], "path": record["path"] + (f"?{query}" if query else ""),
            "code": str(record["status"]), "size": str(record["size"]), "referer": record["referer"],
            "agent": record["agent"]}


def upstream_entry(record: dict[str, Any]) -> dict[str, Any]:
    """A base record as an application posts it straight to the upstream API."""
    millis: int = round(record["time"] * 1000)
    entry: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z",
        "method": record["method"], "host": record["host"], "path": record["path"],
        "status_code": record["status"], "ip": record["ip"], "user_agent": record["agent"],
    }
    if record["query"]:
        entry["query_params"] = record["query"]
    if record["referer"] != "-":
        entry["referer"] = record["referer"]
    entry["bytes_sent"] = record["size"]
    entry["duration_ms"] = record["duration_ms"]
    return entry


@functools.cache
def _templates(shape: str) -> tuple[tuple[bytes, bytes], ...]:
    """Per base record: its JSON encoding cut where the id goes (built once per process)."""
    encode = msgspec.json.encode
    form = fluentbit_record if shape == "fluentbit" else upstream_entry
    out = []
    for record in base_records():
        head, found, tail = encode(form(record)).partition(_SLOT)
        assert found, record["path"]
        out.append((head, tail))
    return tuple(out)


def build_bodies(load: Workload, count: int) -> Iterator[bytes]:
    """The first `count` bodies of `load`; body b holds entries b*per_body .. (b+1)*per_body-1."""
    if load.name in ("otlp", "loki"):
        yield from (otlp_bodies if load.name == "otlp" else loki_bodies)(load.per_body, count)
        return
    templates = _templates("fluentbit" if load.name == "fluentbit" or load.name in PROTOCOL_WORKLOADS else "upstream")
    n = len(templates)
    per = load.per_body
    ndjson = load.content_type != "application/json"
    for b in range(count):
        parts = []
        for index in range(b * per, (b + 1) * per):
            head, tail = templates[index % n]
            parts.append(head + entry_token(index).encode() + tail)
        raw = _envelope(load.name, parts) if load.name in PROTOCOL_WORKLOADS else \
            b"\n".join(parts) + b"\n" if ndjson else b"[" + b",".join(parts) + b"]"
        yield igzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0) if load.gzip else raw  # same bytes every run


def _envelope(name: str, records: list[bytes]) -> bytes:
    """Fluent Bit's nginx records as its native outputs wrap them."""
    if name == "es_bulk":
        return b"".join(_BULK_ACTION + record + b"\n" for record in records)
    if name == "splunk_hec":
        # HEC's time is the record's `date`; the mapping reads `date` first, so it is only the envelope
        return b"".join(b'{"time":1795593600.0,"event":' + record + b"}" for record in records)
    return b"[" + b",".join(record[:-1] + b',"ddsource":"nginx"}' for record in records) + b"]"


def request_bytes(load: Workload, host: str, body: bytes, token: str | None = None) -> bytes:
    head = [f"POST {load.path} HTTP/1.1", f"Host: {host}", f"Content-Type: {load.content_type}",
            f"Content-Length: {len(body)}", "User-Agent: relay-bench"]
    if load.gzip:
        head.append("Content-Encoding: gzip")
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body

"""The workloads of `relay bench`: which path each posts to, and its bodies and requests, built before the timed window.

Every body holds the captured Fluent Bit nginx records with a unique id in `bytes_sent`
(the one field every workload carries and the relay passes through as an integer), so
that what reaches upstream can be matched entry by entry to what was acknowledged.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from isal import igzip

FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "fluent-bit"
FIXTURE_RECORDS = "nginx-combined.json/records.jsonl"
BENCH_HOST = "www.example.com"
WORKLOADS = ("fluentbit", "passthrough", "single")
GZIP_LEVEL = 1  # bodies are built before the run; the level only changes bytes in, not decode cost


def fixtures_dir() -> Path:
    return Path(os.environ.get("RELAY_FIXTURES", FIXTURES.parent)) / "fluent-bit"


class Workload(msgspec.Struct, frozen=True):
    name: str
    path: str  # where the relay takes it
    per_body: int  # entries per request
    gzip: bool


def workload(name: str, records: int = 1000) -> Workload:
    if name == "fluentbit":
        return Workload(name, "/ingest/fluentbit", records, True)
    if name == "passthrough":
        return Workload(name, "/v1/logs/custom", records, True)
    if name == "single":
        return Workload(name, "/v1/logs/custom", 1, False)
    raise ValueError(f"unknown workload {name!r}; one of {', '.join(WORKLOADS)}")


def load_fixture_records() -> list[dict[str, Any]]:
    """The 200 Fluent Bit nginx-parser records of the captured fixture, in body order."""
    text = (fixtures_dir() / FIXTURE_RECORDS).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _upstream_form(record: dict[str, Any]) -> dict[str, Any]:
    """A Fluent Bit nginx record as an app would post it straight to the upstream API."""
    path, _, query = record["path"].partition("?")
    entry: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["date"])),
        "method": record["method"], "host": BENCH_HOST, "path": path,
        "status_code": int(record["code"]), "ip": record["remote"], "user_agent": record["agent"],
    }
    if query:
        entry["query_params"] = dict(part.partition("=")[::2] for part in query.split("&"))
    if record["referer"] != "-":
        entry["referer"] = record["referer"]
    entry["duration_ms"] = 12.5
    entry["bytes_sent"] = 0  # the id goes here
    return entry


def _templates(name: str) -> list[tuple[bytes, bytes]]:
    """Per fixture record: the encoded JSON object split around the id's digits."""
    encode = msgspec.json.encode
    out = []
    for record in load_fixture_records():
        if name == "fluentbit":
            value = encode({**record, "size": "\x00"})  # Fluent Bit's parser keeps numbers as strings
            marker = b'"\\u0000"'
            head, _, tail = value.partition(marker)
            out.append((head + b'"', b'"' + tail))
        else:
            value = encode(_upstream_form(record))
            head, _, tail = value.partition(b'"bytes_sent":0')
            out.append((head + b'"bytes_sent":', tail))
    return out


def build_bodies(load: Workload, count: int) -> Iterator[bytes]:
    """`count` bodies; body b holds the ids b*per_body .. (b+1)*per_body-1."""
    templates = _templates(load.name)
    n = len(templates)
    per = load.per_body
    for b in range(count):
        first = b * per
        parts = [templates[(first + i) % n][0] + str(first + i).encode() + templates[(first + i) % n][1]
                 for i in range(per)]
        raw = b"[" + b",".join(parts) + b"]"
        yield igzip.compress(raw, compresslevel=GZIP_LEVEL) if load.gzip else raw


def request_bytes(load: Workload, host: str, body: bytes, token: str | None = None) -> bytes:
    head = [f"POST {load.path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "User-Agent: relay-bench"]
    if load.gzip:
        head.append("Content-Encoding: gzip")
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body

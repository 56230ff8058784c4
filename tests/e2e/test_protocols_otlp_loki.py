"""OTLP/HTTP logs and Loki push from real clients through a real relay, across a kill -9.

The real Fluent Bit (skipped with PEER_MISSING when absent) tails a generated nginx JSON log
and sends it with its `opentelemetry` or `loki` output; half way the relay is killed with
SIGKILL, lines are appended while it is down, and it is restarted on the same port. Every
line must reach `relay mock-upstream` exactly as the nginx-json mapping maps it: nothing the
relay acknowledged is lost (Fluent Bit may resend a chunk whose answer the kill cut off).
The OpenTelemetry Python SDK's OTLP/HTTP exporter (no kill here: it keeps nothing on disk; across
a kill in test_protocol_clients_kill9.py) sends logging records with HTTP semantic-convention
attributes to an `otel` source.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from relay.mapping import MappingLibrary
from relay.models import RecordContext
from relay.stages.schema import ValidationPolicy, Validator
from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.support import PEER_MISSING, MockUpstream, fluent_bit_binary, wait_until

TOKEN = "protocols-e2e-token"
SOURCES = f"""\
[sources.otlp]
protocol = "otlp"
mapping = "otlp-nginx-json"
tokens = ["{TOKEN}"]

[sources.loki]
protocol = "loki"
mapping = "loki-nginx"
tokens = ["{TOKEN}-loki"]

[sources.otel]
protocol = "otlp"
mapping = "otel"
tokens = ["{TOKEN}-otel"]
"""
TEMPLATE = {"time_iso8601": "", "remote_addr": "203.0.113.7", "request_method": "GET", "host": "www.example.com",
            "request_uri": "", "status": 200, "body_bytes_sent": 512, "http_referer": "",
            "http_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", "request_time": 0.071,
            "http_x_forwarded_for": ""}
OUTPUTS = {
    "otlp": ["Name opentelemetry", "Logs_uri /v1/logs", "Compress gzip", "Batch_Size 100000",
             f"Header Authorization Bearer {TOKEN}"],
    "loki": ["Name loki", "Labels job=nginx", "Line_Format json", f"Bearer_Token {TOKEN}-loki"],
}


def lines(start: int, count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + count):
        minute, second = divmod(i // 4, 60)
        out.append({**TEMPLATE, "time_iso8601": f"2026-11-25T09:{minute % 60:02d}:{second:02d}+01:00",
                    "request_uri": f"/e2e/{i}?q={i % 7}", "status": (200, 404, 301)[i % 3],
                    "request_method": ("GET", "POST")[i % 2]})
    return out


def expected(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    validator = Validator(ValidationPolicy(now=datetime.fromisoformat(PINNED_NOW).timestamp()))
    result = MappingLibrary({}).get("nginx-json").map_records(records, RecordContext(source="x"), validator)
    assert not result.rejections
    return {entry.path: msgspec.to_builtins(entry) for entry in result.entries}


def append(log: Path, records: list[dict[str, Any]]) -> None:
    with log.open("a") as fh:
        fh.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))


def delivered(upstream: MockUpstream) -> dict[str, dict[str, Any]]:
    return {entry["path"]: entry for entry in upstream.entries()}


class FluentBit:
    def __init__(self, tmp: Path, output: list[str], port: int, log: Path) -> None:
        (tmp / "parsers.conf").write_text("[PARSER]\n    Name nginx_json\n    Format json\n")
        conf = ["[SERVICE]", "    Flush 1", "    Grace 1", "    Log_Level info", "    Parsers_File parsers.conf",
                f"    storage.path {tmp / 'storage'}", "    scheduler.base 1", "    scheduler.cap 2",
                "[INPUT]", "    Name tail", "    Tag nginx", f"    Path {log}", "    Read_from_Head On",
                f"    DB {tmp / 'tail.db'}", "    Parser nginx_json", "    Refresh_Interval 1",
                "    storage.type filesystem",
                "[OUTPUT]", "    Match *", "    Host 127.0.0.1", f"    Port {port}", "    Retry_Limit no_limits",
                *(f"    {line}" for line in output)]
        (tmp / "fluent-bit.conf").write_text("\n".join(conf) + "\n")
        self.log_path = tmp / "fluent-bit.log"
        self.proc = subprocess.Popen([str(fluent_bit_binary()), "-c", str(tmp / "fluent-bit.conf")], cwd=tmp,
                                     stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-30:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[MockUpstream, Relay]]:
    upstream = MockUpstream(tmp_path, api_keys=["k"]).start()
    relay = Relay(tmp_path, sink_toml("up", upstream.url, "k"), sources=SOURCES).start()
    try:
        yield upstream, relay
    finally:
        relay.stop()
        upstream.stop()


@pytest.mark.skipif(fluent_bit_binary() is None, reason=PEER_MISSING)
@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_fluent_bit_output_across_a_relay_kill(output: str, stack: tuple[MockUpstream, Relay],
                                               tmp_path: Path) -> None:
    upstream, relay = stack
    log = tmp_path / "access.json"
    records = lines(0, 3000)
    append(log, records[:1000])
    (tmp_path / "fb").mkdir()
    fluent_bit = FluentBit(tmp_path / "fb", OUTPUTS[output], relay.port, log)
    try:
        wait_until(lambda: len(delivered(upstream)) >= 1000, timeout=60,
                   message=lambda: f"first 1000 lines\n{fluent_bit.tail()}\n{relay.log_tail()}")
        append(log, records[1000:2000])
        relay.kill9()  # while Fluent Bit reads and sends the second thousand
        append(log, records[2000:])
        relay.start()  # same port: Fluent Bit retries what it did not get a 2xx for
        want = expected(records)
        wait_until(lambda: len(delivered(upstream)) >= len(want), timeout=90,
                   message=lambda: f"{len(delivered(upstream))} of {len(want)} lines\n{fluent_bit.tail()}")
    finally:
        fluent_bit.stop()
    got = delivered(upstream)
    assert got.keys() == want.keys()
    assert [got[path] for path in want] == list(want.values())  # every field exactly as mapped


def test_otel_sdk_exporter_logging_records(stack: tuple[MockUpstream, Relay]) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    upstream, relay = stack
    provider = LoggerProvider()
    exporter = OTLPLogExporter(endpoint=f"{relay.base_url}/v1/logs", compression=Compression.Gzip,
                               headers={"Authorization": f"Bearer {TOKEN}-otel"})
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=100))
    logger = logging.getLogger("relay.e2e.otel")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    # the relay's clock is pinned to the fixtures' day: date the records (the SDK sends
    # LogRecord.created as time_unix_nano) so they fall in its window
    handler.addFilter(lambda record: setattr(record, "created", 1795593600.5) or True)
    logger.addHandler(handler)
    try:
        for i in range(250):
            logger.info("request %d", i, extra={
                "http.request.method": "GET", "url.path": f"/sdk/{i}", "url.query": "a=1",
                "server.address": "shop.example.com", "http.response.status_code": 200,
                "client.address": "198.51.100.4", "user_agent.original": "python-requests/2.32",
                "http.server.request.duration": 0.002})
        assert provider.force_flush(30_000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    wait_until(lambda: len(delivered(upstream)) >= 250, timeout=30, message=relay.log_tail)
    got = delivered(upstream)
    assert sorted(got) == sorted(f"/sdk/{i}" for i in range(250))
    one = got["/sdk/7"]
    assert (one["host"], one["query_params"], one["ip"], one["duration_ms"], one["timestamp"]) == \
        ("shop.example.com", {"a": "1"}, "198.51.100.4", 2.0, "2026-11-25T08:00:00.500Z")

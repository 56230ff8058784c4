"""The official Python clients across a `kill -9` of the relay mid-stream.

Each test drives one client library against a relay source of its protocol (real `relay serve`,
real `relay mock-upstream`): the `elasticsearch` 9 bulk helper, plain Splunk HEC requests with
`requests`, and the OpenTelemetry SDK 1.45's OTLP/HTTP exporter. Once some requests are
acknowledged, and while one is in flight, the relay is killed with SIGKILL and restarted on the
same port and queue; the client carries on as a deployment would (the ES and HEC loops resend a
chunk that got no answer, as Filebeat, Logstash or a HEC forwarder retry; the OTel exporter
retries connection errors itself with backoff, and drops a batch whose retries run out: that batch
was never acknowledged, so it is the client's loss, not the relay's).

What must hold: every record of an acknowledged request arrives upstream exactly as the mapping
maps it; nothing arrives that was not sent; and a record arrives more than once only if its
request was sent more than once (an attempt went unanswered at the kill) or its upstream batch was
in flight at the kill (SPEC: duplicates only from batches in flight at a crash): its first copy
came from the killed relay (the restarted one sends with another API key, so upstream's record
says which) and at most the sink's `concurrency` batches are sent again.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import requests

from relay.mapping import MappingLibrary
from relay.models import RecordContext
from relay.stages.protocols import otlp
from relay.stages.schema import ValidationPolicy, Validator
from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.support import MockUpstream, wait_until

KEY = "test-key"
RESTARTED_KEY = "restarted-key"  # the sink's key after the restart: upstream tells the two relays apart
TOKEN = "clients-kill9-token"
RECORDS = 3000
CHUNK = 100  # records per request: 30 requests
KILL_AFTER = 12  # acknowledged requests before the kill
SINK_CONCURRENCY = 4  # the sink's default `concurrency`: batches in flight upstream at once
# upstream batches of 100, not 1,000: the killed relay has delivered several, so a restart that
# sent delivered batches again would exceed the SINK_CONCURRENCY it may resend
BATCH = 100
ENVELOPE = {"time": 1795593600, "host": "web-1", "sourcetype": "nginx:json"}  # each HEC event's
SOURCES = f"""\
[sources.es]
protocol = "elasticsearch"
mapping = "nginx-json"
tokens = ["{TOKEN}-es"]

[sources.hec]
protocol = "splunk_hec"
mapping = "hec-nginx"
tokens = ["{TOKEN}-hec"]

[sources.otel]
protocol = "otlp"
mapping = "otel"
tokens = ["{TOKEN}-otel"]
"""


def line(i: int) -> dict[str, Any]:
    """One nginx JSON access-log record (`log_format escape=json`), its path unique."""
    return {"time_iso8601": f"2026-11-25T09:{i // 60 % 60:02d}:{i % 60:02d}+01:00",
            "remote_addr": f"198.51.100.{i % 250 + 1}", "request_method": ("GET", "POST")[i % 2],
            "host": "shop.example.com", "request_uri": f"/client/{i}?page={i % 9}", "status": (200, 404, 301)[i % 3],
            "body_bytes_sent": i, "http_referer": "", "http_user_agent": f"agent/{i % 13}",
            "request_time": 0.001 * (i % 100), "http_x_forwarded_for": ""}


def validator() -> Validator:
    return Validator(ValidationPolicy(now=datetime.fromisoformat(PINNED_NOW).timestamp()))


def mapped(mapping: str, records: list[Any]) -> dict[str, dict[str, Any]]:
    """path -> the entry `mapping` makes of the record, as the relay validates it."""
    result = MappingLibrary({}).get(mapping).map_records(records, RecordContext(source="t"), validator())
    assert not result.rejections, result.rejections
    return {entry.path: msgspec.to_builtins(entry) for entry in result.entries}


@dataclass
class Sent:
    """What the client knows: per record path, whether a request carrying it was acknowledged
    and whether one went unanswered (so the relay may have committed it more than once)."""

    acknowledged: set[str] = field(default_factory=set)
    resent: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)  # the unanswered attempts' errors


class ChunkClient(threading.Thread):
    """Sends the chunks in order through `send` (which raises unless the request was
    acknowledged), resending a chunk after a connection error until it is acknowledged."""

    def __init__(self, chunks: list[list[dict[str, Any]]], send: Callable[[list[dict[str, Any]]], None],
                 retryable: tuple[type[BaseException], ...]) -> None:
        super().__init__(name="client", daemon=True)
        self.chunks, self.send, self.retryable = chunks, send, retryable
        self.sent = Sent()
        self.acked = 0  # chunks acknowledged so far
        self.in_flight = threading.Event()
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for chunk in self.chunks:
                paths = {path_of(record) for record in chunk}
                backoff = 0.05
                while not self.halt.is_set():
                    self.in_flight.set()
                    try:
                        self.send(chunk)
                    except self.retryable as exc:
                        self.in_flight.clear()
                        self.sent.failures.append(repr(exc))
                        self.sent.resent |= paths
                        # the shipper's own retry backoff (Filebeat: 1 s doubling), shortened
                        self.halt.wait(backoff)
                        backoff = min(backoff * 2, 0.5)
                        continue
                    self.in_flight.clear()
                    self.sent.acknowledged |= paths
                    self.acked += 1
                    break
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def finish(self, timeout: float) -> Sent:
        self.join(timeout)
        self.halt.set()
        self.join(10)
        assert not self.is_alive(), "the client did not stop"
        if self.error:
            raise self.error
        return self.sent


def path_of(record: dict[str, Any]) -> str:
    return str(record["request_uri"]).split("?")[0]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[MockUpstream, Relay]]:
    with MockUpstream(tmp_path, api_keys=[KEY, RESTARTED_KEY]) as upstream, \
            Relay(tmp_path, sink_toml("up", upstream.url, KEY, batch_max_entries=BATCH), sources=SOURCES) as relay:
        yield upstream, relay


def kill_and_restart(relay: Relay, acknowledged: Callable[[], int], in_flight: threading.Event) -> int:
    """SIGKILL once KILL_AFTER requests are acknowledged and one is in the client's hands,
    restart on the same port and queue; returns how many were acknowledged at the kill.

    The restarted relay sends with another API key, so upstream's record says which relay sent
    each batch (the mock may record a batch of the killed relay after its death, so time cannot)."""
    wait_until(lambda: acknowledged() >= KILL_AFTER and in_flight.is_set(), timeout=60, interval=0.005,
               message=lambda: f"{acknowledged()} requests acknowledged\n{relay.log_tail()}")
    relay.kill9()
    at_kill = acknowledged()
    config = relay.config_path.read_text()
    assert config.count(f'"{KEY}"') == 1
    relay.config_path.write_text(config.replace(f'"{KEY}"', f'"{RESTARTED_KEY}"'))
    relay.start()
    return at_kill


def across_a_kill(relay: Relay, lines: list[dict[str, Any]], send: Callable[[list[dict[str, Any]]], None],
                  retryable: tuple[type[BaseException], ...]) -> Sent:
    """Every line sent in chunks through `send` (a chunk resent after `retryable`, as shippers do)
    while the relay is killed -9 mid-stream and restarted."""
    client = ChunkClient([lines[i:i + CHUNK] for i in range(0, RECORDS, CHUNK)], send, retryable)
    try:
        client.start()
        at_kill = kill_and_restart(relay, lambda: client.acked, client.in_flight)
        sent = client.finish(60)
    finally:
        client.halt.set()
    assert at_kill < RECORDS // CHUNK and sent.failures, "the kill did not land mid-stream"
    assert len(sent.acknowledged) == RECORDS
    return sent


def check(upstream: MockUpstream, relay: Relay, want: dict[str, dict[str, Any]], sent: Sent) -> None:
    """Everything acknowledged arrived exactly as mapped; duplicates only where allowed."""
    queue_empty = 'relay_queue_entries{sink="up"} 0.0'
    # delivered (upstream records a batch before it answers) is no longer queued
    wait_until(lambda: queue_empty in relay.metrics(), timeout=60,
               message=lambda: f"{len(upstream.entries())} entries upstream\n{relay.log_tail()}")
    copies: dict[str, list[int]] = defaultdict(list)  # path -> the upstream requests (by number) holding it
    batches = upstream.records()
    for number, batch in enumerate(batches):
        for entry in batch["entries"]:
            assert entry["path"] in want, f"never sent: {entry}"
            assert entry == want[entry["path"]], f"not as mapped: {entry} != {want[entry['path']]}"
            copies[entry["path"]].append(number)
    assert sent.acknowledged <= copies.keys(), f"acknowledged but lost: {sorted(sent.acknowledged - copies.keys())[:5]}"
    # A record sent once may arrive twice only if the killed relay had its batch in flight
    # upstream, one of at most `concurrency` such batches (each send loop deletes a delivered
    # batch before it takes the next): its first copy came from the killed relay.
    twice = {path: numbers for path, numbers in copies.items() if len(numbers) > 1 and path not in sent.resent}
    shown = lambda path: f"{path} in upstream requests {[(n, batches[n]['key'], batches[n]['t']) for n in twice[path]]}"
    after = [shown(path) for path, numbers in twice.items() if batches[min(numbers)]["key"] != KEY]
    assert not after, f"sent once, delivered twice by the restarted relay: {after[:3]}"
    first = {min(numbers) for numbers in twice.values()}
    assert len(first) <= SINK_CONCURRENCY, f"{len(first)} upstream batches of the killed relay sent again"


def test_elasticsearch_bulk_helper_across_a_kill_9(stack: tuple[MockUpstream, Relay]) -> None:
    from elasticsearch import ConnectionError, ConnectionTimeout, Elasticsearch, helpers

    upstream, relay = stack
    lines = [line(i) for i in range(RECORDS)]
    # max_retries=0: the transport would resend on its own, unseen; the loop's resends are counted
    es = Elasticsearch(relay.base_url, basic_auth=("filebeat", f"{TOKEN}-es"), max_retries=0, request_timeout=10)

    def send(chunk: list[dict[str, Any]]) -> None:
        ok, errors = helpers.bulk(es, ({"_op_type": "create", "_index": "nginx", **record} for record in chunk),
                                  chunk_size=len(chunk), max_retries=0, raise_on_error=False)
        assert (ok, errors) == (len(chunk), []), errors

    try:
        sent = across_a_kill(relay, lines, send, (ConnectionError, ConnectionTimeout))
    finally:
        es.close()
    check(upstream, relay, mapped("nginx-json", lines), sent)


def test_plain_hec_requests_across_a_kill_9(stack: tuple[MockUpstream, Relay]) -> None:
    upstream, relay = stack
    lines = [line(i) for i in range(RECORDS)]
    session = requests.Session()
    session.trust_env = False  # never through a proxy from the environment

    def send(chunk: list[dict[str, Any]]) -> None:
        events = (json.dumps({**ENVELOPE, "event": record}) for record in chunk)
        answer = session.post(f"{relay.base_url}/services/collector/event",
                              data=gzip.compress("\n".join(events).encode(), compresslevel=1), timeout=10,
                              headers={"Authorization": f"Splunk {TOKEN}-hec", "Content-Encoding": "gzip"})
        assert (answer.status_code, answer.json()) == (200, {"text": "Success", "code": 0}), answer.text

    try:
        sent = across_a_kill(relay, lines, send, (requests.ConnectionError, requests.Timeout))
    finally:
        session.close()
    # the record a HEC mapping reads: the event, with the envelope under `hec` (README)
    check(upstream, relay, mapped("hec-nginx", [{**record, "hec": ENVELOPE} for record in lines]), sent)


class RecordingSession(requests.Session):
    """The exporter's HTTP session (its public `session` option), noting each attempt's outcome."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self.in_flight = threading.Event()
        self.outcomes: list[str] = []  # this export's attempts: a status, or the error

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.in_flight.set()
        try:
            response = super().request(*args, **kwargs)
        except Exception as exc:
            self.outcomes.append(repr(exc))
            raise
        finally:
            self.in_flight.clear()
        self.outcomes.append(str(response.status_code))
        return response


@dataclass
class Export:
    body: bytes  # the ExportLogsServiceRequest, as the exporter serializes it
    success: bool
    attempts: list[str]


def test_otel_sdk_exporter_across_a_kill_9(stack: tuple[MockUpstream, Relay]) -> None:
    import logging

    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult

    upstream, relay = stack
    session = RecordingSession()
    exports: list[Export] = []

    class Exporter(OTLPLogExporter):
        """Keeps each batch's bytes and whether the SDK got SUCCESS for it: only those were acknowledged."""

        def export(self, batch: Any) -> LogRecordExportResult:
            session.outcomes = []
            result = super().export(batch)
            exports.append(Export(encode_logs(batch).SerializeToString(), result is LogRecordExportResult.SUCCESS,
                                  session.outcomes))
            return result

    # the exporter's own retries: connection errors retried once at once, then after 1, 2, 4, 8 s
    # within `timeout` (at most 6 attempts): 60 s lets all of them run, 31 s of outage
    exporter = Exporter(endpoint=f"{relay.base_url}/v1/logs", compression=Compression.Gzip, timeout=60,
                        headers={"Authorization": f"Bearer {TOKEN}-otel"}, session=session)
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=CHUNK,
                                                              max_queue_size=RECORDS + CHUNK,
                                                              schedule_delay_millis=100))
    logger = logging.getLogger("relay.e2e.otel-kill9")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    # the relay's clock is pinned to the fixtures' day: date the records (the SDK sends
    # LogRecord.created as time_unix_nano) so they fall in its window
    handler.addFilter(lambda record: setattr(record, "created", 1795593600.5 + record.args[0] / 1000) or True)
    logger.addHandler(handler)
    try:
        for i in range(RECORDS):
            logger.info("request %d", i, extra={
                "http.request.method": ("GET", "POST")[i % 2], "url.path": f"/sdk/{i}", "url.query": f"page={i % 9}",
                "server.address": "shop.example.com", "http.response.status_code": (200, 404, 301)[i % 3],
                "client.address": f"198.51.100.{i % 250 + 1}", "user_agent.original": f"agent/{i % 13}",
                "http.server.request.duration": 0.001 * (i % 100)})
        succeeded = lambda: sum(export.success for export in exports)
        at_kill = kill_and_restart(relay, succeeded, session.in_flight)
        assert provider.force_flush(90_000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    assert sum(len(export.attempts) for export in exports) > len(exports), "no export saw the kill"
    assert succeeded() > at_kill, "nothing was exported after the restart"
    # what the relay's mapping reads of each batch: the records its OTLP decoder makes of the bytes
    batches = [(export, otlp.decode(export.body, content_type="application/x-protobuf").records) for export in exports]
    paths = lambda wanted: {r["attributes"]["url.path"] for export, rs in batches if wanted(export) for r in rs}
    sent = Sent(acknowledged=paths(lambda export: export.success), resent=paths(lambda export: len(export.attempts) > 1),
                failures=[a for export in exports for a in export.attempts if not a.startswith("2")])
    records = [record for _, rs in batches for record in rs]
    assert Counter(r["attributes"]["url.path"] for r in records) == Counter(f"/sdk/{i}" for i in range(RECORDS))
    check(upstream, relay, mapped("otel", records), sent)

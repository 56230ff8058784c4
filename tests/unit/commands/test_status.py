"""`relay status`: figures from two scrapes, the rendering, and --once against a served metrics text.

The metrics texts are made by the relay's own `telemetry.Metrics`, so a renamed metric
breaks these tests instead of silently blanking a column of the view.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from relay.__main__ import COMMANDS
from relay.commands import status
from relay.commands.status import render_text
from relay.commands.status_figures import Scrape, drain_seconds, histogram_quantile, summarize
from relay.telemetry import Metrics
from tests.e2e.harness import Relay, entries, sink_toml
from tests.support import MockUpstream, Process, free_port, http_request, wait_until


class FakeRelay:
    """A Metrics registry plus the gauges Runtime._gauges would yield, settable per sink."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.queue: dict[str, tuple[float, float]] = {"profound": (0, 0)}  # sink -> (entries, bytes)
        self.up: dict[str, bool] = {"profound": True}
        self.oldest: dict[str, float] = {}  # sink -> age in seconds of its oldest queued entry
        self.quarantined = 0
        self.max_bytes = 4 * 2**30
        self.metrics.add_gauges(self._gauges)

    def _gauges(self) -> Iterator[tuple[str, str, dict[str, str], float]]:
        for sink, (count, size) in self.queue.items():
            yield "relay_queue_entries", "queued", {"sink": sink}, count
            yield "relay_queue_bytes", "queued bytes", {"sink": sink}, size
            yield "relay_sink_up", "up", {"sink": sink}, float(self.up.get(sink, True))
            yield "relay_queue_oldest_entry_age_seconds", "age", {"sink": sink}, self.oldest.get(sink, 0.0)
        yield "relay_queue_used_bytes", "used", {}, sum(size for _, size in self.queue.values())
        yield "relay_queue_max_bytes", "budget", {}, self.max_bytes
        yield "relay_queue_quarantined_items", "failed checksums since start", {}, self.quarantined

    def text(self) -> str:
        return generate_latest(self.metrics.registry).decode()

    def scrape(self, at: float, ready: bool | None = True, reasons: tuple[str, ...] = ()) -> Scrape:
        return Scrape.parse(self.text(), at, ready, reasons, url="http://relay:8080")

    def traffic(self, source: str = "fluentbit", requests: int = 0, accepted: int = 0, rejected: int = 0,
                reason: str = "status_code", filtered: int = 0, body_bytes: int = 0) -> None:
        m = self.metrics
        m.requests.labels(source, "200").inc(requests)
        m.entries_accepted.labels(source).inc(accepted)
        m.entries_rejected.labels(source, reason).inc(rejected)
        m.entries_filtered.labels(source).inc(filtered)
        m.received_bytes.labels(source).inc(body_bytes)

    def deliver(self, sink: str = "profound", entries: int = 0, batches: int = 1, seconds: float = 0.02) -> None:
        m = self.metrics
        m.batches.labels(sink, "200").inc(batches)
        m.entries_delivered.labels(sink).inc(entries)
        for _ in range(batches):
            m.latency.labels(sink).observe(seconds)


def source_row(view: status.Status, name: str) -> status.SourceFigures:
    return next(s for s in view.sources if s.name == name)


def sink_row(view: status.Status, name: str) -> status.SinkFigures:
    return next(s for s in view.sinks if s.name == name)


def test_per_source_rates_are_counter_deltas_over_the_interval() -> None:
    relay = FakeRelay()
    relay.traffic(requests=10, accepted=1000, rejected=3, filtered=1, body_bytes=50_000)
    first = relay.scrape(at=100.0)
    relay.traffic(requests=20, accepted=400, rejected=10, filtered=4, body_bytes=8192)
    view = summarize(relay.scrape(at=102.0), first)

    row = source_row(view, "fluentbit")
    assert view.interval == pytest.approx(2.0)
    assert row.requests_rate == pytest.approx(10.0)
    assert row.accepted_rate == pytest.approx(200.0)
    assert row.rejected_rate == pytest.approx(5.0)
    assert row.filtered_rate == pytest.approx(2.0)
    assert row.bytes_rate == pytest.approx(4096.0)
    assert (row.requests, row.accepted, row.rejected, row.filtered) == (30, 1400, 13, 5)


def test_one_scrape_gives_totals_and_no_rates() -> None:
    relay = FakeRelay()
    relay.traffic(requests=2, accepted=7)
    view = summarize(relay.scrape(at=5.0))
    row = source_row(view, "fluentbit")
    assert view.interval is None
    assert row.accepted == 7 and row.accepted_rate is None
    assert sink_row(view, "profound").delivered_rate is None


def test_drain_estimate_is_backlog_over_delivery_rate_with_bar_against_the_peak() -> None:
    relay = FakeRelay()
    relay.queue["profound"] = (10_000, 5 * 2**20)
    first = relay.scrape(at=0.0)
    relay.deliver(entries=4000, batches=4)
    relay.queue["profound"] = (6000, 3 * 2**20)
    view = summarize(relay.scrape(at=2.0), first, peaks={"profound": 12_000})

    sink = sink_row(view, "profound")
    assert sink.entries == 6000 and sink.bytes == 3 * 2**20
    assert sink.delivered_rate == pytest.approx(2000.0)
    assert sink.drain_seconds == pytest.approx(3.0)  # 6000 left at 2000/s
    assert sink.drained == pytest.approx(0.5)  # 6000 of a peak of 12000 still queued
    assert view.used_bytes == 3 * 2**20 and view.max_bytes == 4 * 2**30


def test_a_backlog_that_nothing_delivers_is_stalled_and_an_empty_queue_is_drained() -> None:
    assert drain_seconds(500, 0.0) is None
    assert drain_seconds(500, None) is None
    assert drain_seconds(0, 0.0) == 0.0
    relay = FakeRelay()
    relay.queue["profound"] = (500, 1000)
    relay.up["profound"] = False
    first = relay.scrape(at=0.0)
    text = render_text(summarize(relay.scrape(at=1.0), first))
    assert re.search(r"profound\s+backing off\s+500\b.*stalled", text), text


def test_sink_state_comes_from_sink_up_and_401_means_paused() -> None:
    relay = FakeRelay()
    relay.queue["backup"] = (0, 0)
    relay.up["profound"] = False
    first = relay.scrape(at=0.0)
    relay.metrics.batches.labels("profound", "401").inc(3)
    view = summarize(relay.scrape(at=1.0), first)
    assert sink_row(view, "profound").state == "paused"
    assert sink_row(view, "backup").state == "running"


def test_errors_list_only_what_grew_in_the_interval() -> None:
    relay = FakeRelay()
    relay.metrics.batches.labels("profound", "503").inc(50)  # before the first scrape: not shown
    first = relay.scrape(at=0.0)
    m = relay.metrics
    m.requests.labels("fluentbit", "401").inc(2)
    m.requests.labels("_unknown", "404").inc(1)
    m.entries_rejected.labels("fluentbit", "missing_host").inc(4)
    m.batches.labels("profound", "503").inc(3)
    m.batches.labels("profound", "0").inc(1)
    m.retries.labels("profound", "503").inc(3)
    m.upstream_rejected.labels("profound").inc(6)
    m.dead_lettered.labels("profound").inc(1)
    relay.quarantined += 1
    errors = summarize(relay.scrape(at=1.0), first).errors

    assert "fluentbit: requests answered 401: 2" in errors
    assert "requests to unknown paths answered 404: 1" in errors
    assert "fluentbit: entries rejected (missing_host): 4" in errors
    assert "profound: upstream answered 503 for 3 batches" in errors
    assert "profound: upstream got no answer for 1 batches" in errors
    assert "profound: retries (503): 3" in errors
    assert "profound: entries upstream skipped as invalid: 6" in errors
    assert "profound: entries moved to the dead-letter store: 1" in errors
    assert "queue items that failed their checksum: 1" in errors
    assert len(errors) == 9, errors


def test_a_counter_that_went_down_is_a_restart_and_counts_from_zero() -> None:
    before = FakeRelay()
    before.traffic(accepted=5000)
    first = before.scrape(at=0.0)
    after = FakeRelay()  # the relay restarted between the scrapes
    after.traffic(accepted=300)
    row = source_row(summarize(after.scrape(at=3.0), first), "fluentbit")
    assert row.accepted_rate == pytest.approx(100.0)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.95)
    assert histogram_quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None
    assert histogram_quantile(0.99, {1.0: 1.0, float("inf"): 10.0}) == pytest.approx(1.0)


def test_latency_quantiles_cover_only_the_interval() -> None:
    relay = FakeRelay()
    relay.deliver(batches=100, seconds=4.0)  # slow, but before the first scrape
    first = relay.scrape(at=0.0)
    relay.deliver(entries=100, batches=10, seconds=0.02)
    sink = sink_row(summarize(relay.scrape(at=1.0), first), "profound")
    assert sink.p50 is not None and 0.01 < sink.p50 <= 0.025
    assert sink.p99 is not None and sink.p99 <= 0.025


def test_plain_rendering_shows_the_figures_without_ansi() -> None:
    relay = FakeRelay()
    relay.queue["profound"] = (3000, 2 * 2**20)
    relay.oldest["profound"] = 95.0
    first = relay.scrape(at=0.0)
    relay.traffic(requests=4, accepted=2000, rejected=20)
    relay.deliver(entries=1000, batches=1)
    text = render_text(summarize(relay.scrape(at=2.0), first, peaks={"profound": 4000}))

    assert "\x1b[" not in text
    assert "http://relay:8080  ready" in text
    assert re.search(r"fluentbit\s+2\.0/s\s+1,000/s\s+10\.0/s\s+0\.0/s", text), text
    assert re.search(r"profound\s+running\s+3,000\s+2\.0 MiB\s+1m35s\s+500/s\s+6s\s+#+\.+\s+25%", text), text
    assert "disk budget" in text and "2.0 MiB of 4.0 GiB queued" in text
    assert "fluentbit: entries rejected (status_code): 20" in text


def test_not_ready_shows_the_reasons() -> None:
    relay = FakeRelay()
    text = render_text(summarize(relay.scrape(at=0.0, ready=False, reasons=("shutting down",))))
    assert "NOT READY: shutting down" in text


def test_status_is_a_registered_command() -> None:
    assert COMMANDS["status"][0] == "relay.commands.status"


# --- --once against an HTTP server ---------------------------------------------------------------


class _Server:
    """A stand-in relay: serves whatever metrics text and readiness the test sets."""

    def __init__(self, relay: FakeRelay) -> None:
        self.relay = relay
        self.ready: tuple[int, dict[str, Any]] = (200, {"status": "ready"})
        self.scrapes = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    outer.scrapes += 1
                    outer.relay.traffic(requests=1, accepted=100)  # traffic between two scrapes
                    self._send(200, outer.relay.text().encode(), "text/plain; version=0.0.4")
                elif self.path == "/readyz":
                    code, body = outer.ready
                    self._send(code, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def once(url: str, interval: float) -> int:
    return status.run(argparse.Namespace(url=url, once=True, interval=interval))


def test_once_prints_one_plain_snapshot_from_a_served_relay(capsys: pytest.CaptureFixture[str]) -> None:
    with _Server(FakeRelay()) as server:
        server.ready = (503, {"status": "not ready", "reasons": ["disk budget nearly spent"]})
        assert once(server.url + "/metrics", interval=0.2) == 0
    out = capsys.readouterr().out
    assert server.scrapes == 2
    assert "\x1b[" not in out
    assert f"relay {server.url}  NOT READY: disk budget nearly spent" in out
    assert re.search(r"fluentbit\s+[\d.]+/s\s+[\d.,]+/s", out), out  # rates, not "-"
    assert re.search(r"fluentbit\s.*\b200\s+0\s+0\s*$", out, re.M), out  # totals: 2 scrapes x 100 accepted
    assert re.search(r"profound\s+running\s+0\s+0 B\b.*empty", out), out


def test_once_with_interval_zero_scrapes_once(capsys: pytest.CaptureFixture[str]) -> None:
    with _Server(FakeRelay()) as server:
        assert once(server.url, interval=0) == 0
    assert server.scrapes == 1
    assert "one scrape" in capsys.readouterr().out


def test_once_exits_1_with_a_message_when_the_relay_cannot_be_reached(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert once(url, interval=0) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"cannot reach the relay at {url}/metrics" in captured.err


def test_once_exits_1_when_the_url_is_not_a_relay(capsys: pytest.CaptureFixture[str]) -> None:
    with _Server(FakeRelay()) as server:
        assert once(server.url + "/nothing-here", interval=0) == 1
    assert "answered 404" in capsys.readouterr().err


# --- the real command against a real relay --------------------------------------------------------


def test_relay_status_once_reads_a_real_relay(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=["status-key"]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, api_key="status-key")) as relay:
        answer = http_request(relay.base_url + "/ingest/custom", "POST", entries(0, 30))
        assert answer.status == 200, answer.body
        wait_until(lambda: len(upstream.entries()) == 30, message=relay.log_tail)
        with Process(["status", "--once", "--interval", "0.3", "--url", relay.base_url], tmp_path,
                     name="status") as command:
            assert command.wait(timeout=20) == 0, command.log_tail()
        out = command.log_text()
    assert f"relay {relay.base_url}  ready" in out, out
    assert re.search(r"^custom\s+[\d.]+/s\s.*\s30\s+0\s+0$", out, re.M), out
    assert re.search(r"^profound\s+running\s+0\s+0 B\s.*empty", out, re.M), out
    with Process(["status", "--once", "--interval", "0", "--url", relay.base_url], tmp_path,
                 name="status-after") as gone:
        assert gone.wait(timeout=20) == 1
    assert "cannot reach the relay" in gone.log_text()

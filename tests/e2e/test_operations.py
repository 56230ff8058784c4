"""The operational surface: metrics move with traffic, health answers, logs are structured."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import PINNED_NOW, Relay, entries, sink_toml
from tests.e2e.test_shutdown import raw_post_start
from tests.support import MockUpstream, http_request, wait_until

KEY = "test-key"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample (labels in any order), 0 when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_metrics_move_with_traffic_and_health_answers(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        before = relay.metrics()
        assert metric(before, "relay_requests_total", source="custom", code="200") == 0  # declared up front
        assert http_request(relay.base_url + "/healthz").json() == {"status": "ok"}
        assert http_request(relay.base_url + "/readyz").json() == {"status": "ready"}
        batch = entries(0, 5)
        batch[1]["status_code"] = 99
        batch[2]["method"] = "get"  # repaired: upper-cased
        assert http_request(relay.base_url + "/v1/logs/custom", "POST", batch).status == 200
        assert http_request(relay.base_url + "/ingest/nope", "POST", batch).status == 404
        wait_until(lambda: metric(relay.metrics(), "relay_upstream_entries_delivered_total", sink="profound") == 4,
                   timeout=20)
        after = relay.metrics()
        assert metric(after, "relay_requests_total", source="custom", code="200") == 1
        assert metric(after, "relay_requests_total", source="_unknown", code="404") == 1
        assert metric(after, "relay_entries_received_total", source="custom") == 5
        assert metric(after, "relay_entries_accepted_total", source="custom") == 4
        assert sum(float(v) for v in re.findall(r'relay_entries_rejected_total\{[^}]*source="custom"[^}]*\} (\S+)',
                                                after)) == 1
        assert metric(after, "relay_entries_repaired_total", source="custom", field="method", rule="uppercased") == 1
        assert metric(after, "relay_upstream_batches_total", sink="profound", code="200") >= 1
        assert metric(after, "relay_received_bytes_total", source="custom") > 0
        assert "relay_upstream_request_duration_seconds_bucket" in after
        assert metric(after, "relay_queue_entries", sink="profound") == 0
        assert metric(after, "relay_sink_state", sink="profound", state="running") == 1


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], faults={"down": True}) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY))
        relay.args += ["--log-format", "json"]
        with relay:
            assert http_request(relay.base_url + "/v1/logs/custom", "POST", entries(0, 1)).status == 200
            wait_until(lambda: "backing off" in relay.log_text(), timeout=15)
        lines = [line for line in relay.log_text().splitlines() if line.startswith("{")]
        records = [json.loads(line) for line in lines]
        assert {"ts", "level", "logger", "msg"} <= set(records[0])
        state = next(r for r in records if "backing off" in r["msg"])
        assert state["sink"] == "profound" and state["state"] == "backing_off" and "delay_s" in state


def test_readyz_says_why_not_while_shutting_down(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY)).start()
        slow = raw_post_start(relay.port, json.dumps(entries(0, 5)).encode())
        wait_until(lambda: "relay_requests_in_flight 1.0" in relay.metrics(), timeout=10)
        relay.popen.send_signal(15)  # type: ignore[union-attr]
        wait_until(lambda: "stopping" in relay.log_text(), timeout=10)
        answer = http_request(relay.base_url + "/readyz")
        assert answer.status == 503 and answer.json()["reasons"] == ["shutting down"]
        slow.close()
        assert relay.wait(15) == 0


def test_start_up_names_the_source_that_needs_a_host(tmp_path: Path) -> None:
    """A host-less source whose mapping may find no virtual host is named at start-up; records
    carrying a real host go through, those with `-` are rejected saying to set `host`."""
    sources = '[sources.fluentbit]\nmapping = "fluentbit-nginx"\n\n[sources.custom]\npath = "/v1/logs/custom"\n'
    record = {"remote": "192.0.2.1", "user": "-", "method": "GET", "path": "/x", "code": "200", "size": "10",
              "referer": "-", "agent": "ua", "date": 1795597200}  # fmt: skip
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY), sources=sources) as relay:
        relay.wait_for_log(r"WARNING +relay: sources\.fluentbit: mapping 'fluentbit-nginx' takes the virtual host "
                           r"from records that carry one; .* set host = ")
        assert "sources.custom:" not in relay.log_text()
        answer = http_request(relay.base_url + "/ingest/fluentbit", "POST",
                              [{**record, "host": "shop.example.com"}, {**record, "host": "-"}]).json()
        assert (answer["accepted"], answer["rejected"]) == (1, 1), answer
        assert "set `host` on the source" in json.dumps(answer["errors"]), answer
        wait_until(lambda: [e["host"] for e in upstream.entries()] == ["shop.example.com"], timeout=20)

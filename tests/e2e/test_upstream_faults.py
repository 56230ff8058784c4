"""Upstream faults against `relay mock-upstream`: every acknowledged entry still arrives."""

from __future__ import annotations

import asyncio
import collections
import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import PINNED_NOW, Relay, entries, gz_json, post_all, sink_toml
from tests.support import MockUpstream, Process, http_request, wait_until

KEY = "test-key"
JSON_GZ = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def send(relay: Relay, n_requests: int, per_request: int = 500, start: int = 0) -> set[str]:
    """Post unique entries; returns the paths of those acknowledged."""
    bodies = [(i, entries(start + i * per_request, per_request)) for i in range(n_requests)]
    results = asyncio.run(post_all(relay.base_url + "/v1/logs/custom",
                                   [(i, gz_json(body)) for i, body in bodies], headers=JSON_GZ))
    assert {status for _, status, _ in results} == {200}, results[:3]
    return {e["path"] for _, body in bodies for e in body}


def delivered(upstream: MockUpstream) -> collections.Counter[str]:
    return collections.Counter(e["path"] for e in upstream.entries())


def wait_delivered(upstream: MockUpstream, relay: Relay, paths: set[str], timeout: float = 60) -> None:
    wait_until(lambda: set(delivered(upstream)) >= paths, timeout=timeout,
               message=lambda: f"{len(paths - set(delivered(upstream)))} not delivered\n{relay.log_tail()}")


def start(tmp_path: Path, faults: dict[str, Any] | None = None, **sink: Any) -> tuple[MockUpstream, Relay]:
    upstream = MockUpstream(tmp_path, api_keys=[KEY], faults=faults, extra_args=["--now", PINNED_NOW]).start()
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY, **sink)).start()
    return upstream, relay


@pytest.mark.parametrize("faults", [
    {"error_rate": 0.5},
    {"status": 502, "status_rate": 0.5},
    {"status": 503, "status_rate": 0.5, "retry_after": 1},
    {"status": 504, "status_rate": 0.5},
    {"status": 429, "status_rate": 0.5, "retry_after": 1},
    {"status": 429, "status_rate": 0.5},
    {"status": 408, "status_rate": 0.5},
    {"drop_rate": 0.4},
], ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_retries_temporary_failures_until_delivered(tmp_path: Path, faults: dict[str, Any]) -> None:
    upstream, relay = start(tmp_path, faults, batch_max_entries=250)
    with upstream, relay:
        paths = send(relay, 10)
        wait_delivered(upstream, relay, paths)
        assert upstream.stats()["requests"] > len(upstream.records())  # some attempts did fail
        assert "relay_upstream_retries_total" in relay.metrics()


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    upstream, relay = start(tmp_path, {"status": 429, "retry_after": 2}, retry_max_backoff="200ms")
    with upstream, relay:
        paths = send(relay, 1, per_request=10)
        wait_until(lambda: upstream.stats()["requests"] >= 1, timeout=10)
        # With a 200ms backoff cap the relay would try ~10 times in 2s; Retry-After holds it to one.
        wait_until(lambda: "backing off 2.00s" in relay.log_text(), timeout=10, message=relay.log_tail)
        assert upstream.stats()["requests"] <= 2
        upstream.clear_faults()
        wait_delivered(upstream, relay, paths)


def test_timeouts_are_retried(tmp_path: Path) -> None:
    upstream, relay = start(tmp_path, {"latency": 3}, request_timeout="500ms")
    with upstream, relay:
        paths = send(relay, 2, per_request=100)
        wait_until(lambda: "timed out" in relay.log_text(), timeout=15, message=relay.log_tail)
        upstream.clear_faults()
        wait_delivered(upstream, relay, paths)


def test_backlog_drains_after_a_long_outage(tmp_path: Path) -> None:
    upstream, relay = start(tmp_path, {"down": True})
    with upstream, relay:
        paths = send(relay, 20)
        wait_until(lambda: 'relay_queue_entries{sink="profound"} 10000.0' in relay.metrics(), timeout=10)
        wait_until(lambda: upstream.stats()["dropped"] >= 5, timeout=20)  # it kept trying
        assert not upstream.records()
        upstream.clear_faults()
        wait_delivered(upstream, relay, paths, timeout=60)
        wait_until(lambda: 'relay_queue_entries{sink="profound"} 0.0' in relay.metrics(), timeout=10)


def test_whole_batch_refusal_is_bisected_and_only_the_bad_entries_dead_lettered(tmp_path: Path) -> None:
    upstream, relay = start(tmp_path, {"reject_marker": "/poison"})
    with upstream, relay:
        batch = entries(0, 300)
        for i in (17, 201):
            batch[i]["path"] = f"/poison/{i}"
        response = http_request(relay.base_url + "/v1/logs/custom", "POST", batch)
        assert response.status == 200
        good = {e["path"] for e in batch} - {"/poison/17", "/poison/201"}
        wait_delivered(upstream, relay, good)
        wait_until(lambda: 'relay_dead_letter_entries{sink="profound"} 2.0' in relay.metrics(), timeout=30,
                   message=relay.log_tail)
        assert sum(delivered(upstream).values()) == 298
        listing = Process(["dead-letter", "list", "-c", str(relay.config_path), "--json"], tmp_path, name="dl")
        with listing:
            assert listing.wait(20) == 0
        letters = json.loads(listing.log_text().split("\n", 1)[1])["dead_letters"]
        assert sorted(e["path"] for letter in letters for e in letter["entries"]) == ["/poison/17", "/poison/201"]
        assert all("400" in letter["reason"] and "poison" in letter["reason"] for letter in letters)
        # After the fix upstream, a replay delivers them.
        upstream.clear_faults()
        replay = Process(["dead-letter", "replay", "-c", str(relay.config_path)], tmp_path, name="replay")
        with replay:
            assert replay.wait(20) == 0
        assert '"entries": 2' in replay.log_text()
        wait_delivered(upstream, relay, {"/poison/17", "/poison/201"})
        assert 'relay_dead_letter_entries{sink="profound"} 0.0' in relay.metrics()


@pytest.mark.parametrize("status", [413, 422])
def test_refused_status_dead_letters_with_reason_and_replay_delivers(tmp_path: Path, status: int) -> None:
    upstream, relay = start(tmp_path, {"status": status})
    with upstream, relay:
        paths = send(relay, 1, per_request=8)
        wait_until(lambda: 'relay_dead_letter_entries{sink="profound"} 8.0' in relay.metrics(), timeout=30,
                   message=relay.log_tail)
        assert not upstream.records()
        upstream.clear_faults()
        relay.stop()
        # Offline: the relay is stopped, so the CLI works on the queue directory itself.
        replay = Process(["dead-letter", "replay", "-c", str(relay.config_path)], tmp_path, name="replay")
        with replay:
            assert replay.wait(20) == 0
        relay.start()
        wait_delivered(upstream, relay, paths)


@pytest.mark.parametrize("status", [401, 403])
def test_bad_key_pauses_the_sink_keeps_data_and_resumes_on_reload(tmp_path: Path, status: int) -> None:
    upstream = MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW],
                            faults={"status": status} if status == 403 else None).start()
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, "wrong-key", retry_max_backoff="30s")).start()
    with upstream, relay:
        paths = send(relay, 2, per_request=100)
        wait_until(lambda: re.search(r"sink profound: paused", relay.log_text()), timeout=15, message=relay.log_tail)
        assert "wrong-key" not in relay.log_text()  # the key is never logged
        assert not upstream.records()
        if status == 403:
            upstream.clear_faults()
        relay.config_path.write_text(relay.config_path.read_text().replace("wrong-key", KEY))
        relay.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: "config reloaded" in relay.log_text(), timeout=10, message=relay.log_tail)
        # Paused loops wake on the new key, well before the 30s pause would end.
        wait_delivered(upstream, relay, paths, timeout=15)
        relay.wait_for_log("sink profound: resumed", timeout=10)  # logged as the 2xx is read: may trail it


def test_reload_refuses_a_bad_config_and_keeps_running(tmp_path: Path) -> None:
    upstream, relay = start(tmp_path)
    with upstream, relay:
        good = relay.config_path.read_text()
        relay.config_path.write_text(good + "\n[sinks.profound2]\nurl = 12\n")
        response = http_request(relay.base_url + "/-/reload", "POST")
        assert response.status == 400
        assert "sinks.profound2" in response.json()["error"]
        paths = send(relay, 1, per_request=10)
        wait_delivered(upstream, relay, paths)
        relay.config_path.write_text(good)
        assert http_request(relay.base_url + "/-/reload", "POST").status == 200

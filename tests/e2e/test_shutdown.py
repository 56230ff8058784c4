"""SIGTERM: stop intake with 503, finish what is in flight, exit 0 within the grace, resume cleanly."""

from __future__ import annotations

import collections
import json
import socket
import time
from pathlib import Path

from tests.e2e.harness import PINNED_NOW, Relay, entries, sink_toml
from tests.e2e.test_upstream_faults import KEY, send, wait_delivered
from tests.support import MockUpstream, http_request, wait_until


def raw_post_start(port: int, body: bytes) -> socket.socket:
    """Send the headers and half the body, keep the request open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (f"POST /v1/logs/custom HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY)).start()
        body = json.dumps(entries(0, 50)).encode()
        slow = raw_post_start(relay.port, body)
        # The relay must be handling it (headers read) before the signal, or it is not in flight.
        wait_until(lambda: "relay_requests_in_flight 1.0" in relay.metrics(), timeout=10)
        relay.popen.send_signal(15)  # type: ignore[union-attr]
        wait_until(lambda: "stopping" in relay.log_text(), timeout=10)
        refused = http_request(relay.base_url + "/v1/logs/custom", "POST", entries(100, 1))
        assert refused.status == 503 and int(refused.headers["retry-after"]) >= 1
        slow.sendall(body[len(body) // 2:])
        answer = slow.recv(65536).decode()
        slow.close()
        assert answer.startswith("HTTP/1.1 200"), answer
        assert relay.wait(15) == 0
        relay.start()
        wait_delivered(upstream, relay, {e["path"] for e in entries(0, 50)})
        relay.stop()


def test_clean_stop_resumes_without_duplicates(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], faults={"latency": 0.2},
                      extra_args=["--now", PINNED_NOW]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY, concurrency=2)).start()
        paths = send(relay, 40)
        wait_until(lambda: upstream.stats()["entries_accepted"] >= 2000, timeout=30)
        started = time.monotonic()
        assert relay.terminate(timeout=15) == 0
        stopped_in = time.monotonic() - started
        assert upstream.stats()["entries_accepted"] < 20_000  # part of it stayed on disk
        relay.start()
        wait_delivered(upstream, relay, paths, timeout=90)
        counts = collections.Counter(e["path"] for e in upstream.entries())
        assert sum(counts.values()) == len(paths), "a clean stop must not cause duplicates"
        print(f"\nclean stop in {stopped_in:.2f}s; 20,000 entries delivered exactly once after restart")
        relay.stop()


def test_exits_within_grace_when_upstream_hangs(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], faults={"latency": 60},
                      extra_args=["--now", PINNED_NOW]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY, request_timeout="120s")).start()
        relay.config_path.write_text(relay.config_path.read_text().replace('shutdown_grace = "10s"',
                                                                           'shutdown_grace = "3s"'))
        relay.stop()
        relay.start()
        paths = send(relay, 2, per_request=100)
        wait_until(lambda: upstream.stats()["requests"] >= 1, timeout=10)
        started = time.monotonic()
        assert relay.terminate(timeout=10) == 0
        assert time.monotonic() - started < 5
        upstream.clear_faults()
        relay.start()
        wait_delivered(upstream, relay, paths)
        relay.stop()

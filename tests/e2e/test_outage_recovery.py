"""After an upstream outage the whole backlog flows at once, oldest first (issue 13, defect 2)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.e2e.harness import PINNED_NOW, Relay, entries, gz_json, post_all, sink_toml
from tests.support import MockUpstream, wait_until

KEY = "test-key"
JSON_GZ = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
OUTAGE = 30.0  # seconds: long enough that per-loop backoffs reach the 30 s cap
BATCH_TIMEOUT = 1.0


def start_down(tmp_path: Path) -> tuple[MockUpstream, Relay]:
    """A relay in front of an upstream answering 503, with the production retry defaults, not the
    harness's short ones: the defect lives at the 30 s cap."""
    upstream = MockUpstream(tmp_path, api_keys=[KEY], faults={"status": 503},
                            extra_args=["--now", PINNED_NOW]).start()
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY, batch_timeout=f"{BATCH_TIMEOUT}s",
                                      retry_initial_backoff="500ms", retry_max_backoff="30s",
                                      concurrency=4)).start()
    return upstream, relay


def send_two(url: str, n: int, acknowledged: set[str]) -> int:
    """Two 100-entry bodies, each answered 200; their paths join `acknowledged`. Returns the next n."""
    bodies = [(n + i, entries((n + i) * 100, 100)) for i in range(2)]
    results = asyncio.run(post_all(url, [(i, gz_json(b)) for i, b in bodies], headers=JSON_GZ))
    assert {status for _, status, _ in results} == {200}, results[:3]
    acknowledged |= {e["path"] for _, body in bodies for e in body}
    time.sleep(0.25)  # paces the load; nothing waits on it
    return n + len(bodies)


def test_every_acknowledged_entry_is_delivered_soon_after_a_long_outage(tmp_path: Path) -> None:
    upstream, relay = start_down(tmp_path)
    with upstream, relay:
        acknowledged: set[str] = set()
        url = relay.base_url + "/v1/logs/custom"
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < OUTAGE:  # steady load for the whole outage
            n = send_two(url, n, acknowledged)
        assert upstream.stats()["requests"] > 0 and not upstream.records()
        upstream.clear_faults()
        recovered = time.monotonic()

        def missing() -> set[str]:
            return acknowledged - {e["path"] for e in upstream.entries()}

        # Counting is cheap enough to poll; the paths are compared once it adds up.
        wait_until(lambda: upstream.stats()["entries_accepted"] >= len(acknowledged),
                   timeout=BATCH_TIMEOUT + 2.0,
                   message=lambda: f"{len(missing())} of {len(acknowledged)} not delivered\n{relay.log_tail()}")
        print(f"{len(acknowledged)} entries delivered {time.monotonic() - recovered:.2f}s after recovery")
        assert not missing()


def test_backlog_drains_at_once_after_mixed_faults_ending_in_retry_after(tmp_path: Path) -> None:
    """The issue's sequence: 503s, then 50 % 500s, then 429 with Retry-After: 2, then healthy."""
    upstream, relay = start_down(tmp_path)
    with upstream, relay:
        url = relay.base_url + "/v1/logs/custom"
        acknowledged: set[str] = set()
        n = 0
        phases = [{"status": 503}, {"status": None, "error_rate": 0.5},
                  {"error_rate": 0.0, "status": 429, "retry_after": 2}]
        for faults in phases:
            upstream.set_faults(**faults)
            phase_end = time.monotonic() + 6.0
            while time.monotonic() < phase_end:
                n = send_two(url, n, acknowledged)
        upstream.clear_faults()
        recovered = time.monotonic()
        # At most the last Retry-After (2 s), then every loop sends at once.
        wait_until(lambda: upstream.stats()["entries_accepted"] >= len(acknowledged),
                   timeout=2.0 + BATCH_TIMEOUT + 2.0,
                   message=lambda: f"{upstream.stats()['entries_accepted']} of {len(acknowledged)} delivered\n"
                                   f"{relay.log_tail()}")
        print(f"{len(acknowledged)} entries delivered {time.monotonic() - recovered:.2f}s after recovery")
        assert acknowledged <= {e["path"] for e in upstream.entries()}

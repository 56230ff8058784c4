"""Memory stays bounded while a sink is down: RSS with a large backlog on disk (soak; `make soak`)."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import pytest

from tests.e2e.harness import PINNED_NOW, Relay, entries, gz_json, post_all, sink_toml
from tests.support import MockUpstream, http_request, process_tree, wait_until

KEY = "test-key"
JSON_GZ = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
BACKLOG = int(float(os.environ.get("RELAY_BACKLOG_GB", "1")) * 2**30)
WORKERS = int(os.environ.get("RELAY_SOAK_WORKERS", "2"))  # issue 11: every relay process under 300 MB


def rss(pid: int) -> tuple[int, int, int]:
    """(VmRSS, VmHWM) in MiB added up over every relay process (supervisor and workers), and their number.

    The HWMs' sum is at least the peak of the whole (each process's peak, even if not at once)."""
    total_rss = total_hwm = count = 0
    for member in process_tree(pid):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{member}/status").read_text().splitlines())
        except OSError:
            continue
        total_rss += int(fields["VmRSS"].split()[0])
        total_hwm += int(fields["VmHWM"].split()[0])
        count += 1
    return total_rss // 1024, total_hwm // 1024, count


def queued_bytes(relay: Relay) -> float:
    for line in relay.metrics().splitlines():
        if line.startswith("relay_queue_used_bytes "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.soak
@pytest.mark.timeout(3600)  # filling and draining a 1 GiB backlog outlasts the suite's 300 s
def test_rss_stays_bounded_with_a_large_backlog(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], faults={"down": True}, verbose=False,
                      extra_args=["--now", PINNED_NOW]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), workers=WORKERS)
        relay.config_path.write_text(relay.config_path.read_text().replace('max_size = "1GiB"', 'max_size = "8GiB"'))
        processes = WORKERS + 1 if WORKERS > 1 else 1  # a supervisor beside the workers

        def all_up() -> None:
            wait_until(lambda: rss(relay.pid)[2] == processes and http_request(relay.base_url + "/readyz").status
                       == 200, timeout=90, ignore=(OSError,), message=lambda: f"{processes} processes, ready\n"
                       f"{relay.log_tail()}")

        with relay:
            all_up()
            # Incompressible user agents, so the backlog is bytes on disk, not just entries.
            template = entries(0, 1000)
            sent, started, peak = 0, time.monotonic(), 0
            while queued_bytes(relay) < BACKLOG:
                bodies = []
                for i in range(16):
                    for n, entry in enumerate(template):
                        entry["path"] = f"/backlog/{sent + i * 1000 + n}"
                        entry["user_agent"] = secrets.token_urlsafe(600)
                    bodies.append((i, gz_json(template)))
                results = asyncio.run(post_all(relay.base_url + "/v1/logs/custom", bodies, headers=JSON_GZ,
                                               concurrency=4))
                assert {status for _, status, _ in results} == {200}
                sent += 16_000
                peak = max(peak, rss(relay.pid)[0])
            filled = time.monotonic() - started
            backlog = queued_bytes(relay)
            during = rss(relay.pid)
            relay.stop()
            restarted = time.monotonic()
            relay.start()
            all_up()
            restart_s = time.monotonic() - restarted
            after_restart = rss(relay.pid)
            upstream.clear_faults()
            drain_started = time.monotonic()
            wait_until(lambda: upstream.stats()["entries_accepted"] >= sent, timeout=1800, interval=1.0,
                       message=relay.log_tail)
            drained = time.monotonic() - drain_started
            drain_rss = rss(relay.pid)
            print(f"\nbacklog {backlog / 2**30:.2f} GiB ({sent:,} entries) queued in {filled:.0f}s with the sink "
                  f"down; RSS of all {processes} relay processes ({WORKERS} workers) while filling: peak {peak} MiB, at the end {during[0]} MiB (HWM {during[1]} MiB); "
                  f"restart on the backlog {restart_s:.1f}s, RSS {after_restart[0]} MiB; drained in {drained:.0f}s "
                  f"({sent / drained:,.0f} entries/s), RSS after drain {drain_rss[0]} MiB (HWM {drain_rss[1]} MiB)")
            assert after_restart[2] == drain_rss[2] == processes, "not every relay process is running"
            assert max(peak, during[1], drain_rss[1]) < 300

"""A damaged queue after a real kill -9: the relay salvages what is readable, counts the rest, delivers on."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from tests.damage import checkpoint, overwrite, pages
from tests.e2e.harness import Relay, entries, gz_json, post_all, sink_toml
from tests.support import MockUpstream, http_request, wait_until

KEY = "test-key"
HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def metric(relay: Relay, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", relay.metrics(), re.M)
    return float(match.group(1)) if match else 0.0


def delivered_paths(upstream: MockUpstream) -> set[str]:
    return {entry["path"] for entry in upstream.entries()}


def test_a_damaged_data_page_after_kill_9_costs_exactly_its_rows(tmp_path: Path) -> None:
    upstream = MockUpstream(tmp_path, api_keys=[KEY], faults={"status": 503}).start()
    relay = Relay(tmp_path, sink_toml("up", upstream.url, KEY)).start()
    try:
        url = relay.base_url + "/v1/logs/custom"
        bodies = [(i, gz_json(entries(i * 100, 100))) for i in range(200)]  # 20,000 entries
        results = asyncio.run(post_all(url, bodies, headers=HEADERS))
        assert all(status == 200 for _, status, _ in results)
        wait_until(lambda: metric(relay, 'relay_queue_batches{sink="up"}') >= 20, timeout=30)
        relay.kill9()
        db = tmp_path / "queue" / "cache.db"
        checkpoint(db)
        victim = pages(db, "Cache", "leaf")[1]
        overwrite(db, victim.number, victim.size)
        upstream.clear_faults()
        relay.start()
        wait_until(lambda: metric(relay, "relay_queue_salvages_total") == 1, timeout=20)
        lost_items = metric(relay, "relay_queue_items_quarantined_total")
        lost = metric(relay, "relay_queue_entries_lost_total")
        assert lost_items == victim.rows and lost > 0
        wait_until(lambda: len(delivered_paths(upstream)) == 20_000 - lost, timeout=60,
                   message=lambda: f"{len(delivered_paths(upstream))} of {20_000 - lost}\n{relay.log_tail()}")
        new = asyncio.run(post_all(url, [(0, gz_json(entries(50_000, 10)))], headers=HEADERS))
        assert new[0][1] == 200
        wait_until(lambda: {f"/e2e/{i}" for i in range(50_000, 50_010)} <= delivered_paths(upstream), timeout=20)
        ready = http_request(relay.base_url + "/readyz")
        assert ready.status == 200 and "damaged copy kept in" in json.dumps(ready.json())
        log = relay.log_text()
        assert "Traceback" not in log and log.count("queue salvaged") == 1
        assert list((tmp_path / "queue" / "damaged").glob("*/cache.db"))
    finally:
        relay.stop()
        upstream.stop()

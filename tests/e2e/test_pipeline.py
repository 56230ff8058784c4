"""The whole path with real processes: ingest -> disk -> batches -> mock upstream."""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import time
from pathlib import Path

import pytest

from tests.e2e.harness import PINNED_NOW, Relay, entries, fixture, gz_json, post_all, sink_toml
from tests.support import MockUpstream, Process, http_request, wait_until

KEY = "test-key"
JSON_GZ = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def assert_batches_well_formed(upstream: MockUpstream) -> None:
    records = upstream.records()
    assert records, "upstream received nothing"
    assert all(r["count"] <= 1000 for r in records), max(r["count"] for r in records)
    assert all(r["gzip"] for r in records)
    assert all(r["key"] == KEY for r in records)
    assert all(not r["errors"] for r in records), records[0]["errors"]


def test_100k_entries_through_custom_endpoint_arrive_exactly_once(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        bodies = [(i, gz_json(entries(i * 1000, 1000))) for i in range(100)]
        started = time.monotonic()
        results = asyncio.run(post_all(relay.base_url + "/v1/logs/custom", bodies, headers=JSON_GZ))
        acked = time.monotonic() - started
        assert sorted(status for _, status, _ in results) == [200] * 100
        assert all(answer["accepted"] == 1000 and answer["rejected"] == 0 for _, _, answer in results)
        wait_until(lambda: upstream.stats()["entries_accepted"] >= 100_000, timeout=120,
                   message=lambda: f"delivery stalled\n{relay.log_tail()}")
        delivered = time.monotonic() - started
        paths = collections.Counter(e["path"] for e in upstream.entries())
        assert len(paths) == 100_000 and set(paths.values()) == {1}
        assert_batches_well_formed(upstream)
        print(f"\n100,000 entries: acknowledged in {acked:.2f}s ({100_000 / acked:,.0f}/s), "
              f"delivered in {delivered:.2f}s ({100_000 / delivered:,.0f}/s)")


def test_a_gzip_batch_of_untouched_entries_goes_upstream_as_the_client_sent_it(tmp_path: Path) -> None:
    """A 1,000-entry gzip array the relay would send unchanged is stored and sent as it came; one
    with a key outside the schema is encoded by the relay. What tells them apart upstream: the
    relay writes `.000Z` as `Z`, and drops the unknown key."""
    as_sent = entries(0, 1000, timestamp="2026-11-25T09:00:00.000Z")
    extra = entries(1000, 1000, timestamp="2026-11-25T09:00:00.000Z")
    extra[5]["note"] = "not in the schema"
    bodies = [(0, gzip.compress(json.dumps(as_sent, indent=1).encode())), (1, gz_json(extra))]
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        results = asyncio.run(post_all(relay.base_url + "/v1/logs/custom", bodies, headers=JSON_GZ, concurrency=1))
        assert [(status, answer["accepted"]) for _, status, answer in results] == [(200, 1000), (200, 1000)]
        wait_until(lambda: upstream.stats()["entries_accepted"] >= 2000, timeout=60, message=relay.log_tail)
        got = {e["path"]: e for e in upstream.entries()}
        assert len(got) == 2000
        assert {got[e["path"]]["timestamp"] for e in as_sent} == {"2026-11-25T09:00:00.000Z"}
        assert {got[e["path"]]["timestamp"] for e in extra} == {"2026-11-25T09:00:00Z"}
        assert all("note" not in e for e in got.values())
        assert [r["count"] for r in upstream.records()] == [1000, 1000]
        assert_batches_well_formed(upstream)


def test_100k_fluentbit_records_from_captured_bodies(tmp_path: Path) -> None:
    body, headers, records = fixture("nginx-combined.json.gzip")
    assert len(records) == 200
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        started = time.monotonic()
        results = asyncio.run(post_all(relay.base_url + "/ingest/fluentbit", [(i, body) for i in range(500)],
                                       headers=headers))
        assert {status for _, status, _ in results} == {200}
        assert sum(answer["accepted"] for _, _, answer in results) == 100_000
        wait_until(lambda: upstream.stats()["entries_accepted"] >= 100_000, timeout=120,
                   message=lambda: f"delivery stalled\n{relay.log_tail()}")
        elapsed = time.monotonic() - started
        got = upstream.entries()
        assert len(got) == 100_000
        # Each of the 200 distinct records must arrive exactly 500 times.
        counts = collections.Counter(json.dumps(e, sort_keys=True) for e in got)
        assert len(counts) == 200 and set(counts.values()) == {500}
        assert {e["host"] for e in got} == {"www.example.com"}
        assert_batches_well_formed(upstream)
        print(f"\n100,000 Fluent Bit records end to end in {elapsed:.2f}s ({100_000 / elapsed:,.0f}/s)")


def test_kill_9_mid_stream_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY)).start()
        try:
            url = relay.base_url + "/v1/logs/custom"
            bodies = [(i, gz_json(entries(i * 500, 500))) for i in range(200)]

            async def load_and_kill() -> list[tuple[int, int, object]]:
                sending = asyncio.create_task(post_all(url, bodies, headers=JSON_GZ, concurrency=4))
                # Kill once part of the stream is in: some acknowledged, some in flight.
                while upstream.stats()["entries_accepted"] < 20_000:
                    await asyncio.sleep(0.02)
                relay.kill9()
                return await sending

            first = asyncio.run(load_and_kill())
            acked = {tag for tag, status, _ in first if status == 200}
            assert 0 < len(acked) < 200
            relay.start()
            rest = [(tag, body) for tag, body in bodies if tag not in acked]
            second = asyncio.run(post_all(url, rest, headers=JSON_GZ, concurrency=4))
            assert {status for _, status, _ in second} == {200}
            wait_until(lambda: {e["path"] for e in upstream.entries()} >= {f"/e2e/{n}" for n in range(100_000)},
                       timeout=120, message=lambda: f"not all delivered\n{relay.log_tail()}")
            counts = collections.Counter(e["path"] for e in upstream.entries())
            duplicates = sum(c - 1 for c in counts.values())
            print(f"\nkill -9 after {len(acked)} of 200 requests acknowledged: 0 lost, {duplicates} duplicates")
        finally:
            relay.stop()


def test_dead_second_sink_does_not_hold_up_the_first(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            MockUpstream(tmp_path, name="dead", api_keys=[KEY], faults={"down": True}) as dead:
        sinks = sink_toml("live", upstream.url, KEY) + "\n" + sink_toml("dead", dead.url, KEY)
        with Relay(tmp_path, sinks) as relay:
            bodies = [(i, gz_json(entries(i * 1000, 1000))) for i in range(20)]
            results = asyncio.run(post_all(relay.base_url + "/v1/logs/custom", bodies, headers=JSON_GZ))
            assert {status for _, status, _ in results} == {200}
            wait_until(lambda: upstream.stats()["entries_accepted"] >= 20_000, timeout=60,
                       message=lambda: f"live sink stalled\n{relay.log_tail()}")
            assert dead.stats()["entries_accepted"] == 0
            metrics = relay.metrics()
            assert 'relay_queue_entries{sink="dead"} 20000.0' in metrics
            assert 'relay_sink_up{sink="dead"} 0.0' in metrics
            dead.set_faults(down=False)
            wait_until(lambda: dead.stats()["entries_accepted"] >= 20_000, timeout=60,
                       message=lambda: f"dead sink never caught up\n{relay.log_tail()}")


def test_rejected_records_are_named_and_the_rest_accepted(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        batch = entries(0, 3)
        batch[1]["status_code"] = "abc"
        response = http_request(relay.base_url + "/v1/logs/custom", "POST", batch)
        assert response.status == 200
        answer = response.json()
        assert answer["accepted"] == 2 and answer["rejected"] == 1
        assert answer["errors"][0].startswith("$[1].status_code")
        wait_until(lambda: upstream.stats()["entries_accepted"] == 2, timeout=30)


@pytest.mark.parametrize("path,status", [("/ingest/nope", 404), ("/v1/logs/custom", 400)])
def test_error_answers(tmp_path: Path, path: str, status: int) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        response = http_request(relay.base_url + path, "POST", b"{not json", headers={"Content-Type": "application/json"})
        assert response.status == status
        assert response.json()["status"] == "error" and response.json()["error"]


def test_router_errors_have_the_json_shape(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        response = http_request(relay.base_url + "/v1/logs/custom")  # GET on an ingest path
        assert response.status == 405 and "POST" in response.headers["allow"]
        assert response.json() == {"status": "error", "error": "Method Not Allowed"}


def test_unreadable_queue_database_stops_start_up_with_a_clear_message_when_told_to(tmp_path: Path) -> None:
    """queue.on_unreadable = "exit": nothing of the database can be read, so the relay exits 2 with
    one line naming the file and leaves it as it was (the default, start_empty, is tested in
    tests/unit/store/test_salvage.py and tests/e2e/test_queue_damage.py)."""
    with MockUpstream(tmp_path, api_keys=[KEY]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY))
        relay.config_path.write_text(relay.config_path.read_text().replace(
            "[queue]\n", '[queue]\non_unreadable = "exit"\n'))
        (tmp_path / "queue").mkdir()
        garbage = b"this is not a database" * 100
        (tmp_path / "queue" / "cache.db").write_bytes(garbage)
        Process.start(relay)
        assert relay.wait(20) == 2
        log = relay.log_text()
        assert "nothing of the queue database" in log and str(tmp_path / "queue" / "cache.db") in log
        assert "Traceback" not in log
        assert (tmp_path / "queue" / "cache.db").read_bytes() == garbage


def test_unknown_mapping_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY))
        relay.config_path.write_text(relay.config_path.read_text().replace('mapping = "profound"',
                                                                           'mapping = "no-such-mapping"'))
        Process.start(relay)
        assert relay.wait(20) == 2
        log = relay.log_text()
        assert "sources.custom.mapping: unknown mapping 'no-such-mapping'" in log and "Traceback" not in log

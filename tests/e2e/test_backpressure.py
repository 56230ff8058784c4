"""A full disk budget or a full disk: 503 with Retry-After, nothing acknowledged lost."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path

from tests.e2e.harness import PINNED_NOW, Relay, entries, gz_json, post_all, sink_toml
from tests.e2e.test_upstream_faults import JSON_GZ, KEY, wait_delivered
from tests.support import MockUpstream, Process, http_request, wait_until


def post_until_refused(relay: Relay, start: int, limit: int = 1000) -> tuple[set[str], dict[int, int]]:
    """Post 200-entry bodies one at a time until the relay says 503; acknowledged paths and statuses."""
    acked: set[str] = set()
    statuses: dict[int, int] = {}
    for i in range(limit):
        batch = entries(start + i * 200, 200)
        for entry in batch:  # incompressible, so that sealed batches fill the disk too
            entry["user_agent"] = secrets.token_urlsafe(300)
        [(_, status, _answer)] = asyncio.run(post_all(relay.base_url + "/v1/logs/custom",
                                                     [(i, gz_json(batch))], headers=JSON_GZ, concurrency=1))
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            acked |= {e["path"] for e in batch}
        elif status == 503:
            break
    return acked, statuses


def test_queue_full_answers_503_and_keeps_everything_acknowledged(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], faults={"down": True}, extra_args=["--now", PINNED_NOW]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY))
        text = relay.config_path.read_text().replace('max_size = "1GiB"', 'max_size = "2MiB"')
        relay.config_path.write_text(text.replace("[server]", '[server]\nmax_body_size = "256KiB"'))
        with relay:
            acked, statuses = post_until_refused(relay, 0)
            assert statuses.get(503) == 1 and acked, statuses
            assert "relay_queue_used_bytes" in relay.metrics()
            upstream.clear_faults()
            wait_delivered(upstream, relay, acked, timeout=60)
            _more, statuses = post_until_refused(relay, 10_000_000, limit=3)
            assert statuses == {200: 3}  # room again once delivered


def on_tiny_disk(tmp_path: Path, disk: Path, upstream: MockUpstream, min_free_space: str) -> Relay:
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY))
    text = relay.config_path.read_text().replace(str(tmp_path / "queue"), str(disk / "queue"))
    text = text.replace('max_size = "1GiB"', f'max_size = "1GiB"\nmin_free_space = "{min_free_space}"')
    relay.config_path.write_text(text.replace("[server]", '[server]\nmax_body_size = "256KiB"'))
    return relay


def test_disk_running_out_of_space_gives_503_not_a_crash(tmp_path: Path, tiny_disk: Path) -> None:
    # A tiny reserve (1 MiB of a 16 MiB volume): the disk reserve, not ENOSPC in the middle of a
    # commit, is what refuses, and delivery still has room to seal and delete.
    upstream = MockUpstream(tmp_path, api_keys=[KEY], faults={"down": True}, extra_args=["--now", PINNED_NOW])
    with upstream, on_tiny_disk(tmp_path, tiny_disk, upstream, "1MiB") as relay:
        acked, statuses = post_until_refused(relay, 0)
        assert statuses.get(503) == 1 and 500 not in statuses, statuses
        for attempt in range(20):  # the WAL truncated at a quiet moment hands back up to 4 MiB: 503 may flap
            batch = [{**entry, "user_agent": secrets.token_urlsafe(300)} for entry in entries(5_000_000 + attempt * 200, 200)]
            refused = http_request(relay.base_url + "/v1/logs/custom", "POST", gz_json(batch), headers=JSON_GZ)
            if refused.status != 200:
                break
            acked |= {e["path"] for e in batch}
        why = refused.body.decode()
        assert refused.status == 503 and refused.headers.get("retry-after"), (refused.headers, why)
        assert "disk reserve" in why and str(tiny_disk / "queue") in why, why
        assert relay.running and "could not be written" not in relay.log_text()
        upstream.clear_faults()
        wait_delivered(upstream, relay, acked, timeout=90)
        wait_until(lambda: 'relay_queue_entries{sink="profound"} 0.0' in relay.metrics(), timeout=30)
        _more, statuses = post_until_refused(relay, 10_000_000, limit=3)
        assert statuses == {200: 3}  # room again once delivered
        assert "Traceback" not in relay.log_text()



def test_a_volume_too_small_for_the_reserve_is_named_with_its_figures(tmp_path: Path, tiny_disk: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream:
        relay = on_tiny_disk(tmp_path, tiny_disk, upstream, "16MiB")  # all of the 16 MiB volume, no room above it
        check = Process(["check-config", "-c", str(relay.config_path)], tmp_path, name="check").start()
        check.wait()
        warning = re.compile(rf"queue.min_free_space: the filesystem holding {re.escape(str(tiny_disk / 'queue'))} "
                             r"has [0-9,]+ bytes free \([0-9,]+ in all\), less than min_free_space \(16,777,216\) "
                             r"plus room for a few batches \([0-9,]+\)")
        assert warning.search(check.log_text()), check.log_tail()
        with relay:
            assert warning.search(relay.log_text()), relay.log_tail()

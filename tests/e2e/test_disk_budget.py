"""`queue.max_size` bounds what `du` shows for the queue directory (issue 13, defect 3)."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
from pathlib import Path

from tests.e2e.harness import PINNED_NOW, Relay, entries, gz_json, post_all, sink_toml
from tests.support import HttpResponse, MockUpstream, http_request, wait_until

KEY = "test-key"
JSON_GZ = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
MAX_SIZE = 2 * 2**20


def du(path: Path) -> int:
    """Allocated bytes, as README documents relay_queue_used_bytes."""
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def used_bytes(relay: Relay) -> int:
    match = re.search(r"^relay_queue_used_bytes (\S+)$", relay.metrics(), re.M)
    assert match, "relay_queue_used_bytes missing"
    return int(float(match.group(1)))


def body(start: int) -> list[dict[str, object]]:
    # A random user agent per entry: compresses about as badly as real agents and ids do.
    return [dict(entry, user_agent=secrets.token_hex(16)) for entry in entries(start, 100)]


def test_max_size_bounds_the_queue_directory_on_disk(tmp_path: Path) -> None:
    upstream = MockUpstream(tmp_path, api_keys=[KEY], faults={"down": True},
                            extra_args=["--now", PINNED_NOW]).start()
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY),
                  queue_max_size="2MiB", max_body_size="256KiB").start()
    queue_dir = tmp_path / "queue"
    with upstream, relay:
        url = relay.base_url + "/v1/logs/custom"
        acknowledged: set[str] = set()
        refused = 0
        n = 0
        while not refused:  # fill until the relay says 503
            assert n < 2_000, (f"{len(acknowledged)} entries accepted into a 2MiB queue, no 503; du={du(queue_dir)}"
                               + "\n".join(line for line in relay.metrics().splitlines() if "queue" in line))
            bodies = [(n + i, body((n + i) * 100)) for i in range(8)]
            n += len(bodies)
            results = asyncio.run(post_all(url, [(i, gz_json(b)) for i, b in bodies], headers=JSON_GZ))
            assert {status for _, status, _ in results} <= {200, 503}, results[:3]
            for tag, status, _ in results:
                if status == 200:
                    acknowledged |= {f"/e2e/{i}" for i in range(tag * 100, tag * 100 + 100)}
                else:
                    refused += 1
        extra = iter(range(10**5, 10**6))

        def post_one() -> HttpResponse:
            tag = next(extra)
            response = http_request(url, "POST", gz_json(body(tag * 100)), headers=JSON_GZ)
            if response.status == 200:  # sealing may have freed a little room meanwhile
                acknowledged.update(f"/e2e/{i}" for i in range(tag * 100, tag * 100 + 100))
            return response

        full = wait_until(lambda: (r := post_one()).status == 503 and r, timeout=20)
        assert int(full.headers["retry-after"]) > 0 and b"queue is full" in full.body, full.body
        # The relay's figure is du's (once the batcher has sealed what it holds, nothing moves).
        wait_until(lambda: used_bytes(relay) == du(queue_dir), timeout=20,
                   message=lambda: f"relay says {used_bytes(relay)}, du says {du(queue_dir)}")
        on_disk = du(queue_dir)
        assert on_disk <= MAX_SIZE * 1.1, f"{on_disk} bytes on disk for max_size {MAX_SIZE}"
        assert on_disk >= MAX_SIZE * 0.5, f"only {on_disk} bytes used of {MAX_SIZE}: the budget is wasted"
        print(f"{len(acknowledged)} entries accepted, {refused} requests refused, du {on_disk} of {MAX_SIZE}")

        upstream.clear_faults()

        def missing() -> set[str]:
            return acknowledged - {e["path"] for e in upstream.entries()}

        wait_until(lambda: upstream.stats()["entries_accepted"] >= len(acknowledged), timeout=60,
                   message=lambda: f"{len(missing())} of {len(acknowledged)} not delivered\n{relay.log_tail()}")
        assert not missing()
        assert du(queue_dir) <= MAX_SIZE * 1.1
        # Room again: new data is taken.
        wait_until(lambda: http_request(url, "POST", gz_json(body(2 * 10**7)), headers=JSON_GZ).status == 200,
                   timeout=20)

"""Dead letters of a keep_records source, re-mapped after a mapping fix, end to end.

A real `relay serve` and `relay mock-upstream` (its reject_marker refuses any batch holding a
path with "/poison"); the CLI as its own process; kill -9 right after the replay's answer.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.support import MockUpstream, Process, http_request, wait_until

KEY = "upstream-key-77c1"
BAD = '[sources.web]\nmapping = "m"\nkeep_records = true\n[mappings.m]\nextends = "profound"\npath = "bad_path"\n'
FIXED = BAD.replace('path = "bad_path"', 'path = "uri"')
POISONED = (1, 4, 7)


def record(i: int) -> dict[str, Any]:
    out = {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "status_code": 200, "ip": "192.0.2.1",
           "user_agent": "curl/8", "host": "www.example.com", "uri": f"/fixed/{i}",
           "bad_path": f"/poison/{i}" if i in POISONED else f"/fine/{i}"}
    if i == 7:
        del out["uri"]  # the fixed mapping rejects this one: it goes to the rejected store
    return out


def cli(tmp_path: Path, relay: Relay, *args: str, name: str) -> Any:
    with Process([*args, "-c", str(relay.config_path), "--json"], tmp_path, name=name) as command:
        assert command.wait(60) == 0, command.log_tail()
    return json.loads(command.log_text().split("\n", 1)[1])


def delivered(upstream: MockUpstream) -> collections.Counter[str]:
    return collections.Counter(e["path"] for e in upstream.entries())


def test_dead_letters_keep_their_records_and_a_remap_after_a_fix_delivers_them_once(tmp_path: Path) -> None:
    upstream = MockUpstream(tmp_path, api_keys=[KEY], faults={"reject_marker": "/poison"},
                            extra_args=["--now", PINNED_NOW]).start()
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), sources=BAD).start()
    with upstream, relay:
        body = "\n".join(json.dumps(record(i)) for i in range(10)).encode()
        response = http_request(relay.base_url + "/ingest/web", "POST", body,
                                headers={"Content-Type": "application/x-ndjson"})
        assert response.status == 200 and response.json()["accepted"] == 10
        fine = {f"/fine/{i}" for i in range(10) if i not in POISONED}
        wait_until(lambda: set(delivered(upstream)) >= fine and
                   'relay_dead_letter_entries{sink="profound"} 3.0' in relay.metrics(),
                   timeout=30, message=relay.log_tail)
        letters = cli(tmp_path, relay, "dead-letter", "list", name="list")["dead_letters"]
        assert sorted(e["path"] for letter in letters for e in letter["entries"]) == [
            "/poison/1", "/poison/4", "/poison/7"]
        assert all(letter["records"] for letter in letters)

        # fix the mapping, reload, re-map (upstream still refuses "/poison": only fixed entries pass)
        relay.config_path.write_text(relay.config_path.read_text().replace(BAD, FIXED))
        assert http_request(relay.base_url + "/-/reload", "POST").status == 200
        # upstream down until after the kill: what the re-map queued cannot be sent (and then sent
        # again, its delete cut by the kill) before the kill, on however loaded a machine
        upstream.set_faults(down=True)
        with Process(["dead-letter", "replay", "--remap", "-c", str(relay.config_path)], tmp_path,
                     name="remap") as command:
            assert command.wait(60) == 0, command.log_tail()
            relay.kill9()  # at once after the answer: what it queued must survive
        upstream.set_faults(down=False)
        answer = json.loads(command.log_text().split("\n", 1)[1])
        assert {k: answer[k] for k in ("letters", "remapped", "rejected", "resent")} == {
            "letters": 3, "remapped": 2, "rejected": 1, "resent": 0}
        assert answer["reasons"] == {"required": 1}

        relay.start()
        wait_until(lambda: {"/fixed/1", "/fixed/4"} <= set(delivered(upstream)), timeout=30, message=relay.log_tail)
        wait_until(lambda: 'relay_queue_entries{sink="profound"} 0.0' in relay.metrics(), timeout=30)
        counts = delivered(upstream)
        assert counts["/fixed/1"] == counts["/fixed/4"] == 1  # once, across the kill
        assert not [path for path in counts if "poison" in path or path == "/fixed/7"]
        assert 'relay_dead_letter_entries{sink="profound"} 0.0' in relay.metrics()
        # the one the fixed mapping rejects is in the rejected store, across the kill
        listing = cli(tmp_path, relay, "rejected", "list", name="rejected")
        assert listing["stored"]["web"]["records"] == 1

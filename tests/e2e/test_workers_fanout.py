"""`server.workers = 2`: the console and rejected records speak for the whole relay.

Real supervisor and worker processes, a real `relay mock-upstream`, a real browser. Rejections
sent on many connections land on both workers; one `/-/rejections` answer shows all of them,
a replay after a fix delivers all of them, `/-/console/state` counts both workers' traffic, and
with the relay stopped `relay rejected` reads and replays every shard on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.browser import browser, console_errors, wait_for  # noqa: F401  (browser: a fixture)
from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.e2e.test_workers import launch, worker_view
from tests.support import MockUpstream, Process, http_request, wait_until

KEY = "upstream-key-7c21"
SOURCES = '[sources.web]\nmapping = "profound"\n'
FIX = SOURCES + 'host = "www.example.com"\n'
REQUESTS = 24


def record(path: str, **extra: Any) -> dict[str, Any]:
    return {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "path": path, "status_code": 200,
            "ip": "192.0.2.1", "user_agent": "curl/8", **extra}


def send_round(relay: Relay, name: str) -> tuple[set[str], set[str]]:
    """REQUESTS requests, each on its own connection (urllib), so the kernel spreads them over both
    workers: two records without `host` (rejected: host is required) and one with it, each.
    Returns (rejected paths, accepted paths)."""
    bad, good = set(), set()
    for i in range(REQUESTS):
        body = [record(f"/{name}/{i}/a"), record(f"/ok-{name}/{i}", host="www.example.com"), record(f"/{name}/{i}/b")]
        response = http_request(relay.base_url + "/ingest/web", "POST", body)
        assert response.status == 200 and response.json()["rejected"] == 2, response.body
        bad |= {f"/{name}/{i}/a", f"/{name}/{i}/b"}
        good.add(f"/ok-{name}/{i}")
    return bad, good


def shown_paths(answer: dict[str, Any]) -> list[str]:
    return [r["record"]["path"] for r in answer["rejections"]]


def rejected(tmp_path: Path, relay: Relay, *args: str, name: str) -> Any:
    with Process(["rejected", *args, "-c", str(relay.config_path)], tmp_path, name=name) as command:
        assert command.wait(60) == 0, command.log_tail()
    return json.loads(command.log_text().split("\n", 1)[1])


def test_rejections_and_console_state_cover_both_workers_online_and_offline(tmp_path: Path) -> None:
    upstream = MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]).start()
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), sources=SOURCES, workers=2)
    with upstream, launch(relay):
        bad, good = send_round(relay, "first")
        # each worker holds part of them (its own ring, its own shard's store)
        parts = [worker_view(relay, w, "rejections") for w in (0, 1)]
        assert all(part["rejections"] for part in parts), [len(p["rejections"]) for p in parts]
        assert sum(part["stored"]["web"]["records"] for part in parts) == len(bad)

        # one answer, whichever worker gives it: every rejection, newest first, limit after the merge
        answer = http_request(relay.base_url + "/-/rejections?limit=1000").json()
        assert sorted(shown_paths(answer)) == sorted(bad)
        times = [r["time"] for r in answer["rejections"]]
        assert times == sorted(times, reverse=True)
        assert answer["top"]["web"] == [{"field": "host", "reason": "required", "count": len(bad)}]
        assert answer["stored"]["web"]["records"] == len(bad) and "incomplete" not in answer
        assert len(http_request(relay.base_url + "/-/rejections?limit=5").json()["rejections"]) == 5

        # the console's totals are both workers' sums, and what was sent
        state = http_request(relay.base_url + "/-/console/state").json()
        own = [worker_view(relay, w, "console/state") for w in (0, 1)]
        web = state["sources"][0]["totals"]
        for figure in ("requests", "accepted", "rejected"):
            assert web[figure] == sum(o["sources"][0]["totals"][figure] for o in own), figure
        assert all(o["sources"][0]["totals"]["requests"] for o in own)  # both took traffic
        assert (web["requests"], web["accepted"], web["rejected"]) == (REQUESTS, len(good), len(bad))
        assert state["disk"]["max"] == sum(o["disk"]["max"] for o in own)

        def disk_used_is_the_shards_sum() -> bool:  # the queue's files change while delivery goes on
            merged = http_request(relay.base_url + "/-/console/state").json()["disk"]["used"]
            return merged == sum(worker_view(relay, w, "console/state")["disk"]["used"] for w in (0, 1))
        wait_until(lambda: {e["path"] for e in upstream.entries()} >= good, timeout=60, message=relay.log_tail)
        wait_until(disk_used_is_the_shards_sum, timeout=30, message="disk used: the sum of both shards")
        assert state["ready"] and [(w["worker"], w["ready"]) for w in state["workers"]] == [(0, True), (1, True)]

        # fixed and reloaded on both workers, the replay maps every shard's records again
        relay.config_path.write_text(relay.config_path.read_text().replace(SOURCES, FIX))
        assert http_request(relay.base_url + "/-/reload", "POST").status == 200
        replayed = http_request(relay.base_url + "/-/rejections/replay", "POST").json()
        assert replayed == {"status": "replayed", "replayed": len(bad), "accepted": len(bad), "still_rejected": 0,
                            "filtered": 0, "reasons": {}}, replayed
        wait_until(lambda: {e["path"] for e in upstream.entries()} >= bad | good, timeout=60, message=relay.log_tail)
        paths = [e["path"] for e in upstream.entries()]
        assert sorted(paths) == sorted(bad | good), "each entry once: none lost, none twice"
        assert http_request(relay.base_url + "/-/rejections").json()["stored"]["web"]["records"] == 0

        # stopped: `relay rejected` opens every shard itself
        relay.config_path.write_text(relay.config_path.read_text().replace(FIX, SOURCES))
        assert http_request(relay.base_url + "/-/reload", "POST").status == 200
        bad2, good2 = send_round(relay, "second")
        assert all(worker_view(relay, w, "rejections")["stored"]["web"]["records"] for w in (0, 1))
        assert relay.terminate(30) == 0
        offline = rejected(tmp_path, relay, "list", "--json", "--limit", "1000", name="list-offline")
        assert sorted(shown_paths(offline)) == sorted(bad2)
        assert offline["stored"]["web"]["records"] == len(bad2)
        relay.config_path.write_text(relay.config_path.read_text().replace(SOURCES, FIX))
        again = rejected(tmp_path, relay, "replay", name="replay-offline")
        assert (again["replayed"], again["accepted"], again["still_rejected"]) == (len(bad2), len(bad2), 0)
        # started again, each worker delivers what the replay queued in its shard
        launch(relay)
        wait_until(lambda: {e["path"] for e in upstream.entries()} >= bad | good | bad2 | good2, timeout=60,
                   message=relay.log_tail)
        paths = [e["path"] for e in upstream.entries()]
        assert sorted(paths) == sorted(bad | good | bad2 | good2)


def test_the_console_opens_with_two_workers_and_shows_both(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            launch(Relay(tmp_path, sink_toml("profound", upstream.url, KEY), sources=SOURCES, workers=2)) as relay:
        bad, _ = send_round(relay, "seen")
        browser.get(f"{relay.base_url}/-/console")  # a loopback client: no token needed
        wait_for(browser, lambda d: d.find_elements("css selector", "#sinks .card"), "the sink cards")
        dots = wait_for(browser, lambda d: d.find_elements("css selector", "#workers .worker-dot"), "worker dots")
        assert [d.get_attribute("data-ready") for d in dots] == ["true", "true"]
        assert browser.find_element("id", "workers").text.startswith("2")
        wait_for(browser, lambda d: len(d.find_elements("css selector", "#rejections li.rejection")) >= len(bad),
                 "every worker's rejections in the list")
        assert console_errors(browser) == []

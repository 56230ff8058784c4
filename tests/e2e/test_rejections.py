"""Rejected records, end to end: seen with their record and reason, fixed by a reload, replayed.

A real `relay serve` and `relay mock-upstream`; the CLI as its own process; kill -9 as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.support import MockUpstream, Process, http_request, wait_until

KEY = "upstream-key-4f9a1c"
SOURCE_TOKEN = "source-token-8d2e77"
ADMIN = "admin-token-51b0c3"
LEAK = "leaky-secret-3e5f99"
SOURCES = f'[sources.web]\nmapping = "profound"\ntokens = ["{SOURCE_TOKEN}"]\n'


def record(path: str, **extra: Any) -> dict[str, Any]:
    return {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "path": path, "status_code": 200,
            "ip": "192.0.2.1", "user_agent": "curl/8", **extra}


def start_relay(tmp_path: Path, upstream: MockUpstream) -> Relay:
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), sources=SOURCES)
    text = relay.config_path.read_text()
    relay.config_path.write_text(text.replace("[server]\n", f'[server]\nadmin_token = "{ADMIN}"\n', 1))
    return relay.start()


def admin(relay: Relay, method: str, path: str, token: str | None = ADMIN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http_request(relay.base_url + path, method, headers=headers)


def cli(tmp_path: Path, relay: Relay, *args: str, name: str) -> str:
    with Process(["rejected", *args, "-c", str(relay.config_path)], tmp_path, name=name) as command:
        assert command.wait(60) == 0, command.log_tail()
    return command.log_text().split("\n", 1)[1]


def assert_no_secret(text: str) -> None:
    for secret in (KEY, SOURCE_TOKEN, ADMIN, LEAK, "k-zzzz-9"):
        assert secret not in text, secret


def test_rejections_are_shown_redacted_then_replayed_after_a_fix_and_survive_kill_9(tmp_path: Path) -> None:
    upstream = MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]).start()
    relay = start_relay(tmp_path, upstream)
    with upstream, relay:
        lines = [json.dumps(record(f"/fixed/{i}")) for i in range(4)]
        lines.insert(1, json.dumps(record("/fixed/leaky", authorization=f"Bearer {LEAK}", x_note=SOURCE_TOKEN)))
        # a credential under an innocent name: only the last guard (configured secrets) catches it
        lines.append(json.dumps(record("/still/bad-status", status_code=999, host="www.example.com",
                                       note=f"sent with {SOURCE_TOKEN}")))
        lines.append('{"path": "/still/not-json", "api_key": "k-zzzz-9", oops')
        lines.append(json.dumps(record("/ok/1", host="www.example.com")))
        response = http_request(relay.base_url + "/ingest/web", "POST", "\n".join(lines).encode(),
                                headers={"Content-Type": "application/x-ndjson",
                                         "Authorization": f"Bearer {SOURCE_TOKEN}"})
        assert response.status == 200 and response.json()["rejected"] == 7, response.body
        wait_until(lambda: [e["path"] for e in upstream.entries()] == ["/ok/1"], timeout=20)

        # seen: only with the admin token; each with its record (redacted) and reason, newest first
        assert admin(relay, "GET", "/-/rejections", token=None).status == 403
        assert admin(relay, "GET", "/-/rejections", token="wrong").status == 403
        assert admin(relay, "POST", "/-/rejections/replay", token=None).status == 403
        unknown = admin(relay, "GET", "/-/rejections?source=nope")
        assert unknown.status == 404 and "web" in unknown.json()["error"]
        shown = admin(relay, "GET", "/-/rejections?source=web&limit=50")
        assert shown.status == 200
        assert_no_secret(shown.body.decode())
        answer = shown.json()
        rejections = answer["rejections"]
        assert [r["index"] for r in rejections] == [6, 5, 4, 3, 2, 1, 0]
        by_index = {r["index"]: r for r in rejections}
        assert by_index[0]["field"] == "host" and by_index[0]["reason"] == "required"
        assert by_index[0]["record"] == record("/fixed/0") and by_index[0]["source"] == "web"
        assert by_index[1]["record"]["authorization"] == "[redacted]"
        assert by_index[5]["field"] == "status_code"
        assert by_index[6]["reason"] == "invalid_json" and "/still/not-json" in by_index[6]["record"]
        assert answer["top"]["web"][0] == {"field": "host", "reason": "required", "count": 5}
        assert answer["stored"]["web"]["records"] == 7 and answer["stored"]["web"]["bytes"] > 0
        listing = cli(tmp_path, relay, "list", "--source", "web", name="list")
        assert "/fixed/leaky" in listing and "required" in listing
        assert_no_secret(listing)

        # fixed: the source gets its host; the reload applies it
        relay.config_path.write_text(relay.config_path.read_text().replace(
            SOURCES, SOURCES + 'host = "www.example.com"\n'))
        assert admin(relay, "POST", "/-/reload").status == 200
        # replayed while upstream is down, then killed: what the replay answered for must be on disk
        upstream.set_faults(down=True)
        replayed = json.loads(cli(tmp_path, relay, "replay", "--source", "web", name="replay"))
        assert replayed == {"status": "replayed", "replayed": 7, "accepted": 5, "still_rejected": 2, "filtered": 0,
                            "reasons": {"range": 1, "invalid_json": 1}}, replayed
        assert_no_secret(json.dumps(replayed))
        relay.kill9()
        relay.start()
        upstream.clear_faults()
        fixed = {f"/fixed/{i}" for i in range(4)} | {"/fixed/leaky"}
        wait_until(lambda: {e["path"] for e in upstream.entries()} >= fixed, timeout=30, message=relay.log_tail)
        paths = [e["path"] for e in upstream.entries()]
        assert sorted(paths) == sorted(["/ok/1", *fixed]), paths  # each once: none lost, none twice
        assert all(e["host"] == "www.example.com" for e in upstream.entries())
        # what still fails stays, with its new reason, across the restart
        left = admin(relay, "GET", "/-/rejections?source=web").json()
        assert left["stored"]["web"]["records"] == 2
        assert 'relay_rejected_stored_records{source="web"} 2.0' in relay.metrics()
        again = json.loads(cli(tmp_path, relay, "replay", name="replay2"))
        assert (again["replayed"], again["accepted"], again["still_rejected"]) == (2, 0, 2)
        # with the relay stopped, the commands open the queue directory themselves
        relay.stop()
        offline = json.loads(cli(tmp_path, relay, "list", "--json", name="list-offline"))
        assert sorted(r["reason"] for r in offline["rejections"]) == ["invalid_json", "range"]
        assert_no_secret(json.dumps(offline))
        assert "sent with [redacted]" in json.dumps(offline)
        assert_no_secret(cli(tmp_path, relay, "list", name="list-offline-text"))
        offline = json.loads(cli(tmp_path, relay, "replay", "--source", "web", name="replay-offline"))
        assert (offline["replayed"], offline["accepted"], offline["still_rejected"]) == (2, 0, 2)

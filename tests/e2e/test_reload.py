"""Reload (SIGHUP, POST /-/reload): tokens, mappings and sinks change without losing a request."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.e2e.harness import PINNED_NOW, Relay, entries, gz_json, post_all, sink_toml
from tests.e2e.test_upstream_faults import JSON_GZ, KEY, delivered, send, wait_delivered
from tests.support import MockUpstream, http_request, wait_until


def test_sinks_added_and_removed_by_reload_under_load(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as first, \
            MockUpstream(tmp_path, name="second", api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as second:
        relay = Relay(tmp_path, sink_toml("first", first.url, KEY))
        with relay:
            before = send(relay, 2, per_request=100)
            config = relay.config_path.read_text()
            relay.config_path.write_text(config + "\n" + sink_toml("second", second.url, KEY))

            async def load_while_reloading() -> list[tuple[int, int, object]]:
                bodies = [(i, gz_json(entries(10_000 + i * 100, 100))) for i in range(40)]
                sending = asyncio.create_task(post_all(relay.base_url + "/v1/logs/custom", bodies,
                                                       headers=JSON_GZ, concurrency=4))
                await asyncio.sleep(0.05)  # let some requests be in flight when the signal lands
                relay.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
                return await sending

            results = asyncio.run(load_while_reloading())
            assert {status for _, status, _ in results} == {200}  # no request dropped by the reload
            wait_until(lambda: "sink second added" in relay.log_text(), timeout=10, message=relay.log_tail)
            during = {e["path"] for e in entries(10_000, 4000)}
            wait_delivered(first, relay, before | during)
            after = send(relay, 2, per_request=100, start=50_000)
            wait_delivered(second, relay, after)  # routed to the new sink too
            wait_delivered(first, relay, after)
            # Remove the first sink: its data stays on disk, the second goes on.
            first.set_faults(down=True)
            kept = send(relay, 1, per_request=50, start=60_000)
            relay.config_path.write_text(config.replace("[sinks.first]", "[sinks.second]").replace(first.url, second.url))
            answer = http_request(relay.base_url + "/-/reload", "POST").json()
            assert any("sink first removed" in change for change in answer["changes"]), answer
            later = send(relay, 1, per_request=50, start=70_000)
            wait_delivered(second, relay, later)
            assert not set(delivered(first)) & kept
        # Configured again after a restart, the first sink delivers what it kept on disk.
        relay.config_path.write_text(config)
        first.clear_faults()
        with relay:
            wait_delivered(first, relay, kept)


def test_reload_changes_tokens_and_mappings(tmp_path: Path) -> None:
    sources = '[sources.app]\nmapping = "profound"\ntokens = ["old-token-1"]\n'
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY), extra=sources) as relay:
        url = relay.base_url + "/ingest/app"
        old, new = {"Authorization": "Bearer old-token-1"}, {"Authorization": "Bearer new-token-2"}
        assert http_request(url, "POST", entries(0, 1), headers=old).status == 200
        text = relay.config_path.read_text().replace("old-token-1", "new-token-2")
        text = text.replace('mapping = "profound"\ntokens', 'mapping = "lower"\ntokens')
        relay.config_path.write_text(text + '\n[mappings.lower]\nextends = "profound"\n'
                                     'path = { from = "path" }\nmethod = { value = "HEAD" }\n')
        assert http_request(relay.base_url + "/-/reload", "POST").status == 200
        assert http_request(url, "POST", entries(1, 1), headers=old).status == 401
        assert http_request(url, "POST", entries(1, 1), headers=new).status == 200
        wait_until(lambda: len(upstream.entries()) == 2, timeout=20)
        assert [e["method"] for e in sorted(upstream.entries(), key=lambda e: e["path"])] == ["GET", "HEAD"]
        assert "relay_config_reloads_total{result=\"ok\"} 1.0" in relay.metrics()

"""Reload (SIGHUP, POST /-/reload): tokens, mappings and sinks change without losing a request."""

from __future__ import annotations

import asyncio
import json
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


# -- every section of the config: applied and named, or refused naming the key (issue 13 #5) ---------


def reload_to(relay: Relay, text: str) -> tuple[int, dict[str, object]]:
    """Write the config and POST /-/reload; (status, answer)."""
    relay.config_path.write_text(text)
    response = http_request(relay.base_url + "/-/reload", "POST")
    return response.status, response.json()


def edit(relay: Relay, old: str, new: str) -> str:
    text = relay.config_path.read_text()
    assert old in text, old
    return text.replace(old, new, 1)


def test_reload_applies_validation_and_names_it(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        url = relay.base_url + "/v1/logs/custom"
        status, answer = reload_to(relay, edit(relay, "[validation]\n", '[validation]\non_invalid = "reject"\n'))
        assert status == 200 and answer["changes"] == ['validation.on_invalid = "reject"'], answer
        lower = entries(0, 1, method="get")
        assert http_request(url, "POST", lower).json()["rejected"] == 1
        status, answer = reload_to(relay, edit(relay, 'on_invalid = "reject"', 'on_invalid = "repair"'))
        assert status == 200 and answer["changes"] == ['validation.on_invalid = "repair"'], answer
        assert http_request(url, "POST", lower).json()["accepted"] == 1
        relay.wait_for_log(r'config reloaded from .*: validation\.on_invalid = "repair"')
        wait_until(lambda: [e["method"] for e in upstream.entries()] == ["GET"], timeout=20)


def test_reload_applies_log_settings_and_names_them(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        status, answer = reload_to(relay, edit(relay, 'level = "info"\n', 'level = "warning"\nformat = "json"\n'))
        assert status == 200 and answer["changes"] == ['log.level = "warning"', 'log.format = "json"'], answer
        # both apply at once: a refused SIGHUP reload logs its error as JSON, the info lines are gone
        relay.config_path.write_text(edit(relay, "[validation]\n", '[validation]\non_invalid = "sometimes"\n'))
        relay.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        line = relay.wait_for_log(r'\{"[^\n]*reload refused[^\n]*').group(0)
        assert json.loads(line)["level"] == "error", line
        assert http_request(relay.base_url + "/v1/logs/custom", "POST", entries(0, 1)).status == 200
        assert "config reloaded" not in relay.log_text()  # the info line of the reload that set warning


def test_reload_applies_server_settings_and_refuses_the_restart_only_ones(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        status, answer = reload_to(relay, edit(relay, 'shutdown_grace = "10s"\n',
                                               'shutdown_grace = "12s"\nmax_body_memory = "64MiB"\n'
                                               'admin_token = "admin-secret-77"\n'))
        assert status == 200, answer
        assert answer["changes"] == ['server.max_body_memory = 67108864', 'server.shutdown_grace = 12',
                                     "server.admin_token changed"], answer
        assert "admin-secret-77" not in relay.log_text()
        admin = {"Authorization": "Bearer admin-secret-77"}
        assert http_request(relay.base_url + "/-/reload", "POST").status == 403  # the token applies at once
        for key, line in (("server.max_body_size", 'max_body_size = "1MiB"\n'),
                          ("server.read_timeout", 'read_timeout = "5s"\n')):
            relay.config_path.write_text(edit(relay, "[server]\n", "[server]\n" + line))
            response = http_request(relay.base_url + "/-/reload", "POST", headers=admin)
            assert response.status == 400 and f"{key}: changes only on restart" in response.json()["error"]
            relay.config_path.write_text(edit(relay, line, ""))
        assert http_request(relay.base_url + "/healthz").status == 200


def test_reload_applies_queue_limits_and_refuses_its_path(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        status, answer = reload_to(relay, edit(relay, 'max_size = "1GiB"\n',
                                               'max_size = "2GiB"\nmin_free_space = "32MiB"\n'))
        assert status == 200, answer
        assert answer["changes"] == ["queue.max_size = 2147483648", "queue.min_free_space = 33554432"], answer
        assert "relay_queue_max_bytes 2.147483648e+09" in relay.metrics()
        status, answer = reload_to(relay, edit(relay, 'sync = "normal"', 'sync = "full"'))
        assert status == 400 and "queue.sync: changes only on restart" in str(answer["error"]), answer


def test_reload_names_the_sources_sinks_and_mappings_it_changed(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        text = edit(relay, 'host = "www.example.com"\n', 'host = "shop.example.com"\ntokens = ["t-1"]\n')
        status, answer = reload_to(relay, text + '\n[sources.extra]\nmapping = "mine"\n'
                                   '[mappings.mine]\nextends = "profound"\n')
        assert status == 200, answer
        assert answer["changes"] == ["sources.fluentbit changed (tokens, host)", "sources.extra added",
                                     "mappings.mine added"], answer
        status, answer = reload_to(relay, edit(relay, 'extends = "profound"\n',
                                               'extends = "profound"\nmethod = { value = "HEAD" }\n'))
        assert status == 200 and answer["changes"] == ["mappings.mine recompiled"], answer
        status, answer = reload_to(relay, edit(relay, "request_timeout = \"5s\"", "request_timeout = \"9s\""))
        assert status == 200 and answer["changes"] == ["sink profound restarted with new settings"], answer
        status, answer = reload_to(relay, relay.config_path.read_text() + "\n# a comment\n")
        assert status == 200 and answer["changes"] == [], answer
        relay.wait_for_log(r"config reloaded from .*: no setting changed")
        assert "no changes" not in relay.log_text()

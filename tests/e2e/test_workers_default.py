"""A config without `server.workers`: the default, "auto", serves with one worker per usable core.

The harness writes `workers = 1` for every other test; this one leaves the key out, as
configs/relay.toml and `make run` do.
"""

from __future__ import annotations

import re
from pathlib import Path

from relay import cores
from relay.config import MAX_WORKERS, load
from tests.e2e.harness import Relay, entries, sink_toml
from tests.e2e.test_workers import launch
from tests.support import MockUpstream, http_request, process_tree, wait_until

KEY = "test-key"


def test_no_workers_key_starts_one_worker_per_core_and_delivers(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], verbose=False) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), workers=None)
        # the harness's 1 GiB queue holds 4 bodies for each; a cgroup's memory limit may hold fewer
        fit = load(relay.config_path).memory_fit(cores.memory_limit())
        expected = max(1, min(cores.usable(), MAX_WORKERS, fit))
        assert not re.search(r"^workers\s*=", relay.config_path.read_text(), re.M)
        with launch(relay):
            if expected > 1:  # a supervisor that serves nothing, and its workers
                started = {int(i) for i in re.findall(r"worker (\d+) started \(pid \d+\)", relay.log_text())}
                assert started == set(range(expected)), relay.log_tail()
                said = f'relay supervisor: {expected} workers (server.workers = "auto": {cores.usable()} usable cores'
                assert said in relay.log_text(), relay.log_tail()
                if fit < cores.usable():
                    assert "fewer so that they fit the cgroup's memory limit" in relay.log_text()
                assert len(process_tree(relay.pid)) == expected + 1
                assert [w["worker"] for w in http_request(relay.base_url + "/-/reload", "POST").json()["workers"]] \
                    == list(range(expected))
            else:
                assert len(process_tree(relay.pid)) == 1 and "worker 0 started" not in relay.log_text()
            assert http_request(relay.base_url + "/v1/logs/custom", "POST", entries(0, 3)).status == 200
            wait_until(lambda: {e["path"] for e in upstream.entries()} == {"/e2e/0", "/e2e/1", "/e2e/2"},
                       timeout=30, message=relay.log_tail)

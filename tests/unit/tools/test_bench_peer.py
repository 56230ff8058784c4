"""`relay bench --peer`: the real Fluent Bit in the relay's place on the same load, or one clear skip line.

The peer run uses the real binary when there is one (tests.support.fluent_bit_binary:
FLUENT_BIT_BIN, PATH, or ../shared/peers/fluent-bit), named to the bench by FLUENT_BIT_BIN, and checks that nothing is lost or duplicated by either;
it never asserts a speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from relay.tools.bench import peers
from relay.tools.bench.compare import peer_table, summarize
from tests.support import PEER_MISSING, REPO_ROOT, fluent_bit_binary

FLUENT_BIT = fluent_bit_binary()


def bench(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", "bench", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def env_without(program: str, **extra: str) -> dict[str, str]:
    """The environment with PATH cut to directories that do not hold `program`."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / program).exists()]
    return {**os.environ, "PATH": os.pathsep.join(path), **extra}


@pytest.mark.skipif(FLUENT_BIT is None, reason=PEER_MISSING)
def test_fluent_bit_peer_runs_turn_about_and_neither_loses_an_entry(tmp_path: Path) -> None:
    # The fluentbit workload: Fluent Bit's rename filter and its string ids are on the path.
    done = bench("--json", "--quiet", "--peer", "fluent-bit", "--workload", "fluentbit", "--duration", "2s",
                 "--rounds", "1", "--rate", "20000", "--records", "500", "--keep", str(tmp_path),
                 env={**os.environ, "FLUENT_BIT_BIN": str(FLUENT_BIT)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["peer"] == "fluent-bit" and result["peer_version"].startswith("Fluent Bit")
    assert [(t["round"], t["subject"]) for t in result["turns"]] == [(1, "relay"), (1, "fluent-bit")]
    for turn in result["turns"]:
        assert turn["upstream"] == "sink" and turn["ids_checked"] is True
        assert turn["entries_acked"] > 0 and turn["errors"] == 0
        assert turn["entries_delivered"] == turn["entries_acked"]
        assert turn["losses"] == 0 and turn["duplicates"] == 0
        assert turn["cpu_us_per_delivered_entry"] > 0 and turn["relay_peak_rss_mb"] > 0
    relay, peer = result["turns"]
    assert set(relay["status"]) == {"200"}
    assert set(peer["status"]) == {"201"}  # in_http's own answer, counted as an acknowledgement
    summary = result["summary"]
    assert summary["fluent-bit"]["losses"] == summary["relay"]["losses"] == 0
    assert set(summary["relay_over_peer"]) == {"acked_per_s", "delivered_per_s", "cpu_us_per_delivered_entry",
                                                "peak_rss_mb"}
    conf = (tmp_path / "round1-fluent-bit" / "fluent-bit.conf").read_text()
    for setting in ("storage.type      filesystem", "format        json", "compress      gzip",
                    "retry_limit   no_limits", "json_date_key false", "workers       2"):
        assert setting in conf
    assert "rename size bytes_sent" in conf


def test_skips_on_one_line_when_no_fluent_bit_binary(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-fluent-bit")
    env = env_without("fluent-bit", FLUENT_BIT_BIN=missing)
    done = bench("--peer", "fluent-bit", "--duration", "1s", env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    why = f"FLUENT_BIT_BIN={missing} is not an executable file"
    assert done.stdout == f"relay bench: skipped --peer fluent-bit: {why}\n"
    done = bench("--peer", "fluent-bit", "--json", env=env, timeout=30)
    assert done.returncode == 0 and json.loads(done.stdout)["skipped"].startswith("FLUENT_BIT_BIN=")


def test_binary_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fluent_bit = peers.PEERS["fluent-bit"]
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "fluent-bit").write_text("#!/bin/sh\n")
    (on_path / "fluent-bit").chmod(0o755)
    named = tmp_path / "named"
    named.write_text("#!/bin/sh\n")
    named.chmod(0o755)
    assert peers.find_binary(fluent_bit, {"FLUENT_BIT_BIN": str(named), "PATH": str(on_path)}) == (named,
                                                                                                   "FLUENT_BIT_BIN")
    assert peers.find_binary(fluent_bit, {"PATH": str(on_path)}) == (on_path / "fluent-bit", "PATH")
    # a relative name (FLUENT_BIT_BIN=../shared/peers/fluent-bit) is made absolute: the peer starts in a work dir
    monkeypatch.chdir(tmp_path)
    assert peers.find_binary(fluent_bit, {"FLUENT_BIT_BIN": "named"}) == (named, "FLUENT_BIT_BIN")
    binary, why = peers.find_binary(fluent_bit, {"PATH": str(tmp_path)})
    assert binary is None and why == "no fluent-bit binary: FLUENT_BIT_BIN unset and none on PATH"


def test_vector_skips_and_shows_the_config_it_would_use() -> None:
    done = bench("--peer", "vector", env=env_without("vector", VECTOR_BIN=""), timeout=30)
    assert done.returncode == 0, done.stderr
    first, _, rest = done.stdout.partition("\n")
    assert first.startswith("relay bench: skipped --peer vector: no vector binary")
    config = tomllib.loads(rest.partition("\n")[2])
    assert config["sources"]["ingest"]["type"] == "http_server"
    sink = config["sinks"]["upstream"]
    assert sink["compression"] == "gzip" and sink["buffer"]["type"] == "disk"
    assert sink["acknowledgements"]["enabled"] is True


def _turn(subject: str, round_: int, acked: int, delivered_per_s: float, cpu: float, rss: float,
          losses: int = 0) -> dict[str, Any]:
    return {"subject": subject, "round": round_, "workload": "passthrough", "records_per_request": 1000,
            "concurrency": 8, "duration_s": 10.0, "sync": "normal", "ids_checked": True,
            "entries_acked": acked, "entries_delivered": acked - losses, "acked_per_s": acked / 10,
            "delivered_per_s": delivered_per_s, "relay_cpu_s_per_million": cpu, "relay_peak_rss_mb": rss,
            "cpu_us_per_delivered_entry": cpu, "losses": losses, "duplicates": 0}


def test_summary_totals_over_turns_and_ratios() -> None:
    turns = [_turn("relay", 1, 1_000_000, 90_000, 5.0, 60), _turn("fluent-bit", 1, 500_000, 50_000, 8.0, 30),
             _turn("relay", 2, 2_000_000, 190_000, 5.0, 70), _turn("fluent-bit", 2, 500_000, 50_000, 8.0, 40, 7)]
    summary = summarize(turns, "fluent-bit")
    assert summary["relay"]["acked_per_s"] == 150_000 and summary["relay"]["delivered_per_s"] == 140_000
    assert summary["relay"]["peak_rss_mb"] == 70 and summary["fluent-bit"]["losses"] == 7
    assert summary["relay_over_peer"]["acked_per_s"] == 3.0
    assert summary["relay_over_peer"]["delivered_per_s"] == 2.8
    assert summary["relay_over_peer"]["peak_rss_mb"] == 1.75
    text = peer_table({"peer": "fluent-bit", "peer_version": "Fluent Bit v4.2.8", "peer_binary": "/x",
                       "peer_settings": "in_http -> out_http", "rounds": 2, "turns": turns, "summary": summary})
    lines = text.splitlines()
    assert lines[0].startswith("relay vs fluent-bit: passthrough (1000 entries/request), 8 clients")
    assert lines[5].split()[:2] == ["round", "2"] and lines[5].split()[-2:] == ["7", "0"]
    assert lines[8].startswith("relay / fluent-bit") and "3.00x" in lines[8]
    assert "Fluent Bit v4.2.8 (/x): in_http -> out_http" in text

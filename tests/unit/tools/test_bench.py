"""`relay bench` as users run it: real relay, mock upstream and load generator processes.

Short runs that check the command works and that nothing is lost or duplicated; never a
speed threshold (that is the bench's job on a quiet machine, not the suite's).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest
from isal import igzip

from relay import cores
from relay.config import load as load_config
from relay.stages.protocols import decoder, loki, otlp
from relay.tools.bench.records import (
    NOT_OURS,
    base_records,
    check_unique_slots,
    entry_token,
    frame,
    id_in_path,
    ids_in,
    spooled_ids,
    token_index,
)
from relay.tools.bench.report import check_ids, table
from relay.tools.bench.workloads import PROTOCOL_WORKLOADS, WORKLOADS, build_bodies, workload
from tests.support import FIXTURES, REPO_ROOT

KEYS = {
    "workload", "sync", "workers", "workers_setting", "records_per_request", "duration_s", "concurrency", "rate_cap", "upstream",
    "requests_acked", "entries_acked", "entries_delivered", "requests_per_s", "acked_per_s",
    "delivered_per_s", "end_to_end_per_s", "backlog_at_stop", "keeps_up", "drain_s", "latency_ms",
    "relay_cpu_s_per_million", "relay_cpu_cores", "relay_peak_rss_mb", "bytes_in", "bytes_upstream",
    "upstream_cpu_s_per_million", "loadgen_cpu_s_per_million", "other_cpu_cores", "errors", "rejected", "status",
    "duplicates", "losses", "ids_checked", "relay_exit_status", "machine",
}


def bench(*args: str, keep: Path | None = None) -> tuple[int, dict[str, Any], str]:
    command = [sys.executable, "-m", "relay", "bench", "--json", *args]
    if keep is not None:
        command += ["--keep", str(keep)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode in (0, 1), f"status {done.returncode}\n{done.stderr[-3000:]}"
    return done.returncode, json.loads(done.stdout), done.stderr


# One worker each, but for the first: the default, "auto" (one per core), which the table resolves.
@pytest.mark.parametrize("load,extra", [
    ("fluentbit", ["--rate", "60000"]),
    ("passthrough", ["--rate", "60000", "--sync", "full", "--workers", "1"]),
    ("ndjson", ["--rate", "60000", "--upstream", "sink", "--workers", "1"]),  # the lean sink reads the ids too
    ("single", ["--sync", "full", "--workers", "1"]),
    ("otlp", ["--rate", "20000", "--workers", "1"]),
    ("loki", ["--rate", "20000", "--upstream", "sink", "--workers", "1"]),
])
def test_short_run_delivers_every_entry_once(load: str, extra: list[str], tmp_path: Path) -> None:
    status, result, progress = bench("--workload", load, "--duration", "2s", *extra, keep=tmp_path)
    assert status == 0, result
    assert set(result) == KEYS
    assert result["workload"] == load and result["ids_checked"] is True
    assert result["entries_acked"] > 0 and result["errors"] == 0 and result["rejected"] == 0
    assert result["entries_delivered"] == result["entries_acked"]
    assert result["duplicates"] == 0 and result["losses"] == 0
    assert result["relay_exit_status"] == 0
    # drained when upstream took its last entries, on the system's clock: never before the load's end
    assert 0 <= result["drain_s"] < 60 and result["end_to_end_per_s"] <= result["acked_per_s"] * 1.01
    assert result["relay_cpu_s_per_million"] > 0 and result["relay_peak_rss_mb"] > 0
    assert result["bytes_in"] > 0 and result["bytes_upstream"] > 0
    assert set(result["latency_ms"]) == {"p50", "p95", "p99"}
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    # a progress line a second (the first may come at 2s when building the bodies loaded the machine)
    assert re.search(r"bench +\d+s: acked +[\d,]+/s +delivered", progress), progress
    assert (tmp_path / "relay.toml").is_file() and (tmp_path / "relay.log").is_file()
    assert "duplicates / losses     0 / 0" in table(result)
    if "--workers" in extra:
        assert (result["workers"], result["workers_setting"]) == (1, 1) and "workers=1," in table(result)
    else:  # the bench's config: 16GiB of queue, 64MiB bodies, so "auto" is every usable core up to 64
        fit = load_config(tmp_path / "relay.toml").memory_fit(cores.memory_limit())  # and what a cgroup's memory holds
        count = max(1, min(cores.usable(), 64, fit))
        assert (result["workers"], result["workers_setting"]) == (count, "auto")
        assert f"workers={count} (auto)," in table(result)


def test_two_workers_deliver_every_entry_once(tmp_path: Path) -> None:
    status, result, _ = bench("--workload", "passthrough", "--duration", "2s", "--rate", "40000",
                              "--workers", "2", keep=tmp_path)
    assert status == 0, result
    assert result["workers"] == 2 and result["relay_exit_status"] == 0
    assert result["entries_delivered"] == result["entries_acked"] > 0
    assert result["duplicates"] == 0 and result["losses"] == 0
    assert "workers=2" in table(result)
    assert "worker 1 started" in (tmp_path / "relay.log").read_text()


def test_lean_sink_upstream_and_count_only_check(tmp_path: Path) -> None:
    status, result, _ = bench("--workload", "fluentbit", "--duration", "2s", "--rate", "40000",
                              "--upstream", "sink", "--no-verify", "--records", "500")
    assert status == 0, result
    assert result["upstream"] == "sink" and result["ids_checked"] is False
    assert result["records_per_request"] == 500
    assert result["entries_delivered"] == result["entries_acked"] > 0


def test_check_ids_counts_what_was_lost_and_what_came_twice() -> None:
    acks = [1, 2, 0]  # body 0 acknowledged once, body 1 twice (sent again), body 2 never
    delivered = array("Q", [0, 1, 2, 3, 2, 3, 3, 4, 99])  # per_body 2: ids 0-1, 2-3, 4-5
    duplicates, losses = check_ids(delivered, acks, per_body=2)
    assert duplicates == 1 + 1 + 1  # id 3 a third time, id 4 never acknowledged, 99 not ours
    assert losses == 0
    # id 1 never came; ids 2 and 3 (acknowledged twice) came once each
    assert check_ids(array("Q", [0, 2, 3]), acks, per_body=2) == (0, 1 + 1 + 1)


def test_the_sinks_spool_gives_back_every_id_in_order(tmp_path: Path) -> None:
    bodies = list(build_bodies(workload("passthrough", 3), 2))
    foreign = b'[{"path":"/no-id-here"}]'
    spool = tmp_path / "spool"
    spool.write_bytes(frame(bodies[0], 3, gzipped=True) + frame(foreign, 1, gzipped=False)
                      + frame(bodies[1], 3, gzipped=True))
    assert list(spooled_ids(spool)) == [0, 1, 2, NOT_OURS, 3, 4, 5]
    whole = frame(bodies[0], 3, gzipped=True)
    spool.write_bytes(whole[:-1])
    with pytest.raises(ValueError, match="ends inside a body at byte 0"):
        spooled_ids(spool)
    spool.write_bytes(whole + whole[:5])
    with pytest.raises(ValueError, match=f"ends inside a frame header at byte {len(whole)}"):
        spooled_ids(spool)


@pytest.mark.parametrize("name", WORKLOADS)
def test_bodies_carry_unique_ids_in_their_paths(name: str) -> None:
    load = workload(name, 300)
    count = 3 if load.per_body > 1 else 600
    bodies = list(build_bodies(load, count))
    assert len(set(bodies)) == count
    raw = [igzip.decompress(body) if load.gzip else body for body in bodies]
    if name in ("otlp", "loki"):  # the paths the protocol's preset maps; ids_in reads them upstream
        decode = otlp.decode if name == "otlp" else loki.decode
        decoded = [r for body in raw for r in decode(body, content_type=load.content_type, path=load.path,
                                                       max_size=1 << 26).records]
        paths = [r["attributes"]["url.path"] if name == "otlp" else r["json"]["request_uri"] for r in decoded]
        assert [id_in_path(path) for path in paths] == list(range(count * load.per_body))
        return
    if name in PROTOCOL_WORKLOADS:  # as the protocol's source decodes it
        decode = decoder(PROTOCOL_WORKLOADS[name][2])
        records = [r for body in raw for r in decode(body, content_type=load.content_type, path=load.path).records]
    elif load.content_type == "application/x-ndjson":
        records = [json.loads(line) for body in raw for line in body.splitlines()]
    else:
        records = [record for body in raw for record in json.loads(body)]
    assert len(records) == count * load.per_body
    assert [id_in_path(record["path"]) for record in records] == list(range(count * load.per_body))
    assert [i for body in raw for i in ids_in(body)] == list(range(count * load.per_body))


def test_fluentbit_bodies_have_the_shape_of_fluent_bits_nginx_records() -> None:
    captured = json.loads((FIXTURES / "fluent-bit" / "nginx-combined.json" / "records.jsonl").read_text()
                          .splitlines()[0])
    body = json.loads(igzip.decompress(next(build_bodies(workload("fluentbit", 50), 1))))
    for record in body:
        assert list(record) == list(captured)
        assert all(isinstance(value, str) for key, value in record.items() if key != "date")
        # whole seconds, as the captured body's: the nginx parser reads `$time_local`, which has no fraction
        assert isinstance(record["date"], float) and record["date"] == int(record["date"])
    assert captured["date"] == int(captured["date"])
    assert len({record["date"] for record in body}) > 1


def test_generated_traffic_is_varied_distinct_and_the_same_every_time() -> None:
    base = base_records()
    assert len(base) >= 100_000
    assert len({(r["path"], r["ip"], r["agent"], r["time"], tuple(r["query"].items())) for r in base}) == len(base)
    check_unique_slots(base)
    ids = {entry_token(n) for n in range(200_000)}
    assert len(ids) == 200_000 and all(token_index(entry_token(n)) == n for n in (0, 1, 99_999, 4_000_000))
    agents = [len(r["agent"]) for r in base]
    assert sum(150 <= n <= 300 for n in agents) > len(base) * 0.1 and max(agents) <= 300
    assert {r["method"] for r in base} >= {"GET", "POST", "HEAD", "PUT", "DELETE"}
    assert sum(r["method"] == "GET" for r in base) > len(base) * 0.75
    assert sum(r["status"] == 200 for r in base) > len(base) * 0.6
    assert {r["status"] // 100 for r in base} == {2, 3, 4, 5}
    v6 = sum(":" in r["ip"] for r in base)
    assert len(base) * 0.1 < v6 < len(base) * 0.5
    assert any(r["ip"].startswith("::ffff:") for r in base)
    assert sum(bool(r["query"]) for r in base) > len(base) * 0.2
    assert sum(r["referer"] != "-" for r in base) > len(base) * 0.3
    # seeded: a second process makes the same bytes
    here = next(build_bodies(workload("passthrough", 1000), 1))
    there = subprocess.run([sys.executable, "-c", "import sys; from relay.tools.bench.workloads import *; "
                            "sys.stdout.buffer.write(next(build_bodies(workload('passthrough', 1000), 1)))"],
                           capture_output=True, cwd=REPO_ROOT, timeout=120, check=True).stdout
    assert here == there
    raw = igzip.decompress(here)
    assert 300 <= len(raw) / 1000 <= 450, len(raw)  # bytes an entry in upstream form

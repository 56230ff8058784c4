"""`server.workers = 2`: real supervisor and worker processes, a real upstream, real kill -9.

What must hold with several workers as with one: traffic reaches every worker
(each commits to its own shard), nothing acknowledged is lost when one worker
or the whole process group is killed, a restart with fewer workers still
delivers every shard, and /metrics, /readyz, reload and dead letters speak for
the whole relay whichever worker answers.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.server.siblings import run_dir
from tests.e2e.harness import LoadThread, Relay, entries, gz_json, sink_toml
from tests.support import MockUpstream, Process, http_request, wait_until

KEY = "test-key"
HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
PER_BODY = 20


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("worker", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def worker_view(relay: Relay, worker: int, name: str) -> Any:
    """One worker's own part of a view, straight from its private socket (not merged)."""
    connection = UnixConnection(os.path.join(run_dir(str(relay.config_path.parent / "queue")), f"w{worker}.sock"))
    try:
        connection.request("POST", f"/view/{name}")
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        connection.close()


def worker_sample(relay: Relay, worker: int, sample: str, **labels: str) -> float:
    rows = worker_view(relay, worker, "metrics")
    return sum(row[5] for row in rows if row[3] == sample and all(row[4].get(k) == v for k, v in labels.items()))


def metric(relay: Relay, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in relay.metrics().splitlines() if line.startswith(line_start))


def worker_pids(relay: Relay) -> dict[int, int]:
    """The latest pid of each worker, as the supervisor logged it."""
    return {int(i): int(pid) for i, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", relay.log_text())}


def wait_ready(relay: Relay, timeout: float = 90) -> None:
    wait_until(lambda: relay._alive_or_fail() and http_request(relay.base_url + "/readyz").status == 200,
               timeout=timeout, ignore=(OSError,), message=lambda: f"/readyz of every worker\n{relay.log_tail()}")


def launch(relay: Relay) -> Relay:
    """Start it and wait until every worker is ready (N interpreters start slower than one)."""
    Process.start(relay)
    try:
        wait_ready(relay)
    except BaseException:
        relay.stop()  # not yet inside a `with`: nothing else would stop it
        raise
    return relay


def start_relay(tmp_path: Path, upstream: MockUpstream, workers: int = 2, **options: Any) -> Relay:
    return launch(Relay(tmp_path, sink_toml("profound", upstream.url, KEY, **options), workers=workers))


class Load(LoadThread):
    """Clients posting unique entries (/w/<tag>/<i>), a new connection per request, so the kernel
    spreads them across the workers; records which tags were acknowledged."""

    def __init__(self, url: str, clients: int = 4) -> None:
        super().__init__("workers-load")
        self.url, self.clients = url, clients
        self.acked: list[int] = []
        self.statuses: list[int] = []
        self._next = 0

    async def _main(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as session:
            await asyncio.gather(*(self._client(session) for _ in range(self.clients)))

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self._halt.is_set():
            tag, self._next = self._next, self._next + 1
            body = gz_json([{**e, "path": f"/w/{tag}/{i}"} for i, e in enumerate(entries(0, PER_BODY))])
            try:
                async with session.post(self.url, data=body, headers=HEADERS) as response:
                    await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError):
                status = 0
            self.statuses.append(status)
            if status == 200:
                self.acked.append(tag)
            await asyncio.sleep(0.01)  # load shaping, not synchronisation: leave the cores to the relay


def missing(acked: list[int], upstream: MockUpstream) -> list[str]:
    seen = {entry["path"] for entry in upstream.entries()}
    return [path for tag in acked for path in (f"/w/{tag}/{i}" for i in range(PER_BODY)) if path not in seen]


def wait_all_delivered(acked: list[int], upstream: MockUpstream, relay: Relay, timeout: float = 90) -> None:
    wait_until(lambda: not missing(acked, upstream), timeout=timeout,
               message=lambda: f"{len(missing(acked, upstream))} acknowledged entries never reached upstream, "
                               f"e.g. {missing(acked, upstream)[:3]}\n{relay.log_tail()}")


def run_load_until(relay: Relay, acked: int) -> Load:
    load = Load(relay.base_url + "/v1/logs/custom")
    load.start()
    wait_until(lambda: len(load.acked) >= acked, timeout=60, message=lambda: f"load acknowledged\n{relay.log_tail()}")
    return load


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[MockUpstream]:
    with MockUpstream(tmp_path, api_keys=[KEY], verbose=False) as mock:
        yield mock


def test_two_workers_share_the_port_and_answer_for_the_whole_relay(tmp_path: Path, upstream: MockUpstream) -> None:
    upstream.set_faults(reject_marker="/poison")
    with start_relay(tmp_path, upstream) as relay:
        bodies = []
        for tag in range(40):
            batch = [{**e, "path": f"/w/{tag}/{i}"} for i, e in enumerate(entries(0, PER_BODY))]
            batch[0]["path"] = f"/poison/{tag}"
            bodies.append(batch)
        for batch in bodies:  # urllib: a new connection each, so both workers get some
            assert http_request(relay.base_url + "/v1/logs/custom", "POST", batch).status == 200
        # each worker committed part of it to its own shard
        per_worker = [worker_sample(relay, w, "relay_entries_accepted_total", source="custom") for w in (0, 1)]
        assert all(per_worker) and sum(per_worker) == 40 * PER_BODY, per_worker
        assert (tmp_path / "queue" / "shard-1").is_dir()
        good = [path for batch in bodies for path in (e["path"] for e in batch) if not path.startswith("/poison")]
        wait_until(lambda: set(good) <= {e["path"] for e in upstream.entries()}, timeout=60, message=relay.log_tail)
        # /metrics speaks for both: accepted = delivered + dead-lettered
        wait_until(lambda: metric(relay, 'relay_dead_letter_entries{sink="profound"}') == 40, timeout=60,
                   message=relay.log_tail)
        assert metric(relay, 'relay_entries_accepted_total{source="custom"}') == 40 * PER_BODY
        assert metric(relay, 'relay_upstream_entries_delivered_total{sink="profound"}') == len(good)
        # dead letters of both shards, listed from whichever worker answers
        letters = http_request(relay.base_url + "/-/dead-letters").json()["dead_letters"]
        assert sorted(e["path"] for letter in letters for e in letter["entries"]) == \
            sorted(f"/poison/{tag}" for tag in range(40))
        assert {letter["worker"] for letter in letters} == {0, 1}
        assert http_request(relay.base_url + "/readyz").json() == {"status": "ready"}
        status = Process(["status", "--once", "--url", relay.base_url], tmp_path, name="status")
        with status:
            assert status.wait(30) == 0
        shown = status.log_text()
        assert "ready" in shown and "not ready" not in shown
        assert re.search(r"custom\s.*\b800\b", shown), shown  # the source's accepted entries, both workers'

        # /-/reload reaches both workers, and says what each applied
        text = relay.config_path.read_text()
        relay.config_path.write_text(text.replace('level = "info"', 'level = "debug"'))
        answer = http_request(relay.base_url + "/-/reload", "POST").json()
        assert answer["status"] == "reloaded"
        assert [(w["worker"], w["changes"]) for w in answer["workers"]] == \
            [(0, ['log.level = "debug"']), (1, ['log.level = "debug"'])]
        # SIGHUP to the supervisor: both reload
        relay.config_path.write_text(text.replace('level = "info"', 'level = "debug"')
                                     .replace('shutdown_grace = "10s"', 'shutdown_grace = "12s"'))
        os.kill(relay.pid, signal.SIGHUP)
        for w in (0, 1):
            relay.wait_for_log(rf"relay\[worker {w}\]: config reloaded from .*server.shutdown_grace = 12")

        # stopped, `relay dead-letter list` reads every shard's store from disk
        assert relay.terminate(30) == 0
        listing = Process(["dead-letter", "list", "-c", str(relay.config_path), "--json"], tmp_path, name="dl")
        with listing:
            assert listing.wait(30) == 0
        offline = json.loads(listing.log_text().split("\n", 1)[1])["dead_letters"]
        assert sorted(e["path"] for letter in offline for e in letter["entries"]) == \
            sorted(f"/poison/{tag}" for tag in range(40))
        assert {letter["worker"] for letter in offline} == {0, 1}
        launch(relay)

        # replay from both shards once upstream takes them
        upstream.clear_faults()
        assert http_request(relay.base_url + "/-/dead-letters/replay", "POST").json() == \
            {"status": "replayed", "entries": 40}
        wait_until(lambda: {f"/poison/{tag}" for tag in range(40)} <= {e["path"] for e in upstream.entries()},
                   timeout=60, message=relay.log_tail)
        assert relay.terminate(30) == 0


def test_kill_9_of_one_worker_under_load_loses_nothing_and_it_comes_back(tmp_path: Path,
                                                                       upstream: MockUpstream) -> None:
    upstream.set_faults(latency=0.1)  # sends are in flight at the kill
    with start_relay(tmp_path, upstream) as relay:
        load = run_load_until(relay, 30)
        victim = worker_pids(relay)[1]
        os.kill(victim, signal.SIGKILL)
        relay.wait_for_log(r"worker 1 \(shard 1\) exited with signal 9; restarting it")
        wait_until(lambda: worker_pids(relay)[1] != victim, message=relay.log_tail)
        wait_ready(relay)
        before = len(load.acked)
        wait_until(lambda: len(load.acked) >= before + 30, timeout=60, message=relay.log_tail)
        load.stop()
        assert relay.running
        assert worker_sample(relay, 1, "relay_entries_accepted_total", source="custom") > 0  # the new worker 1 serves
        wait_all_delivered(load.acked, upstream, relay)
        wait_until(lambda: metric(relay, "relay_queue_entries{") == 0, timeout=30, message=relay.log_tail)


def test_kill_9_of_the_whole_group_then_a_restart_delivers_everything(tmp_path: Path,
                                                                     upstream: MockUpstream) -> None:
    upstream.set_faults(down=True)  # everything acknowledged is still queued, in both shards, at the kill
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), workers=2)
    relay.new_session = True
    with launch(relay):
        load = run_load_until(relay, 40)
        os.killpg(relay.pid, signal.SIGKILL)
        load.stop()
        assert relay.wait() == -signal.SIGKILL
        pids = worker_pids(relay).values()
        wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in pids),
                   message="workers still running after the group was killed")
        upstream.clear_faults()
        assert not upstream.entries()
        launch(relay)
        wait_all_delivered(load.acked, upstream, relay)


def _alive(pid: int) -> bool:
    """Running, or still exiting: a process whose main thread is already a zombie holds its files, and
    their SQLite locks, until its last thread has exited (one in an fsync at the kill, say)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(") ", 1)[1][0] != "Z":
                return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except (FileNotFoundError, IndexError):
        return False


def test_a_restart_with_one_worker_delivers_what_two_left_in_their_shards(tmp_path: Path,
                                                                         upstream: MockUpstream) -> None:
    upstream.set_faults(down=True)
    with start_relay(tmp_path, upstream) as relay:
        load = run_load_until(relay, 30)
        load.stop()
        wait_until(lambda: worker_sample(relay, 1, "relay_queue_entries", sink="profound") > 0, timeout=20,
                   message=relay.log_tail)
        assert relay.terminate(30) == 0
    single = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), workers=1)
    upstream.clear_faults()
    with launch(single):
        single.wait_for_log(r"shard 1 \(left by a run with more workers\): delivering its \d+ queued entries")
        wait_all_delivered(load.acked, upstream, single)
        single.wait_for_log(r"shard 1 delivered in full; closed", timeout=30)
        wait_until(lambda: metric(single, "relay_queue_entries{") == 0, timeout=30, message=single.log_tail)
        assert "relay supervisor" not in single.log_text().rsplit("--- relay:", 1)[1]


def test_a_restart_with_one_worker_takes_over_the_dead_letters_of_the_other_shard(tmp_path: Path,
                                                                                 upstream: MockUpstream) -> None:
    """Dead letters in a shard nobody owns any more are listed, counted and replayed by its adopter."""
    upstream.set_faults(reject_marker="/poison")
    with start_relay(tmp_path, upstream) as relay:
        for tag in range(30):  # urllib: a new connection each, so both workers get some
            batch = [{**e, "path": f"/w/{tag}/{i}"} for i, e in enumerate(entries(0, 3))]
            batch[0]["path"] = f"/poison/{tag}"
            assert http_request(relay.base_url + "/v1/logs/custom", "POST", batch).status == 200
        wait_until(lambda: metric(relay, 'relay_dead_letter_entries{sink="profound"}') == 30, timeout=60,
                   message=relay.log_tail)
        in_shard_1 = worker_sample(relay, 1, "relay_dead_letter_entries", sink="profound")
        assert in_shard_1 > 0
        assert relay.terminate(30) == 0
    single = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), workers=1)
    with launch(single):
        single.wait_for_log(rf"shard 1: \d+ dead letters \({in_shard_1:.0f} entries\) for sink profound handed over")
        single.wait_for_log(r"shard 1 delivered in full; closed", timeout=30)
        assert metric(single, 'relay_dead_letter_entries{sink="profound"}') == 30
        letters = http_request(single.base_url + "/-/dead-letters").json()["dead_letters"]
        assert sorted(e["path"] for letter in letters for e in letter["entries"]) == \
            sorted(f"/poison/{tag}" for tag in range(30))
        upstream.clear_faults()
        assert http_request(single.base_url + "/-/dead-letters/replay", "POST").json() == \
            {"status": "replayed", "entries": 30}
        wait_until(lambda: {f"/poison/{tag}" for tag in range(30)} <= {e["path"] for e in upstream.entries()},
                   timeout=60, message=single.log_tail)
        wait_until(lambda: metric(single, 'relay_dead_letter_entries{sink="profound"}') == 0, timeout=30,
                   message=single.log_tail)
    # and the next start finds nothing left in shard 1 to hand over
    with launch(Relay(tmp_path, sink_toml("profound", upstream.url, KEY), workers=1)) as again:
        assert again.terminate(30) == 0
        assert "handed over" not in again.log_text().rsplit("--- relay:", 1)[1]


def test_a_worker_that_cannot_start_stops_the_relay_with_status_2(tmp_path: Path, upstream: MockUpstream) -> None:
    sources = '[sources.custom]\npath = "/v1/logs/custom"\nmapping = "no-such-mapping"\n'
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), workers=2, sources=sources)
    Process.start(relay)  # not Relay.start: it must never answer /healthz
    assert relay.wait(60) == 2
    assert "could not start (status 2" in relay.log_text()
    assert "no-such-mapping" in relay.log_text()


def test_a_supervisor_killed_alone_takes_its_workers_down_gracefully(tmp_path: Path, upstream: MockUpstream) -> None:
    upstream.set_faults(down=True)
    with start_relay(tmp_path, upstream) as relay:
        load = run_load_until(relay, 20)
        load.stop()
        pids = list(worker_pids(relay).values())
        relay.kill9()  # the supervisor only
        # each worker got SIGTERM (PR_SET_PDEATHSIG) and drained: none keeps serving unsupervised
        wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=30,
                   message=lambda: f"workers outlived their supervisor\n{relay.log_tail()}")
        assert relay.log_text().count("stopped; ") == 2, relay.log_tail()
        upstream.clear_faults()
        launch(relay)
        wait_all_delivered(load.acked, upstream, relay)


def test_a_damaged_page_in_one_shard_never_stops_the_other(tmp_path: Path, upstream: MockUpstream) -> None:
    """Issue 18 with shards: a data page of shard 1 overwritten after a kill -9 of the whole group;
    shard 1 is salvaged (its page's rows counted lost), shard 0 delivers all it held, both go on."""
    from tests.damage import checkpoint, overwrite, pages

    upstream.set_faults(down=True)
    relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), workers=2)
    relay.new_session = True
    with launch(relay):
        load = run_load_until(relay, 300)  # 6,000 entries over both shards
        load.stop()
        wait_until(lambda: worker_sample(relay, 1, "relay_queue_entries", sink="profound") >= 1_000
                   and worker_sample(relay, 0, "relay_queue_entries", sink="profound") >= 1_000,
                   timeout=30, message=relay.log_tail)
        os.killpg(relay.pid, signal.SIGKILL)
        relay.wait()
        pids = worker_pids(relay).values()
        wait_until(lambda: not any(_alive(pid) for pid in pids), message="workers still running after the kill")
        db = tmp_path / "queue" / "shard-1" / "cache.db"
        checkpoint(db)
        victim = pages(db, "Cache", "leaf")[1]
        overwrite(db, victim.number, victim.size)
        upstream.clear_faults()
        launch(relay)
        wait_until(lambda: metric(relay, "relay_queue_salvages_total") == 1, timeout=30, message=relay.log_tail)
        lost = metric(relay, "relay_queue_entries_lost_total")
        assert lost > 0
        acked = len(load.acked) * PER_BODY
        wait_until(lambda: len({e["path"] for e in upstream.entries()}) == acked - lost, timeout=90,
                   message=lambda: f"{len(upstream.entries())} of {acked - lost}\n{relay.log_tail()}")
        assert worker_sample(relay, 0, "relay_queue_entries_lost_total") == 0  # shard 0 lost nothing
        more = Load(relay.base_url + "/v1/logs/custom")  # new traffic, with tags of its own
        more._next = 100_000
        more.start()
        wait_until(lambda: len(more.acked) >= 10, timeout=60, message=relay.log_tail)
        more.stop()
        assert min(more.acked) >= 100_000
        wait_until(lambda: all(f"/w/{tag}/0" in {e["path"] for e in upstream.entries()} for tag in more.acked),
                   timeout=60, message=relay.log_tail)

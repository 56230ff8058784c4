"""kill -9 under load, and corrupt or torn queue records: no acknowledged entry is lost.

The oracle is Vector's: every entry the relay answered 200 for reaches upstream
at least once after any number of hard kills and restarts on the same data
directory; duplicates are allowed and reported. Corrupt queue records are
quarantined (log line and metric) and everything else still goes out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import diskcache
import pytest

from tests.e2e.harness import PINNED_NOW, LoadThread, Relay, fixture, gz_json, sink_toml
from tests.support import MockUpstream, Process, http_request, wait_until

KEY = "test-key"
JSON_GZ = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
CUSTOM_PATH = "/v1/logs/custom"
FLUENTBIT_PATH = "/ingest/fluentbit"
FIXTURE = "nginx-combined.json.gzip"  # replayed byte for byte, among unique Fluent Bit bodies
SEND_LATENCY = 0.15  # seconds the mock upstream holds each request: sends are in flight at a kill


def upstream_entry(path: str) -> dict[str, Any]:
    return {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "host": "www.example.com",
            "path": path, "status_code": 200, "ip": "192.0.2.1", "user_agent": "crash"}


def entry_key(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True)


# ---- what the relay acknowledged, and what arrived ----------------------------------------


@dataclass
class Ledger:
    """What the load clients were told, shared between the load thread and the test.

    A request's entries are /crash/<tag>/<i> for i < n; a 200 acknowledges all n of them.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[int, int] = field(default_factory=dict)  # tag -> entries acknowledged
    fixture_acks: int = 0  # byte-for-byte fixture bodies answered 200
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)  # 0: no answer
    unexpected: list[str] = field(default_factory=list)

    def record(self, status: int, answer: Any, tag: int | None, expected: int) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status != 200:
                return
            if not isinstance(answer, dict) or answer.get("accepted") != expected or answer.get("rejected"):
                self.unexpected.append(f"200 but {answer!r:.300}")
            elif tag is None:
                self.fixture_acks += 1
            else:
                self.acked[tag] = expected

    @property
    def requests_acked(self) -> int:
        with self.lock:
            return self.statuses[200]

    def snapshot(self) -> tuple[dict[int, int], int]:
        with self.lock:
            return dict(self.acked), self.fixture_acks


class Delivered:
    """The mock upstream's record file, read incrementally: how often each entry arrived."""

    def __init__(self, upstream: MockUpstream) -> None:
        self.path = upstream.record_path
        self.offset = 0
        self.unique: dict[int, bytearray] = {}  # tag -> arrivals per entry index (saturating)
        self.other: collections.Counter[str] = collections.Counter()  # the replayed fixture's entries
        self.total = 0
        self.upstream_errors: list[str] = []

    def poll(self) -> Delivered:
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                chunk = file.read()
        except FileNotFoundError:
            return self
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self.offset += end
        for line in chunk[:end].split(b"\n")[:-1]:
            record = json.loads(line)
            self.upstream_errors.extend(record.get("errors") or [])
            for entry in record["entries"]:
                self.total += 1
                path = entry["path"]
                if path.startswith("/crash/"):
                    _, _, tag, index = path.split("/")
                    counts = self.unique.setdefault(int(tag), bytearray(200))
                    counts[int(index)] = min(counts[int(index)] + 1, 255)
                else:
                    self.other[entry_key(entry)] += 1
        return self

    def missing(self, acked: dict[int, int]) -> list[str]:
        lost = []
        for tag, n in acked.items():
            counts = self.unique.get(tag)
            lost += [f"/crash/{tag}/{i}" for i in range(n) if counts is None or not counts[i]]
        return lost

    def fixture_shortfall(self, fixture_entries: list[str], acks: int) -> int:
        """Entries of the replayed fixture that arrived fewer times than it was acknowledged."""
        return sum(max(0, acks - self.other[key]) for key in fixture_entries)

    def duplicates(self) -> dict[str, int]:
        return {f"/crash/{tag}/{i}": n for tag, counts in self.unique.items()
                for i, n in enumerate(counts) if n > 1}


# ---- the load: several clients posting until told to stop ---------------------------------


class Load(LoadThread):
    """`custom` + `fluentbit` clients POSTing to the relay, across its restarts.

    Custom clients send gzip JSON arrays of unique upstream entries; Fluent Bit clients
    send the captured fixture's records with a unique path each, and every fourth time
    the captured body itself, byte for byte. A refused connection (relay down) is
    retried after a short pause; an answer other than 200 is never counted as acked.
    """

    def __init__(self, base_url: str, ledger: Ledger, *, custom: int, fluentbit: int,
                 entries_per_body: int, pace: float = 0.0) -> None:
        super().__init__("crash-load")
        self.base_url = base_url
        self.ledger = ledger
        self.custom, self.fluentbit = custom, fluentbit
        self.per_body = entries_per_body
        self.pace = pace  # seconds between one client's requests (0: back to back)
        self.fixture_body, self.fixture_headers, self.fixture_records = fixture(FIXTURE)
        self._tags = iter(range(10**9))

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            clients = [self._client(session, self._custom_body) for _ in range(self.custom)]
            clients += [self._client(session, self._fluentbit_body) for _ in range(self.fluentbit)]
            await asyncio.gather(*clients)

    def _custom_body(self) -> tuple[str, bytes, dict[str, str], int | None, int]:
        tag = next(self._tags)
        count = WHOLE_BODY if tag % 5 == 0 else self.per_body
        entries = [upstream_entry(f"/crash/{tag}/{i}") for i in range(count)]
        return CUSTOM_PATH, gz_json(entries), JSON_GZ, tag, len(entries)

    def _fluentbit_body(self) -> tuple[str, bytes, dict[str, str], int | None, int]:
        tag = next(self._tags)
        if tag % 4 == 0:
            return FLUENTBIT_PATH, self.fixture_body, self.fixture_headers, None, len(self.fixture_records)
        records = [{**record, "path": f"/crash/{tag}/{i}"} for i, record in enumerate(self.fixture_records)]
        return FLUENTBIT_PATH, gz_json(records), self.fixture_headers, tag, len(records)

    async def _client(self, session: aiohttp.ClientSession, make: Callable[[], Any]) -> None:
        while not self._halt.is_set():
            route, body, headers, tag, expected = make()
            try:
                async with session.post(self.base_url + route, data=body, headers=headers) as response:
                    payload = await response.read()
                    status = response.status
                try:
                    answer = json.loads(payload)
                except ValueError:
                    answer = None
            except (TimeoutError, aiohttp.ClientError, OSError):
                status, answer = 0, None
            self.ledger.record(status, answer, tag, expected)
            # Load shaping, not synchronisation: a short pause while the relay is down.
            pause = self.pace if status == 200 else max(self.pace, 0.02)
            if pause:
                await asyncio.sleep(pause)


# ---- the kill loop -------------------------------------------------------------------------

PHASES = ("ingest", "sealing", "sending", "startup-early", "startup-healthz")


@dataclass
class CrashPlan:
    phases: list[str]  # these first, in order
    seconds: float | None = None  # then random phases until this much time has passed
    dwell: float = 0.25  # the kill lands up to this long after its phase's trigger
    sync: str = "normal"
    clients: tuple[int, int] = (3, 2)  # custom, fluentbit
    pace: float = 0.0
    drain_timeout: float = 45.0
    workers: int = 1  # server.workers; with more, each kill -9 takes the whole process group


@dataclass
class Figures:
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    restarts: int = 0
    seconds: float = 0.0

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())


def kill_at(phase: str, relay: Relay, upstream: MockUpstream, ledger: Ledger, rng: random.Random,
            figures: Figures, dwell: float) -> None:
    """Bring the relay to `phase`, then kill -9 it at a random moment within it.

    The random pauses below choose the moment of the kill; nothing waits on them.
    """
    if phase == "startup-early":
        # Start without waiting for /healthz: the kill lands while the queue is opened
        # and scanned and the outboxes rebuilt, or as the listener and senders come up.
        Process.start(relay)
        figures.restarts += 1
        time.sleep(rng.uniform(0.0, 0.4))
    elif phase == "startup-healthz":
        relay.start()  # /healthz just answered: the backlog is being sealed and sent
        figures.restarts += 1
        time.sleep(rng.uniform(0.0, 0.05))
    else:
        if not relay.running:
            relay.start()
            figures.restarts += 1
        acked_before = ledger.requests_acked
        sent_before = upstream.stats()["requests"]
        if phase == "ingest":  # requests are being answered
            goal = rng.randint(1, 20)
        elif phase == "sealing":  # thousands of entries came in: 1,000-entry batches are being cut
            goal = rng.randint(20, 80)
        else:
            goal = 0
        wait_until(lambda: ledger.requests_acked - acked_before >= goal, timeout=30,
                   message=lambda: f"no ingest progress before a kill ({phase})\n{relay.log_tail()}")
        if phase == "sending":  # upstream holds each request SEND_LATENCY: some are in flight
            wait_until(lambda: upstream.stats()["requests"] > sent_before, timeout=30,
                       message=lambda: f"no send started\n{relay.log_tail()}")
        time.sleep(rng.uniform(0.0, dwell))
    if relay.new_session:  # a supervisor and its workers: all of them at once, as a power cut would
        os.killpg(relay.pid, signal.SIGKILL)
        relay.wait()
    else:
        relay.kill9()
    figures.kills[phase] += 1


def calibrate_fixture(relay: Relay, sinks: dict[str, Delivered], ledger: Ledger, count: int) -> list[str]:
    """Post the captured body once and read off upstream the entries its records become."""
    body, headers, _ = fixture(FIXTURE)
    response = http_request(relay.base_url + FLUENTBIT_PATH, "POST", body, headers=headers)
    assert response.status == 200, response.body
    ledger.record(response.status, response.json(), None, count)
    for delivered in sinks.values():
        wait_until(lambda delivered=delivered: sum(delivered.poll().other.values()) >= count, timeout=30,
                   message=lambda: f"fixture body not delivered\n{relay.log_tail()}")
    keys = [list(delivered.other) for delivered in sinks.values()]
    assert all(sorted(k) == sorted(keys[0]) for k in keys) and len(keys[0]) == count, \
        f"the fixture's {count} records became {len(keys[0])} distinct entries"
    return keys[0]


# The sinks of a crash run: a slow one (sends in flight at every kill) and a flaky one
# (500s and dropped connections: batches being retried at a kill). Each has its own upstream.
SINK_FAULTS = {"slow": {"latency": SEND_LATENCY}, "flaky": {"error_rate": 0.2, "drop_rate": 0.05}}
# Three ways into the queue, all under the kills: the clients' bodies of 60 entries are small, so
# the requests waiting for the DB thread together share one inbox item per sink (store/coalesce.py);
# the Fluent Bit fixture's 200 records fill two whole batches for "flaky", sealed in the request's
# own commit, beside an inbox item of their own for "slow" in the same transaction; and every fifth
# custom body holds one batch of "flaky", which seals that body as it came (outbox.commit).
SINK_BATCH = {"slow": 1000, "flaky": 100}
ENTRIES_PER_BODY = 60
WHOLE_BODY = SINK_BATCH["flaky"]


def run_crash_load(tmp_path: Path, plan: CrashPlan, seed: int) -> Figures:
    """Load + repeated kill -9, restart on the same data directory, then check the oracle."""
    rng = random.Random(seed)
    figures, ledger = Figures(), Ledger()
    _, _, fixture_records = fixture(FIXTURE)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        upstreams = {name: stack.enter_context(MockUpstream(
            tmp_path, name=f"upstream-{name}", api_keys=[KEY], extra_args=["--now", PINNED_NOW],
            verbose=False, faults=faults)) for name, faults in SINK_FAULTS.items()}
        sinks_toml = "\n".join(sink_toml(name, upstream.url, KEY, batch_timeout="100ms", concurrency=4,
                                         retry_initial_backoff="20ms", retry_max_backoff="500ms",
                                         batch_max_entries=SINK_BATCH[name])
                               for name, upstream in upstreams.items())
        relay = Relay(tmp_path, sinks_toml, sync=plan.sync, workers=plan.workers)
        relay.new_session = plan.workers > 1
        sinks = {name: Delivered(upstream) for name, upstream in upstreams.items()}
        load = Load(relay.base_url, ledger, custom=plan.clients[0], fluentbit=plan.clients[1],
                    entries_per_body=ENTRIES_PER_BODY, pace=plan.pace)
        try:
            relay.start()
            fixture_keys = calibrate_fixture(relay, sinks, ledger, len(fixture_records))
            load.start()
            phases = list(plan.phases)
            while phases or (plan.seconds is not None and time.monotonic() - started < plan.seconds):
                phase = phases.pop(0) if phases else rng.choice(PHASES)
                kill_at(phase, relay, upstreams["slow"], ledger, rng, figures, plan.dwell)
                for delivered in sinks.values():
                    delivered.poll()  # keep up with the record files as we go
            relay.start()
            figures.restarts += 1
            goal = ledger.requests_acked + 10  # the last start takes load too
            wait_until(lambda: ledger.requests_acked >= goal, timeout=30,
                       message=lambda: f"no ingest after the last restart\n{relay.log_tail()}")
            load.stop()
            for upstream in upstreams.values():
                upstream.clear_faults()
            acked, fixture_acks = ledger.snapshot()

            def short() -> str:
                return "; ".join(f"sink {name}: {len(d.missing(acked))} acknowledged entries never arrived, "
                                 f"e.g. {d.missing(acked)[:3]}, fixture entries short "
                                 f"{d.fixture_shortfall(fixture_keys, fixture_acks)}" for name, d in sinks.items())

            wait_until(lambda: all(not d.poll().missing(acked) and not d.fixture_shortfall(fixture_keys, fixture_acks)
                                   for d in sinks.values()),
                       timeout=plan.drain_timeout, interval=0.25, message=lambda: f"{short()}\n{relay.log_tail()}")
            figures.seconds = time.monotonic() - started
            report(seed, plan, figures, ledger, sinks, fixture_keys)
            assert not ledger.unexpected, ledger.unexpected[:5]
            assert set(ledger.statuses) <= {0, 200}, f"unexpected answers under load: {ledger.statuses}"
            for name, delivered in sinks.items():
                assert not delivered.upstream_errors, (name, delivered.upstream_errors[:5])
            assert figures.total_kills >= len(plan.phases)
            assert "Traceback" not in relay.log_text(), relay.log_tail(200)
        finally:
            if load.is_alive():
                load._halt.set()
            relay.stop()
    return figures


def report(seed: int, plan: CrashPlan, figures: Figures, ledger: Ledger, sinks: dict[str, Delivered],
           fixture_keys: list[str]) -> None:
    acked, fixture_acks = ledger.snapshot()
    unique_acked = sum(acked.values())
    print(f"\ncrash run (seed {seed}, sync={plan.sync}, workers={plan.workers}): {figures.seconds:.0f}s, {figures.total_kills} kills "
          f"{dict(figures.kills)}, {figures.restarts} restarts survived")
    print(f"  requests: {dict(ledger.statuses)} (0 = no answer: refused, or cut by a kill)")
    print(f"  acknowledged: {unique_acked} unique entries + {fixture_acks} fixture bodies x "
          f"{len(fixture_keys)} = {unique_acked + fixture_acks * len(fixture_keys)} entries, for each sink")
    for name, delivered in sinks.items():
        duplicates = delivered.duplicates()
        extra_fixture = sum(delivered.other[k] - fixture_acks for k in fixture_keys)
        print(f"  sink {name} ({SINK_FAULTS[name]}): delivered {delivered.total} entries; lost 0; duplicates: "
              f"{sum(n - 1 for n in duplicates.values())} extra copies of {len(duplicates)} unique entries, "
              f"{extra_fixture} extra fixture entries")
        if duplicates:
            print(f"    duplicated, e.g.: {sorted(duplicates.items())[:4]}")


# ---- the tests -----------------------------------------------------------------------------


def _seed() -> int:
    seed = int(os.environ.get("RELAY_CRASH_SEED", random.randrange(10**6)))
    print(f"\nRELAY_CRASH_SEED={seed} reproduces this kill schedule")
    return seed


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_at_random_moments_under_load_loses_no_acknowledged_entry(tmp_path: Path, workers: int) -> None:
    """CI-sized: kills during ingest, sealing, sends and start-up recovery, then a drain. With two
    workers each kill takes the supervisor and both workers (the process group)."""
    plan = CrashPlan(phases=["ingest", "sealing", "sending", "startup-early", "ingest", "startup-healthz",
                             "sending", "startup-early", "sealing"], seconds=25, dwell=1.0, workers=workers)
    figures = run_crash_load(tmp_path, plan, _seed())
    assert figures.total_kills >= 5 and set(figures.kills) == set(PHASES)


@pytest.mark.soak
@pytest.mark.timeout(3600)  # RELAY_SOAK_SECONDS of kills and a drain of up to 180 s outlast the suite's 300 s
def test_soak_kill_9_for_minutes_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    """RELAY_SOAK=1; RELAY_SOAK_SECONDS (default 240) of paced load and random kills;
    RELAY_SOAK_WORKERS (default 2: several workers, as the product's default "auto" runs on
    any machine with more than one core) sets server.workers."""
    seconds = float(os.environ.get("RELAY_SOAK_SECONDS", "240"))
    plan = CrashPlan(phases=list(PHASES) * 2, seconds=seconds, dwell=6.0, sync="full", clients=(4, 3),
                     pace=0.05, drain_timeout=180, workers=int(os.environ.get("RELAY_SOAK_WORKERS", "2")))
    figures = run_crash_load(tmp_path, plan, _seed())
    # Every listed phase, then kills for the whole time: a restart of two workers (three
    # interpreters, each opening its shard) takes longer than one's, so a kill per 15 s on average,
    # not a fixed 30 (which 240 s with one worker reached).
    assert figures.total_kills >= max(len(plan.phases), seconds / 15), figures


# ---- corrupt and torn queue records ----------------------------------------------------------

SINK = "profound"
CORRUPT_BATCH = 100  # batch_max_entries for these tests: ten requests of 100 seal ten batches


def corruption_relay(tmp_path: Path, upstream: MockUpstream, batch_timeout: str) -> Relay:
    return Relay(tmp_path, sink_toml(SINK, upstream.url, KEY, batch_max_entries=CORRUPT_BATCH,
                                     batch_timeout=batch_timeout))


def queue_with_backlog(tmp_path: Path, upstream: MockUpstream, inbox: int = 3,
                       last: int = 0) -> tuple[Relay, set[str]]:
    """Upstream down; 10 sealed batches of 100 and `inbox` inbox items of 30 on disk; then kill -9.

    batch_timeout is an hour so the 30s stay in the inbox; the restart shortens it. `last`: one
    more request of that many entries just before the kill, so that the WAL holds a commit (the
    relay empties it 250 ms after the last write)."""
    relay = corruption_relay(tmp_path, upstream, "1h").start()
    url = relay.base_url + CUSTOM_PATH
    acked: set[str] = set()
    # each batch of 100 as two requests of 50, so that the batcher seals it (and writes the cursor);
    # a request of 100 would be sealed in its own commit
    for n, size in [*((i, 100) for i in range(10)), *((10 + i, 30) for i in range(inbox))]:
        batch = [upstream_entry(f"/crash/{n}/{i}") for i in range(size)]
        for half in (batch[:50], batch[50:]) if size == 100 else (batch,):
            response = http_request(url, "POST", half)
            assert response.status == 200, response.body
        acked.update(e["path"] for e in batch)
    wait_until(lambda: f'relay_queue_batches{{sink="{SINK}"}} 10.0' in relay.metrics(), timeout=15,
               message=lambda: f"batches not sealed\n{relay.metrics()}\n{relay.log_tail()}")
    if last:
        batch = [upstream_entry(f"/crash/last/{i}") for i in range(last)]
        response = http_request(url, "POST", batch)
        assert response.status == 200, response.body
        acked.update(e["path"] for e in batch)
    relay.kill9()
    return relay, acked


def queue_keys(queue_dir: Path, prefix: str) -> list[str]:
    cache = diskcache.Cache(str(queue_dir), eviction_policy="none")
    try:
        return sorted(k for k in cache.iterkeys() if isinstance(k, str) and k.startswith(prefix))
    finally:
        cache.close()


def damage(queue_dir: Path, key: str, how: str) -> None:
    """Bit-flip the middle byte of the key's stored value, or cut the value in half."""
    cache = diskcache.Cache(str(queue_dir), eviction_policy="none")
    try:
        raw = cache[key]
        assert isinstance(raw, bytes), type(raw)
        middle = len(raw) // 2
        if how == "bitflip":
            value = raw[:middle] + bytes([raw[middle] ^ 0x08]) + raw[middle + 1:]
        else:
            value = raw[:middle]
        assert cache.set(key, value)
    finally:
        cache.close()


def quarantined_metric(relay: Relay) -> float:
    found = re.findall(r"^relay_queue_quarantined_items(?:_total)? (\S+)$", relay.metrics(), re.M)
    return sum(float(value) for value in found)


def delivered_paths(upstream: MockUpstream) -> collections.Counter[str]:
    return collections.Counter(entry["path"] for entry in upstream.entries())


@pytest.mark.parametrize("prefix,how", [("i/", "bitflip"), ("i/", "truncate"),
                                        ("b/", "bitflip"), ("b/", "truncate")],
                         ids=["inbox-bitflip", "inbox-truncated", "batch-bitflip", "batch-truncated"])
def test_corrupt_queue_item_is_quarantined_and_the_rest_delivered(tmp_path: Path, prefix: str, how: str) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW], faults={"down": True}) as upstream:
        relay, acked = queue_with_backlog(tmp_path, upstream)
        keys = queue_keys(tmp_path / "queue", f"{prefix}{SINK}/")
        assert keys, f"no {prefix} keys on disk"
        key = keys[len(keys) // 2]
        count = int(key.split(".")[-2])  # the key carries the item's entry count
        damage(tmp_path / "queue", key, how)
        relay = corruption_relay(tmp_path, upstream, "100ms")  # same queue directory, short timeout
        upstream.set_faults(down=False)
        try:
            relay.start()
            relay.wait_for_log(r"quarantined", timeout=15)
            assert re.search(rf"quarantined {re.escape(key)}", relay.log_text()), relay.log_tail()
            wait_until(lambda: quarantined_metric(relay) >= 1, timeout=10,
                       message=lambda: f"no quarantine metric\n{relay.metrics()}")
            # Everything else arrives; what is missing is at most the damaged item's entries.
            wait_until(lambda: len(acked - set(delivered_paths(upstream))) <= count
                       and f'relay_queue_entries{{sink="{SINK}"}} 0.0' in relay.metrics(), timeout=30,
                       message=lambda: f"{len(acked - set(delivered_paths(upstream)))} missing\n{relay.log_tail()}")
            missing = acked - set(delivered_paths(upstream))
            assert 0 < len(missing) <= count, (len(missing), count)
            # ... and the relay goes on: new traffic is taken and delivered.
            fresh = [upstream_entry(f"/crash/after/{i}") for i in range(50)]
            assert http_request(relay.base_url + CUSTOM_PATH, "POST", fresh).status == 200
            wait_until(lambda: {e["path"] for e in fresh} <= set(delivered_paths(upstream)), timeout=15,
                       message=lambda: f"fresh entries not delivered\n{relay.log_tail()}")
            print(f"\n{how} {key}: quarantined; {len(missing)} of its {count} entries lost, "
                  f"{len(acked) - len(missing)} others delivered")
        finally:
            relay.stop()


def wal_frames(wal: bytes) -> tuple[int, list[tuple[int, bool]]]:
    """(frame size, [(offset, is_commit)]) for the frames of the WAL's current generation."""
    page_size = int.from_bytes(wal[8:12], "big")
    salts = wal[16:24]
    frame_size = 24 + page_size
    frames = []
    for offset in range(32, len(wal) - frame_size + 1, frame_size):
        header = wal[offset:offset + 24]
        if header[8:16] != salts:
            break  # a frame of an earlier generation: the log ends here
        frames.append((offset, int.from_bytes(header[4:8], "big") != 0))
    return frame_size, frames


@pytest.mark.parametrize("where", ["last-frame", "middle"])
def test_torn_wal_does_not_stop_start_up(tmp_path: Path, where: str) -> None:
    """Cut the SQLite WAL mid-frame after kill -9: the relay starts, drains what survived, goes on.

    Transactions past the cut are gone (that is what a torn log means), so this checks
    that start-up and delivery work, not that nothing was lost."""
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW], faults={"down": True}) as upstream:
        relay, acked = queue_with_backlog(tmp_path, upstream, last=30)
        wal_path = tmp_path / "queue" / "cache.db-wal"
        wal = wal_path.read_bytes()
        frame_size, frames = wal_frames(wal)
        assert frames and any(commit for _, commit in frames), f"no committed frames in a {len(wal)}-byte WAL"
        offset = frames[-1][0] if where == "last-frame" else frames[len(frames) // 2][0]
        cut = offset + frame_size // 2
        with open(wal_path, "r+b") as file:
            file.truncate(cut)
        relay = corruption_relay(tmp_path, upstream, "100ms")
        upstream.set_faults(down=False)
        try:
            relay.start()
            wait_until(lambda: f'relay_queue_entries{{sink="{SINK}"}} 0.0' in relay.metrics(), timeout=30,
                       message=lambda: f"what survived was not drained\n{relay.metrics()}\n{relay.log_tail()}")
            fresh = [upstream_entry(f"/crash/after/{i}") for i in range(50)]
            assert http_request(relay.base_url + CUSTOM_PATH, "POST", fresh).status == 200
            wait_until(lambda: {e["path"] for e in fresh} <= set(delivered_paths(upstream)), timeout=15,
                       message=lambda: f"fresh entries not delivered\n{relay.log_tail()}")
            got = set(delivered_paths(upstream))
            assert got - acked == {e["path"] for e in fresh}, "upstream got entries nobody sent"
            assert "malformed" not in relay.log_text(), relay.log_tail()
            print(f"\nWAL of {len(frames)} frames cut at byte {cut} ({where}): "
                  f"{len(acked & got)} of {len(acked)} acknowledged entries survived and were delivered")
        finally:
            relay.stop()


def test_unreadable_cursor_does_not_overwrite_sealed_batches(tmp_path: Path) -> None:
    """A truncated sink cursor (c/<sink>, which carries the next batch id) must not lose batches.

    With the cursor unreadable the relay starts from batch id 0 again; new batches of the
    same count and size then get the keys of batches still waiting on disk."""
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW], faults={"down": True}) as upstream:
        relay, acked = queue_with_backlog(tmp_path, upstream, inbox=0)
        damage(tmp_path / "queue", f"c/{SINK}", "truncate")
        relay = corruption_relay(tmp_path, upstream, "100ms")
        try:
            relay.start()
            url = relay.base_url + CUSTOM_PATH
            for n in range(10):  # same shape as the batches on disk: ten batches of 100 the batcher seals
                batch = [upstream_entry(f"/crasx/{n}/{i}") for i in range(100)]
                assert http_request(url, "POST", batch[:50]).status == 200
                assert http_request(url, "POST", batch[50:]).status == 200
                acked.update(e["path"] for e in batch)
            wait_until(lambda: f'relay_queue_batches{{sink="{SINK}"}} 20.0' in relay.metrics(), timeout=15,
                       message=lambda: f"batches not sealed\n{relay.metrics()}\n{relay.log_tail()}")
            # A crash now, so that the next start sees only what the disk holds.
            relay.kill9()
            upstream.set_faults(down=False)
            relay.start()
            wait_until(lambda: f'relay_queue_entries{{sink="{SINK}"}} 0.0' in relay.metrics(), timeout=30,
                       message=lambda: f"not drained\n{relay.metrics()}\n{relay.log_tail()}")
            missing = acked - set(delivered_paths(upstream))
            assert not missing, (f"{len(missing)} acknowledged entries lost after the cursor was damaged, "
                                 f"e.g. {sorted(missing)[:5]}\n{relay.log_tail()}")
        finally:
            relay.stop()


def test_bitflipped_cursor_loses_no_entry_silently(tmp_path: Path) -> None:
    """A bit flip in the sink cursor that still decodes (offset 0 -> 8) must not make the
    relay skip entries: the cursor's checksum catches it, it is quarantined and rebuilt."""
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW], faults={"down": True}) as upstream:
        relay, acked = queue_with_backlog(tmp_path, upstream)
        damage(tmp_path / "queue", f"c/{SINK}", "bitflip")
        relay = corruption_relay(tmp_path, upstream, "100ms")
        upstream.set_faults(down=False)
        try:
            relay.start()
            wait_until(lambda: f'relay_queue_entries{{sink="{SINK}"}} 0.0' in relay.metrics()
                       and upstream.stats()["entries_accepted"] >= 1000, timeout=30,
                       message=lambda: f"not drained\n{relay.metrics()}\n{relay.log_tail()}")
            missing = acked - set(delivered_paths(upstream))
            assert not missing, (f"{len(missing)} acknowledged entries lost after a cursor bit flip, "
                                 f"e.g. {sorted(missing)[:5]}\n{relay.log_tail()}")
            # The cursor is checksummed: the damage is detected, logged and counted.
            assert re.search(rf"quarantined c/{SINK}", relay.log_text()), relay.log_tail()
            assert quarantined_metric(relay) >= 1, relay.metrics()
        finally:
            relay.stop()

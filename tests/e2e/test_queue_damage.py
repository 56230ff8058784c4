"""A damaged queue after a real kill -9: the relay salvages what is readable, counts the rest, delivers on."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from relay.store import counts, salvage
from relay.store.salvage import Report
from tests.damage import checkpoint, overwrite, pages
from tests.e2e.harness import Relay, entries, gz_json, post_all, sink_toml
from tests.support import MockUpstream, Process, http_request, wait_until

KEY = "test-key"
HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def metric(relay: Relay, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", relay.metrics(), re.M)
    return float(match.group(1)) if match else 0.0


def delivered_paths(upstream: MockUpstream) -> set[str]:
    return {entry["path"] for entry in upstream.entries()}


def test_a_damaged_data_page_after_kill_9_costs_exactly_its_rows(tmp_path: Path) -> None:
    upstream = MockUpstream(tmp_path, api_keys=[KEY], faults={"status": 503}).start()
    relay = Relay(tmp_path, sink_toml("up", upstream.url, KEY)).start()
    try:
        url = relay.base_url + "/v1/logs/custom"
        bodies = [(i, gz_json(entries(i * 100, 100))) for i in range(200)]  # 20,000 entries
        results = asyncio.run(post_all(url, bodies, headers=HEADERS))
        assert all(status == 200 for _, status, _ in results)
        wait_until(lambda: metric(relay, 'relay_queue_batches{sink="up"}') >= 20, timeout=30)
        relay.kill9()
        db = tmp_path / "queue" / "cache.db"
        checkpoint(db)
        victim = pages(db, "Cache", "leaf")[1]
        overwrite(db, victim.number, victim.size)
        upstream.clear_faults()
        relay.start()
        wait_until(lambda: metric(relay, "relay_queue_salvages_total") == 1, timeout=20)
        lost_items = metric(relay, "relay_queue_items_quarantined_total")
        lost = metric(relay, "relay_queue_entries_lost_total")
        # Every row the page held is lost; the items among them are counted. One of the rows may be
        # the sink's cursor (it depends on where SQLite put it), which holds no entries and is rebuilt
        # from the items, not counted: so the items lost are the page's rows, or one fewer.
        assert victim.rows - 1 <= lost_items <= victim.rows and lost > 0
        wait_until(lambda: len(delivered_paths(upstream)) == 20_000 - lost, timeout=60,
                   message=lambda: f"{len(delivered_paths(upstream))} of {20_000 - lost}\n{relay.log_tail()}")
        new = asyncio.run(post_all(url, [(0, gz_json(entries(50_000, 10)))], headers=HEADERS))
        assert new[0][1] == 200
        wait_until(lambda: {f"/e2e/{i}" for i in range(50_000, 50_010)} <= delivered_paths(upstream), timeout=20)
        ready = http_request(relay.base_url + "/readyz")
        assert ready.status == 200 and "damaged copy kept in" in json.dumps(ready.json())
        log = relay.log_text()
        assert "Traceback" not in log and log.count("queue salvaged") == 1
        assert list((tmp_path / "queue" / "damaged").glob("*/cache.db"))
    finally:
        relay.stop()
        upstream.stop()


# ---- the other kinds of damage, each after a real kill -9 with 5,000 entries acknowledged -------------

ENTRIES = 5_000


def wal_is_empty(tmp_path: Path) -> bool:
    wal = tmp_path / "queue" / "cache.db-wal"
    return not wal.exists() or wal.stat().st_size == 0


def fill_and_kill(tmp_path: Path, on_unreadable: str = "start_empty",
                  before_kill: Callable[[Relay], None] | None = None) -> tuple[MockUpstream, Relay]:
    """Upstream refusing, 5,000 entries acknowledged (most of them sealed into batches), relay killed -9.
    Returns the upstream, now accepting, and the stopped relay."""
    upstream = MockUpstream(tmp_path, api_keys=[KEY], faults={"status": 503}).start()
    relay = Relay(tmp_path, sink_toml("up", upstream.url, KEY))
    text = relay.config_path.read_text().replace('sync = "normal"', f'sync = "normal"\non_unreadable = "{on_unreadable}"')
    relay.config_path.write_text(text)
    try:
        relay.start()
        bodies = [(i, gz_json(entries(i * 100, 100))) for i in range(ENTRIES // 100)]
        results = asyncio.run(post_all(relay.base_url + "/v1/logs/custom", bodies, headers=HEADERS))
        assert all(status == 200 for _, status, _ in results)
        wait_until(lambda: metric(relay, 'relay_queue_batches{sink="up"}') >= 4, timeout=30)
        if before_kill is not None:
            before_kill(relay)
        relay.kill9()
        upstream.clear_faults()
    except BaseException:  # a failed step must not leave the two processes running
        relay.stop()
        upstream.stop()
        raise
    return upstream, relay


def readable(tmp_path: Path) -> Report:
    """What a copy of the damaged queue holds, read as the salvage reads it (the copy absorbs the WAL)."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        if (tmp_path / "queue" / f"cache.db{suffix}").exists():
            shutil.copy(tmp_path / "queue" / f"cache.db{suffix}", copy / f"cache.db{suffix}")
    return salvage.read(str(copy / "cache.db"))


def kept_entries(report: Report) -> int:
    return sum(f.entries for kinds in report.sinks.values() for name, f in kinds.items() if name != "dead")


def assert_no_loops(relay: Relay) -> None:
    """No traceback, at most one salvage, no key quarantined twice."""
    log = relay.log_text()
    assert "Traceback" not in log, relay.log_tail()
    assert log.count("queue salvaged") <= 1, relay.log_tail()
    repeats = [key for key, n in Counter(re.findall(r"quarantined (\S+) in", log)).items() if n > 1]
    assert not repeats, repeats


def delivers_new_traffic(relay: Relay, upstream: MockUpstream) -> None:
    new = asyncio.run(post_all(relay.base_url + "/v1/logs/custom", [(0, gz_json(entries(90_000, 10)))],
                               headers=HEADERS))
    assert new[0][1] == 200
    wait_until(lambda: {f"/e2e/{i}" for i in range(90_000, 90_010)} <= delivered_paths(upstream), timeout=20)


def recovers(tmp_path: Path, damage: Callable[[Path], None], *, salvaged: bool,
             before_kill: Callable[[Relay], None] | None = None) -> tuple[int, int, int]:
    """Fill, kill -9, damage, start again: every readable entry and new traffic are delivered.
    Returns (entries the damage took as counted by the relay, entries readable, entries acknowledged)."""
    upstream, relay = fill_and_kill(tmp_path, before_kill=before_kill)
    try:
        damage(tmp_path / "queue" / "cache.db")
        expected = kept_entries(readable(tmp_path))
        relay.start()
        wait_until(lambda: len(delivered_paths(upstream)) >= expected, timeout=60,
                   message=lambda: f"{len(delivered_paths(upstream))} of {expected}\n{relay.log_tail()}")
        delivers_new_traffic(relay, upstream)
        assert len(delivered_paths(upstream)) == expected + 10
        assert metric(relay, "relay_queue_salvages_total") == (1 if salvaged else 0)
        assert_no_loops(relay)
        return int(metric(relay, "relay_queue_entries_lost_total")), expected, ENTRIES
    finally:
        relay.stop()
        upstream.stop()


def cut_wal_in_half(db: Path) -> None:
    wal = Path(f"{db}-wal")
    if wal.exists():
        os.truncate(wal, wal.stat().st_size // 2)


def test_a_wal_cut_in_half_after_a_quiet_moment_loses_nothing(tmp_path: Path) -> None:
    # Once no write has come for a moment the relay folds its WAL into the database and truncates it,
    # so what a cut WAL can take is only commits of the last moments before the crash. (Before, the
    # WAL held many un-checkpointed commits: SQLite rolled back to the last whole one before the cut
    # and 1,700-2,000 of these 5,000 acknowledged entries vanished uncounted.)
    def quiet(relay: Relay) -> None:
        wait_until(lambda: wal_is_empty(tmp_path), timeout=10,
                   message=lambda: f"the relay never emptied its WAL\n{relay.log_tail()}")

    lost, delivered, acked = recovers(tmp_path, cut_wal_in_half, salvaged=False, before_kill=quiet)
    assert lost == 0 and delivered == acked


def test_a_wal_cut_in_half_while_writes_are_in_flight_keeps_what_came_before_them(tmp_path: Path) -> None:
    # 5,000 entries, a quiet moment (the WAL emptied), then 2,500 more acknowledged and the relay
    # killed at once: the WAL holds only the new commits; cut in half, it loses some of them (SQLite
    # rolls back to the last whole commit before the cut), never the 5,000 from before.
    url_path = "/v1/logs/custom"
    extra = [(i, gz_json(entries(60_000 + i * 100, 100))) for i in range(25)]

    def in_flight(relay: Relay) -> None:
        wait_until(lambda: wal_is_empty(tmp_path), timeout=10, message=relay.log_tail)
        results = asyncio.run(post_all(relay.base_url + url_path, extra, headers=HEADERS))
        assert all(status == 200 for _, status, _ in results)

    upstream, relay = fill_and_kill(tmp_path, before_kill=in_flight)
    try:
        wal = tmp_path / "queue" / "cache.db-wal"
        # Usually killed before the next quiet moment, so there is a WAL to cut; on a loaded machine
        # the kill can come after the fold (WAL empty): then nothing may be lost at all.
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        cut_wal_in_half(tmp_path / "queue" / "cache.db")
        relay.start()
        first = {f"/e2e/{i}" for i in range(ENTRIES)}
        wait_until(lambda: first <= delivered_paths(upstream), timeout=60,
                   message=lambda: f"{len(first & delivered_paths(upstream))} of {ENTRIES}\n{relay.log_tail()}")
        later = {f"/e2e/{60_000 + i}" for i in range(2_500)}
        # what survived of the later 2,500 is delivered too, then nothing more comes
        kept = len(readable_after_start(relay, upstream, later))
        if wal_bytes == 0:
            assert kept == 2_500
        print(f"\nWAL ({wal_bytes:,} bytes) cut in half with writes in flight: {ENTRIES:,} of {ENTRIES:,} from "
              f"before the last quiet moment delivered; {kept:,} of 2,500 acknowledged since delivered, "
              f"{2_500 - kept:,} lost uncounted")
        assert metric(relay, "relay_queue_salvages_total") == 0
        assert_no_loops(relay)
    finally:
        relay.stop()
        upstream.stop()


def readable_after_start(relay: Relay, upstream: MockUpstream, wanted: set[str]) -> set[str]:
    """The `wanted` paths delivered once the relay has nothing left queued."""
    wait_until(lambda: metric(relay, 'relay_queue_entries{sink="up"}') == 0 and
               metric(relay, 'relay_queue_batches{sink="up"}') == 0, timeout=60, message=relay.log_tail)
    return wanted & delivered_paths(upstream)


def test_an_index_page_overwritten_loses_nothing(tmp_path: Path) -> None:
    def damage(db: Path) -> None:
        checkpoint(db)
        victim = pages(db, "Cache_key_raw", "leaf")[0]
        overwrite(db, victim.number, victim.size)

    lost, delivered, acked = recovers(tmp_path, damage, salvaged=True)
    assert lost == 0 and delivered == acked  # the index holds keys only: every item is read by rowid


def test_a_missing_shm_file_is_rebuilt_from_the_wal(tmp_path: Path) -> None:
    def damage(db: Path) -> None:
        Path(f"{db}-shm").unlink()

    lost, delivered, acked = recovers(tmp_path, damage, salvaged=False)
    assert lost == 0 and delivered == acked


def counts_hold_everything(relay: Relay) -> None:
    """Wait (bounded) until the relay's counts.json holds the 5,000 entries acknowledged."""
    def held() -> int:
        found = counts.read(str(relay.config_path.parent / "queue"))
        return found.entries if found else -1
    wait_until(lambda: held() == ENTRIES, timeout=15, message=lambda: f"counts.json: {held()}\n{relay.log_tail()}")


def test_a_zero_length_database_starts_empty_and_counts_what_counts_json_says_it_held(tmp_path: Path) -> None:
    def damage(db: Path) -> None:
        checkpoint(db)
        os.truncate(db, 0)

    upstream, relay = fill_and_kill(tmp_path, before_kill=counts_hold_everything)
    try:
        damage(tmp_path / "queue" / "cache.db")
        relay.start()
        wait_until(lambda: metric(relay, "relay_queue_salvages_total") == 1, timeout=20, message=relay.log_tail)
        assert metric(relay, "relay_queue_entries_lost_total") == ENTRIES  # not 0: what counts.json said
        ready = json.dumps(http_request(relay.base_url + "/readyz").json())
        assert f"lost about {ENTRIES:,} entries" in ready and "counts.json" in ready, ready
        status = subprocess.run([sys.executable, "-m", "relay", "status", "--once", "--interval", "0",
                                 "--url", relay.base_url], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "COLUMNS": "400"})
        assert f"lost about {ENTRIES:,} entries" in " ".join(status.stdout.split()), status.stdout
        delivers_new_traffic(relay, upstream)
        assert len(delivered_paths(upstream)) == 10
        assert_no_loops(relay)
        assert list((tmp_path / "queue" / "damaged").glob("*/cache.db"))
    finally:
        relay.stop()
        upstream.stop()


def overwrite_first_page(db: Path) -> None:
    checkpoint(db)
    overwrite(db, 1, 4096)


def test_the_first_page_overwritten_is_rebuilt_and_every_entry_delivered(tmp_path: Path) -> None:
    # Page 1 holds the file header and the schema, no items: with it rebuilt from a fresh queue
    # database's, everything acknowledged is read and delivered, and nothing is counted lost.
    upstream, relay = fill_and_kill(tmp_path)
    try:
        overwrite_first_page(tmp_path / "queue" / "cache.db")
        relay.start()
        wait_until(lambda: len(delivered_paths(upstream)) == ENTRIES, timeout=60,
                   message=lambda: f"{len(delivered_paths(upstream))} of {ENTRIES}\n{relay.log_tail()}")
        assert metric(relay, "relay_queue_salvages_total") == 1
        assert metric(relay, "relay_queue_entries_lost_total") == 0
        assert "first page was rebuilt" in json.dumps(http_request(relay.base_url + "/readyz").json())
        delivers_new_traffic(relay, upstream)
        assert_no_loops(relay)
        assert list((tmp_path / "queue" / "damaged").glob("*/cache.db"))
    finally:
        relay.stop()
        upstream.stop()


def test_nothing_readable_with_on_unreadable_exit_refuses_in_one_line(tmp_path: Path) -> None:
    upstream, relay = fill_and_kill(tmp_path, on_unreadable="exit", before_kill=counts_hold_everything)
    try:
        db = tmp_path / "queue" / "cache.db"
        checkpoint(db)
        size = db.stat().st_size
        db.write_bytes(b"\xa5" * size)  # garbage throughout: no page of it can be trusted
        before = len(relay.log_text().splitlines())
        Process.start(relay)
        assert relay.wait(timeout=30) != 0
        new = relay.log_text().splitlines()[before + 1:]  # after the "--- relay: ..." line
        problems = [line for line in new if "can be read" in line]
        assert len(problems) == 1 and str(db) in problems[0], new
        assert f"about {ENTRIES:,} entries" in problems[0], problems
        assert "Traceback" not in "\n".join(new), new
        assert db.stat().st_size == size  # left as it is
    finally:
        relay.stop()
        upstream.stop()

"""Damaged queue databases, on real files: what a salvage keeps, what it counts as lost."""

import asyncio
import json
import os
import sqlite3
from pathlib import Path

import pytest

from relay.errors import QueueError
from relay.store import counts, salvage
from relay.store.counts import Counts, SinkCount
from relay.store.queue import DiskQueue
from tests.damage import checkpoint, overwrite, pages
from tests.unit.store.test_queue import append, batcher, drain_batches, open_queue


def build(path: Path, items: int, per_item: int = 3) -> dict[str, int]:
    """A closed queue of `items` inbox items; returns key -> entries."""
    async def main() -> dict[str, int]:
        queue, outbox = open_queue(path)
        for i in range(items):
            await append(queue, outbox, i * per_item, per_item)
        keys = {k: int(k.split(".")[1]) for k in queue._cache.iterkeys() if k.startswith("i/")}
        queue.close()
        return keys
    keys = asyncio.run(main())
    checkpoint(path / "cache.db")
    return keys


def reopen_and_drain(path: Path) -> tuple[DiskQueue, list[int]]:
    async def main() -> tuple[DiskQueue, list[int]]:
        queue, outbox = open_queue(path)
        b = batcher(queue, outbox)
        while outbox.unsealed:
            await b.seal_one()
        got = [n for batch in await drain_batches(queue, outbox) for n in batch]
        queue.close()
        return queue, got
    return asyncio.run(main())


def test_a_damaged_data_page_loses_exactly_its_rows_and_the_rest_is_delivered(tmp_path: Path) -> None:
    keys = build(tmp_path, 600)
    leaves = pages(tmp_path / "cache.db", "Cache", "leaf")
    victim = leaves[len(leaves) // 2]
    assert victim.rows > 1
    overwrite(tmp_path / "cache.db", victim.number, victim.size)
    queue, got = reopen_and_drain(tmp_path)
    assert queue.damage.quarantined == victim.rows  # exactly the items the page held
    assert queue.damage.entries_lost == victim.rows * 3
    assert len(got) == 600 * 3 - victim.rows * 3 and len(set(got)) == len(got)
    assert len(queue.damage.salvages) == 1 and "damaged copy kept in" in queue.damage.salvages[0]
    kept = list((tmp_path / "damaged").glob("*/cache.db"))
    assert len(kept) == 1  # the damaged file is renamed, never deleted
    assert len(keys) == 600


def test_a_damaged_index_page_loses_nothing(tmp_path: Path) -> None:
    build(tmp_path, 600)
    leaves = pages(tmp_path / "cache.db", "Cache_key_raw", "leaf")
    overwrite(tmp_path / "cache.db", leaves[len(leaves) // 2].number)
    queue, got = reopen_and_drain(tmp_path)
    assert queue.damage.quarantined == 0 and queue.damage.entries_lost == 0
    assert sorted(got) == list(range(1800))
    assert len(queue.damage.salvages) == 1


def test_nothing_readable_starts_empty_or_exits_naming_the_file_and_what_it_held(tmp_path: Path) -> None:
    build(tmp_path, 50)
    counts.write(str(tmp_path), Counts(1_700_000_000.0, {"up": SinkCount(50, 150)}))
    db = tmp_path / "cache.db"
    db.write_bytes(b"\xa5" * db.stat().st_size)  # garbage throughout: not even the first page can be rebuilt
    queue = DiskQueue(str(tmp_path), max_size=2**30, on_unreadable="exit")
    with pytest.raises(QueueError, match=r"cache\.db.*about 150 entries in 50 items, as of 2023-11-14 22:13:20 UTC"):
        queue.open()
    queue.close()
    assert (tmp_path / "cache.db").exists() and not (tmp_path / "damaged").exists()  # left as it was
    queue, got = reopen_and_drain(tmp_path)  # the default: start empty, keep the damaged file
    assert got == [] and "nothing of it could be read" in queue.damage.salvages[0]
    assert "lost about 150 entries" in queue.damage.salvages[0]
    assert queue.damage.entries_lost == 150 and queue.damage.quarantined == 50
    aside = list((tmp_path / "damaged").glob("*/cache.db"))
    assert aside and (aside[0].parent / counts.FILE).exists()


def test_nothing_readable_and_no_counts_says_the_loss_is_unknown_not_zero(tmp_path: Path) -> None:
    build(tmp_path, 5)
    os.truncate(tmp_path / "cache.db", 0)
    queue, got = reopen_and_drain(tmp_path)
    assert got == [] and "an unknown number of entries" in queue.damage.salvages[0]


def test_a_damaged_page_found_at_run_time_is_salvaged_once_and_delivery_goes_on(tmp_path: Path) -> None:
    build(tmp_path, 600)
    leaves = pages(tmp_path / "cache.db", "Cache", "leaf")
    victim = leaves[len(leaves) // 2]

    async def main() -> tuple[DiskQueue, list[int]]:
        queue, outbox = open_queue(tmp_path)  # healthy at start-up
        overwrite(tmp_path / "cache.db", victim.number, victim.size)  # the disk fails while it runs
        b = batcher(queue, outbox)
        while outbox.unsealed:
            await b.seal_one()
        await append(queue, outbox, 10_000, 5)  # new traffic after the damage
        while outbox.unsealed:
            await b.seal_one()
        got = [n for batch in await drain_batches(queue, outbox) for n in batch]
        queue.close()
        return queue, got

    queue, got = asyncio.run(main())
    assert len(queue.damage.salvages) == 1
    assert queue.damage.quarantined == victim.rows and queue.damage.entries_lost == victim.rows * 3
    assert len(got) == 1800 - victim.rows * 3 + 5 and set(range(10_000, 10_005)) <= set(got)


def test_check_reports_items_entries_and_bytes_per_sink(tmp_path: Path) -> None:
    build(tmp_path, 20)
    report = salvage.read(str(tmp_path / "cache.db"))
    assert report.problems == [] and report.readable
    assert report.sinks["up"]["inbox"].items == 20 and report.sinks["up"]["inbox"].entries == 60
    assert json.loads(json.dumps(report.lost_keys)) == []


def test_is_damage_tells_a_damaged_file_from_a_full_disk() -> None:
    malformed = sqlite3.DatabaseError("database disk image is malformed")
    malformed.sqlite_errorcode = 11  # type: ignore[attr-defined]
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    assert salvage.is_damage(malformed) and not salvage.is_damage(full)


def test_a_salvage_that_finds_less_than_counts_json_said_says_so(tmp_path: Path) -> None:
    build(tmp_path, 600)
    counts.write(str(tmp_path), Counts(1_700_000_000.0, {"up": SinkCount(700, 2100)}))
    leaves = pages(tmp_path / "cache.db", "Cache", "leaf")
    overwrite(tmp_path / "cache.db", leaves[len(leaves) // 2].number)
    queue, _ = reopen_and_drain(tmp_path)
    assert "counts.json had said the queue held about 2,100 entries in 700 items" in queue.damage.salvages[0]
    assert 0 < queue.damage.entries_lost < 300  # the page's rows only: counts.json adds nothing counted


def test_a_salvage_that_finds_what_counts_json_said_adds_nothing(tmp_path: Path) -> None:
    build(tmp_path, 600)
    counts.write(str(tmp_path), Counts(1_700_000_000.0, {"up": SinkCount(600, 1800)}))
    leaves = pages(tmp_path / "cache.db", "Cache", "leaf")
    overwrite(tmp_path / "cache.db", leaves[len(leaves) // 2].number)
    queue, _ = reopen_and_drain(tmp_path)
    assert "had said" not in queue.damage.salvages[0]


def test_an_item_sealed_in_part_is_counted_once(tmp_path: Path) -> None:
    """Small requests share inbox items, so a batch can end inside one: the entries before the
    cursor's offset are in that batch, and the report counts them there only."""
    async def main() -> None:
        queue, outbox = open_queue(tmp_path)
        for i in range(5):
            await append(queue, outbox, i * 3, 3)
        await batcher(queue, outbox, max_entries=4).seal_one()  # item 1 whole, 1 entry of item 2
        queue.close()
    asyncio.run(main())
    checkpoint(tmp_path / "cache.db")
    report = salvage.read(str(tmp_path / "cache.db"))
    figures = report.sinks["up"]
    assert figures["batches"].entries == 4
    assert figures["inbox"].items == 4 and figures["inbox"].entries == 11  # 4 items of 3, one entry sealed
    assert report.lost_entries == 0
    # the same item unreadable: its 2 unsealed entries are lost, not its 3
    item = next(key for key in _keys(tmp_path) if key.startswith("i/up/00000000000000000001."))
    con = sqlite3.connect(tmp_path / "cache.db")
    con.execute("UPDATE Cache SET value = ? WHERE key = ?", (b"\x00" * 16, item))
    con.commit()
    con.close()
    report = salvage.read(str(tmp_path / "cache.db"))
    assert report.lost_items == 1 and report.lost_entries == 2
    assert report.sinks["up"]["inbox"].entries == 9


def _keys(path: Path) -> list[str]:
    con = sqlite3.connect(path / "cache.db")
    try:
        return [row[0] for row in con.execute("SELECT key FROM Cache")]
    finally:
        con.close()

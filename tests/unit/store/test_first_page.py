"""Rebuilding a queue database's destroyed first page (header and schema) from a fresh one, on real files."""

import os
import sqlite3
from pathlib import Path

import diskcache
import pytest

from relay.store import first_page, salvage
from relay.store.queue import DiskQueue
from tests.damage import overwrite
from tests.unit.store.test_salvage import build, reopen_and_drain


def make_cache(path: str) -> diskcache.Cache:
    return DiskQueue(path, max_size=2**30).make_cache(path)


def test_the_template_describes_the_queue_database_on_disk(tmp_path: Path) -> None:
    # Both made by the same code in the same order: the same schema at the same root pages.
    build(tmp_path, 30)
    tpl = first_page.template(make_cache)
    con = sqlite3.connect(tmp_path / "cache.db")
    real = {name: (kind, root) for kind, name, root in
            con.execute("SELECT type, name, rootpage FROM sqlite_master WHERE rootpage > 0")}
    con.close()
    assert tpl.roots == real and "Cache" in real and "Cache_key_raw" in real
    assert tpl.auto_vacuum  # diskcache's default: the pointer map is there to check against
    first_page.check(str(tmp_path / "cache.db"), tpl)


def test_a_destroyed_first_page_is_rebuilt_in_a_copy_and_every_item_read(tmp_path: Path) -> None:
    keys = build(tmp_path, 600)
    db = tmp_path / "cache.db"
    overwrite(db, 1)
    damaged = db.read_bytes()
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(db).execute("SELECT count(*) FROM sqlite_master").fetchall()
    report = salvage.read(str(db), make_cache=make_cache)
    assert report.readable and report.rebuilt_first_page
    assert report.sinks["up"]["inbox"].items == len(keys) == 600
    assert report.sinks["up"]["inbox"].entries == 1800 and report.lost_items == 0
    assert db.read_bytes() == damaged  # the damaged file itself is never written
    assert not [p for p in os.listdir(tmp_path) if p.startswith(salvage.REBUILD_PREFIX)]  # the copy is gone


def test_without_the_template_a_destroyed_first_page_is_unreadable(tmp_path: Path) -> None:
    build(tmp_path, 20)
    overwrite(tmp_path / "cache.db", 1)
    assert not salvage.read(str(tmp_path / "cache.db")).readable


def test_the_queue_salvages_every_entry_when_only_the_first_page_is_destroyed(tmp_path: Path) -> None:
    build(tmp_path, 600)
    overwrite(tmp_path / "cache.db", 1)
    queue, got = reopen_and_drain(tmp_path)
    assert sorted(got) == list(range(1800))
    assert queue.damage.quarantined == 0 and queue.damage.entries_lost == 0
    assert "first page was rebuilt" in queue.damage.salvages[0]


def test_garbage_throughout_is_refused(tmp_path: Path) -> None:
    build(tmp_path, 50)
    db = tmp_path / "cache.db"
    db.write_bytes(b"\xa5" * db.stat().st_size)
    with pytest.raises(first_page.SpliceRefused, match="should be the root of"):
        first_page.check(str(db), first_page.template(make_cache))
    report = salvage.read(str(db), make_cache=make_cache)
    assert not report.readable and "could not be rebuilt" in report.how


def test_a_file_not_made_of_whole_pages_is_refused(tmp_path: Path) -> None:
    build(tmp_path, 5)
    db = tmp_path / "cache.db"
    overwrite(db, 1)
    with open(db, "ab") as f:
        f.write(b"x" * 100)
    with pytest.raises(first_page.SpliceRefused, match="whole number"):
        first_page.check(str(db), first_page.template(make_cache))


def test_a_database_made_with_another_schema_is_refused(tmp_path: Path) -> None:
    # diskcache with its tag index: one more index, so the roots are not where the queue's are.
    other = diskcache.Cache(str(tmp_path), tag_index=True, eviction_policy="least-recently-used")
    for i in range(50):
        other.set(f"k{i}", b"v" * 200)
    other.close()
    overwrite(tmp_path / "cache.db", 1)
    with pytest.raises(first_page.SpliceRefused):
        first_page.check(str(tmp_path / "cache.db"), first_page.template(make_cache))


def test_a_pointer_map_that_disagrees_is_refused(tmp_path: Path) -> None:
    build(tmp_path, 20)
    db = tmp_path / "cache.db"
    tpl = first_page.template(make_cache)
    page_size = tpl.page_size
    extra = max(root for _, root in tpl.roots.values()) + 1  # claim one more root page than the schema has
    with open(db, "r+b") as f:
        f.seek(page_size + (extra - 3) * 5)
        f.write(bytes([1, 0, 0, 0, 0]))
    with pytest.raises(first_page.SpliceRefused, match="pointer map"):
        first_page.check(str(db), tpl)

"""`relay queue check|salvage` on a real damaged queue directory."""

import os
from pathlib import Path

import pytest

from relay.__main__ import main
from relay.store import counts
from relay.store.counts import Counts, SinkCount
from tests.damage import overwrite, pages
from tests.unit.store.test_salvage import build


def test_check_and_salvage_print_the_figures_and_copy_what_is_readable(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    queue = tmp_path / "queue"
    build(queue, 300)
    leaf = pages(queue / "cache.db", "Cache", "leaf")[3]
    overwrite(queue / "cache.db", leaf.number)
    assert main(["queue", "check", "--path", str(queue)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and f"{300 - leaf.rows} items" in out and f"{leaf.rows} items ({leaf.rows * 3} entries)" in out
    assert main(["queue", "salvage", "--path", str(queue), str(tmp_path / "fresh")]) == 0
    assert f"{(300 - leaf.rows) * 3:,} entries copied" in capsys.readouterr().out
    assert main(["queue", "check", "--path", str(tmp_path / "fresh")]) == 0
    assert "integrity: ok" in capsys.readouterr().out


def test_check_reads_through_a_destroyed_first_page_and_salvage_copies_everything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queue = tmp_path / "queue"
    build(queue, 100)
    overwrite(queue / "cache.db", 1)
    assert main(["queue", "check", "--path", str(queue)]) == 1  # damaged, yet every item readable
    out = capsys.readouterr().out
    assert "first page (file header and schema) unreadable" in out and "100 items" in out, out
    assert main(["queue", "salvage", "--path", str(queue), str(tmp_path / "fresh")]) == 0
    assert "300 entries copied" in capsys.readouterr().out
    assert not [p for p in os.listdir(tmp_path / "fresh") if p.startswith("first-page.tmp")]  # copy made there, removed


def test_check_of_an_unreadable_database_says_what_counts_json_says_it_held(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queue = tmp_path / "queue"
    build(queue, 10)
    counts.write(str(queue), Counts(1_700_000_000.0, {"up": SinkCount(10, 30)}))
    os.truncate(queue / "cache.db", 0)
    assert main(["queue", "check", "--path", str(queue)]) == 1
    out = capsys.readouterr().out
    assert "lost: about 30 entries in 10 items, as of 2023-11-14 22:13:20 UTC (counts.json)" in out, out

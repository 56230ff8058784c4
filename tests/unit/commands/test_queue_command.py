"""`relay queue check|salvage` on a real damaged queue directory."""

from pathlib import Path

import pytest

from relay.__main__ import main
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

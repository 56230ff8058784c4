"""Damage injected into a real queue database with plain file writes, at pages found from the file itself.

Which page holds what comes from SQLite's `dbstat` virtual table (compiled into
CPython's sqlite3 on common builds); tests that need it skip when it is absent.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest


class Page:
    def __init__(self, number: int, rows: int, size: int) -> None:
        self.number, self.rows, self.size = number, rows, size


def pages(db: Path, name: str, pagetype: str) -> list[Page]:
    """Pages of table or index `name` of this type ('leaf', 'internal'), with the cells each holds.
    Reads a checkpointed database (close every connection first)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT pageno, ncell, pgsize FROM dbstat WHERE name = ? AND pagetype = ? "
                           "ORDER BY pageno", (name, pagetype)).fetchall()
    except sqlite3.OperationalError as exc:
        pytest.skip(f"this sqlite3 build has no dbstat virtual table: {exc}")
    finally:
        con.close()
    return [Page(int(n), int(c), int(s)) for n, c, s in rows]



def overwrite(db: Path, page_number: int, size: int = 4096, fill: bytes = b"\xa5") -> None:
    """Overwrite `size` bytes at the start of page `page_number` (1-based), as a torn write would."""
    page_size = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as f:
        f.seek((page_number - 1) * page_size)
        f.write(fill * size)
        f.flush()
        os.fsync(f.fileno())


def checkpoint(db: Path) -> None:
    """Fold the WAL into the database file, so page numbers are those of the file."""
    con = sqlite3.connect(db)
    try:
        busy, frames, copied = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        con.close()
    # a page damaged in the file while a newer copy of it waits in the WAL would never be read
    assert busy == 0 and frames == copied, f"checkpoint of {db}: busy {busy}, {copied} of {frames} WAL frames copied"

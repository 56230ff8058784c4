"""Rebuilding a queue database's first page (file header and schema) from a fresh one made by the same code.

Page 1 of an SQLite file holds the 100-byte header and the root of
sqlite_master, the schema; when it is destroyed nothing else can be found,
though every table page may be intact. The queue's database is always created
by diskcache with the same settings, in the same order, so a fresh database
made the same way has the same schema at the same root pages. Its page 1 is
spliced into a COPY of the damaged file (the damaged file itself is never
written), with the header fields that describe one particular file reset:
the in-header database size (so SQLite takes the size from the file) and the
freelist (whose trunk page is unknown; its pages are only unused then).

Before the copy is used, what the template claims is checked against the
damaged file itself; the rebuild is refused (SpliceRefused, saying which
check failed) when: the file is not a whole number of pages, a root page is
not a b-tree page of the right kind (table or index), or, with auto-vacuum
(diskcache's default), the pointer map does not list exactly the template's
root pages as roots. After the splice the Settings table must read back.

File format: https://www.sqlite.org/fileformat2.html (header offsets below).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Callable
from typing import Any

from relay.errors import QueueError

DBNAME = "cache.db"
_SIZE_AT = 28  # in-header database size, in pages
_FREELIST_AT = 32  # first freelist trunk page, then (36) the number of freelist pages
_CHANGE_COUNTER_AT = 24
_VALID_FOR_AT = 92  # the in-header size counts only while this equals the change counter
_TABLE_PAGES = {0x05, 0x0D}  # interior and leaf b-tree pages of a table
_INDEX_PAGES = {0x02, 0x0A}
_PTRMAP_ROOT = 1  # pointer-map entry type of a root page


class SpliceRefused(QueueError):
    """The damaged file does not match what the template's first page describes."""


class Template:
    """Page 1 of a fresh queue database, and the schema it describes."""

    def __init__(self, page: bytes, page_size: int, roots: dict[str, tuple[str, int]],
                 auto_vacuum: int, settings: set[str]) -> None:
        self.page, self.page_size, self.roots = page, page_size, roots  # roots: name -> (type, rootpage)
        self.auto_vacuum, self.settings = auto_vacuum, settings


def template(make_cache: Callable[[str], Any]) -> Template:
    """A fresh queue database made by `make_cache` in a temporary directory: its page 1 and schema."""
    work = tempfile.mkdtemp(prefix="relay-first-page-")
    try:
        make_cache(work).close()
        con = sqlite3.connect(os.path.join(work, DBNAME))
        try:
            page_size = int(con.execute("PRAGMA page_size").fetchone()[0])
            auto_vacuum = int(con.execute("PRAGMA auto_vacuum").fetchone()[0])
            roots = {str(name): (str(kind), int(root)) for kind, name, root in
                     con.execute("SELECT type, name, rootpage FROM sqlite_master WHERE rootpage > 0")}
            settings = {str(row[0]) for row in con.execute("SELECT key FROM Settings")}
        finally:
            con.close()
        with open(os.path.join(work, DBNAME), "rb") as f:
            page = f.read(page_size)
        return Template(page, page_size, roots, auto_vacuum, settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check(db_path: str, tpl: Template) -> None:
    """SpliceRefused unless the damaged file's pages agree with the template's schema."""
    size = os.path.getsize(db_path)
    ps = tpl.page_size
    if size == 0 or size % ps:
        raise SpliceRefused(f"{db_path} is {size} bytes, not a whole number of {ps}-byte pages")
    pages = size // ps
    highest = max(root for _, root in tpl.roots.values())
    if pages < highest:
        raise SpliceRefused(f"{db_path} has {pages} pages; the schema's root pages go up to {highest}")
    with open(db_path, "rb") as f:
        for name, (kind, root) in sorted(tpl.roots.items()):
            f.seek((root - 1) * ps)
            flag = f.read(1)[0]
            wanted = _TABLE_PAGES if kind == "table" else _INDEX_PAGES
            if flag not in wanted:
                raise SpliceRefused(f"page {root} of {db_path} should be the root of {kind} {name} but is not a "
                                    f"{kind} b-tree page (type byte 0x{flag:02x})")
        if tpl.auto_vacuum:
            # Page 2 is the first pointer map: 5 bytes per page from page 3 on (type, parent page).
            f.seek(ps)
            ptrmap = f.read(ps)
            listed = set()
            for page in range(3, min(pages, 3 + ps // 5)):
                kind_byte, parent = struct.unpack_from(">BI", ptrmap, (page - 3) * 5)
                if kind_byte == _PTRMAP_ROOT and parent == 0:
                    listed.add(page)
            expected = {root for _, root in tpl.roots.values()}
            if listed != expected:
                raise SpliceRefused(f"the pointer map of {db_path} lists root pages {sorted(listed)}, the "
                                    f"queue's schema has {sorted(expected)}")


def splice(db_path: str, tpl: Template, out_dir: str) -> str:
    """A copy of db_path (and its WAL) in out_dir with the template's page 1; the path of the copy.
    SpliceRefused when a check fails (before or after the splice); OSError when the copy cannot be made."""
    check(db_path, tpl)
    copy = os.path.join(out_dir, DBNAME)
    shutil.copyfile(db_path, copy)
    if os.path.exists(db_path + "-wal"):  # frames newer than the file: SQLite replays them over the copy
        shutil.copyfile(db_path + "-wal", copy + "-wal")
    page = bytearray(tpl.page)
    struct.pack_into(">I", page, _SIZE_AT, os.path.getsize(db_path) // tpl.page_size)
    struct.pack_into(">II", page, _FREELIST_AT, 0, 0)
    page[_VALID_FOR_AT:_VALID_FOR_AT + 4] = page[_CHANGE_COUNTER_AT:_CHANGE_COUNTER_AT + 4]
    with open(copy, "r+b") as f:
        f.write(page)
    con = sqlite3.connect(copy)
    try:
        found = {str(row[0]) for row in con.execute("SELECT key FROM Settings")}
    except sqlite3.DatabaseError as exc:
        raise SpliceRefused(f"the rebuilt copy of {db_path} cannot read its Settings table: {exc}") from None
    finally:
        con.close()
    if not tpl.settings <= found:
        raise SpliceRefused(f"the rebuilt copy of {db_path} lacks the queue's settings "
                            f"{sorted(tpl.settings - found)}")
    return copy

"""Reading a damaged queue database: what is readable, what was lost, and a fresh copy of the former.

Why plain sqlite3 and not diskcache: diskcache reads through the key index and
gives up on the first damaged page. Here the table is read by rowid ranges; a
range that touches a damaged page raises DatabaseError for that range only,
so it is halved until the unreadable rowids stand alone. Every readable row is
checked as the relay reads it (decode and checksum) before it is copied.

What was lost is counted from the key, which carries each item's entry count
(layout.py): keys of unreadable rows come from the key index (`Cache_key_raw`,
which holds key and rowid, so it is read without touching the table). When the
index is damaged too, inbox sequence numbers missing above the sink's cursor
count as lost items whose entries are unknown; `how` says which way each
figure was obtained.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from relay.store import first_page
from relay.store.layout import Cursor, checksum, decode_batch, decode_cursor, decode_dead, decode_item

DBNAME = "cache.db"
COUNTS = "counts.json"  # counts.py's file: kept with a damaged database moved aside
REBUILD_PREFIX = "first-page.tmp-"  # work directories of a first-page rebuild (removed after, or at start)
_CHUNK = 512  # rowids per read: large enough to be fast, small enough to halve quickly
_MODE_RAW = 1  # diskcache: a bytes value stored as is in the `value` column
_DAMAGE = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def is_damage(exc: BaseException) -> bool:
    """True when SQLite says the file is damaged (not a full disk, a lock or an I/O error)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _DAMAGE
    text = str(exc)
    return "malformed" in text or "not a database" in text


def refuse_empty(queue_dir: str) -> None:
    """DatabaseError when the queue's database is a zero-length file: SQLite would take it for a new,
    empty database, and the acknowledged entries it held would vanish without a word."""
    db = os.path.join(queue_dir, DBNAME)
    if os.path.isfile(db) and os.path.getsize(db) == 0:
        raise sqlite3.DatabaseError(f"file is not a database: {db} is empty (0 bytes)")


class Figures(msgspec.Struct):
    items: int = 0
    entries: int = 0
    bytes: int = 0


class Report(msgspec.Struct):
    """What a read of one queue database found."""

    path: str
    problems: list[str] = msgspec.field(default_factory=list)  # integrity check messages (first 20)
    readable: bool = True  # False: not even the header or schema could be read
    sinks: dict[str, dict[str, Figures]] = msgspec.field(default_factory=dict)  # sink -> kind -> figures
    lost_items: int = 0
    lost_entries: int = 0
    unknown_items: int = 0  # lost items whose entry count is unknown (found from sequence gaps)
    lost_keys: list[str] = msgspec.field(default_factory=list)
    bad_rowids: int = 0  # rowids that could not be read (rows, or gaps between rows)
    rebuilt_first_page: bool = False  # read through a copy whose first page was rebuilt
    how: str = ""
    seconds: float = 0.0

    @property
    def damaged(self) -> bool:
        return bool(self.problems) or not self.readable or bool(self.lost_items or self.unknown_items)

    def summary(self) -> str:
        kept = sum(f.entries for kinds in self.sinks.values() for f in kinds.values())
        items = sum(f.items for kinds in self.sinks.values() for f in kinds.values())
        lost = f"{self.lost_items} items ({self.lost_entries} entries) unreadable"
        if self.unknown_items:
            lost += f", and {self.unknown_items} inbox items missing whose entry count is unknown"
        return f"{items} items ({kept} entries) readable, {lost}"


_KINDS = {"i": "inbox", "b": "batches", "d": "dead", "c": "cursor", "q": "quarantined"}


def parse_key(key: str) -> tuple[str, str, int, int] | None:
    """(kind, sink, entries, bytes) from a queue key, or None for another key."""
    kind, _, rest = key.partition("/")
    if kind not in _KINDS or not rest:
        return None
    if kind == "c":
        return "cursor", rest, 0, 0
    if kind == "q":
        inner = parse_key(rest)
        return ("quarantined", inner[1], 0, 0) if inner else ("quarantined", "", 0, 0)
    sink, _, tail = rest.rpartition("/")
    try:
        _, count, nbytes = tail.split(".")
        return _KINDS[kind], sink, int(count), int(nbytes)
    except ValueError:
        return None


def valid(key: str, value: bytes) -> bool:
    """The value decodes as the relay would read it, and its checksum holds."""
    try:
        if key.startswith("i/"):
            item = decode_item(value)
            return checksum(item.entries) == item.crc
        if key.startswith("b/"):
            batch = decode_batch(value)
            return checksum(batch.body) == batch.crc
        if key.startswith("d/"):
            decode_dead(value)
        elif key.startswith("c/"):
            return decode_cursor(value).intact()
        return True
    except msgspec.DecodeError:
        return False


def connect(db_path: str) -> sqlite3.Connection:
    con = sqlite3.connect(db_path, isolation_level=None, timeout=60)
    con.execute("PRAGMA cell_size_check = ON")  # catch more damage as an error, not as garbage
    return con


def integrity(con: sqlite3.Connection, *, full: bool = False) -> list[str]:
    """SQLite's own check; [] when it finds nothing wrong."""
    rows = con.execute(f"PRAGMA {'integrity_check' if full else 'quick_check'}(20)").fetchall()
    found = [str(row[0]) for row in rows]
    return [] if found == ["ok"] else found


def _rows(con: sqlite3.Connection, low: int, high: int, bad: list[int]) -> Iterator[tuple[int, str, int, bytes]]:
    """Rows with low <= rowid < high; a range that cannot be read is halved until single rowids fail."""
    try:
        # One rowid alone is looked up by equality: a range scan also steps to the row after
        # the range, which may sit on the damaged page when this one does not.
        rows = con.execute("SELECT rowid, key, mode, value FROM Cache WHERE rowid = ?", (low,)).fetchall() \
            if high - low == 1 else \
            con.execute("SELECT rowid, key, mode, value FROM Cache WHERE rowid >= ? AND rowid < ?",
                        (low, high)).fetchall()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        if high - low <= 1:
            bad.append(low)
            return
        middle = (low + high) // 2
        yield from _rows(con, low, middle, bad)
        yield from _rows(con, middle, high, bad)
        return
    yield from rows


def _one(con: sqlite3.Connection, sql: str) -> int | None:
    try:
        row = con.execute(sql).fetchone()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return None
    return int(row[0]) if row and row[0] is not None else None


def _index_keys(con: sqlite3.Connection) -> tuple[dict[int, str], bool]:
    """rowid -> key from the key index alone; False when part of it could not be read."""
    found: dict[int, str] = {}
    last = ""
    while True:
        try:
            rows = con.execute("SELECT key, rowid FROM Cache INDEXED BY Cache_key_raw WHERE key > ? "
                               "ORDER BY key LIMIT 2000", (last,)).fetchall()
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            return found, False
        if not rows:
            return found, True
        for key, rowid in rows:
            if isinstance(key, str):
                found[int(rowid)] = key
        last = rows[-1][0] if isinstance(rows[-1][0], str) else last
        if not isinstance(rows[-1][0], str):
            return found, True


def read(db_path: str, copy: Callable[[str, bytes], None] | None = None, *, full_check: bool = False,
         make_cache: Callable[[str], Any] | None = None, work_dir: str | None = None) -> Report:
    """Read every row of a queue database, handing each valid (key, value) to `copy`.

    With `make_cache` (how the queue makes its database), a file whose first page (header and
    schema) cannot be read is read through a copy with that page rebuilt (first_page.py); the
    damaged file is never written. Without it, or when the rebuild is refused, nothing is readable.
    The copy is made in `work_dir` (default: the database's directory), which needs room for it."""
    started = time.monotonic()
    report = _read(db_path, copy, full_check)
    if not report.readable and make_cache is not None and os.path.exists(db_path) and os.path.getsize(db_path):
        report = _read_rebuilt(db_path, copy, make_cache, report, work_dir or os.path.dirname(db_path) or ".")
    report.seconds = time.monotonic() - started
    return report


def _read_rebuilt(db_path: str, copy: Callable[[str, bytes], None] | None, make_cache: Callable[[str], Any],
                  unreadable: Report, work_dir: str) -> Report:
    """Read db_path through a copy whose first page is rebuilt; `unreadable` (saying why) when refused."""
    work = ""
    try:
        try:
            work = tempfile.mkdtemp(prefix=REBUILD_PREFIX, dir=work_dir)
            spliced = first_page.splice(db_path, first_page.template(make_cache), work)
        except (first_page.SpliceRefused, OSError, sqlite3.DatabaseError) as exc:
            unreadable.how += f"; its first page could not be rebuilt: {exc}"
            return unreadable
        report = _read(spliced, copy, False)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    report.path = db_path
    report.problems = unreadable.problems + report.problems
    report.rebuilt_first_page = True
    report.how = ("its first page (file header and schema) was unreadable and was rebuilt from a fresh queue "
                  f"database's, in a copy; {report.how}")
    return report


def _read(db_path: str, copy: Callable[[str, bytes], None] | None, full_check: bool) -> Report:
    report = Report(db_path)
    if not os.path.exists(db_path) or os.path.getsize(db_path) == 0:
        # SQLite takes a zero-length file for a new, empty database; the relay never leaves one
        # behind once it has acknowledged anything, so it is read as "nothing readable".
        report.readable = False
        report.problems = ["no database file" if not os.path.exists(db_path) else "the database file is empty (0 bytes)"]
        report.how = f"nothing could be read: {report.problems[0]}"
        return report
    con = connect(db_path)
    try:
        try:
            report.problems = integrity(con, full=full_check)
        except sqlite3.DatabaseError as exc:  # the check itself stopped at the damage
            if not is_damage(exc):
                raise
            report.problems = [str(exc)]
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchall()  # header and schema
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc) and "no such table" not in str(exc):
                raise
            report.readable = False
            report.problems = report.problems or [str(exc)]
            report.how = f"nothing could be read: {exc}"
            return report
        _read_rows(con, report, copy)
    finally:
        con.close()
    return report


def _read_rows(con: sqlite3.Connection, report: Report, copy: Callable[[str, bytes], None] | None) -> None:
    index, index_whole = _index_keys(con)
    top = max(_one(con, "SELECT max(rowid) FROM Cache") or 0, max(index, default=0))
    bad: list[int] = []
    seen: set[int] = set()
    inbox_seqs: dict[str, set[int]] = {}
    cursors: dict[str, Cursor] = {}
    readable_inbox: set[tuple[str, int]] = set()  # (sink, seq) of the inbox items read whole
    low = 1
    while low <= top + _CHUNK:  # one range past the highest known rowid: rows the index missed
        for rowid, key, mode, value in _rows(con, low, low + _CHUNK, bad):
            seen.add(rowid)
            if not isinstance(key, str):
                continue
            parsed = parse_key(key)
            good = mode == _MODE_RAW and isinstance(value, bytes) and valid(key, value)
            if parsed is None:
                continue  # not a queue key (diskcache's own)
            kind, sink, count, _ = parsed
            if kind == "inbox":
                inbox_seqs.setdefault(sink, set()).add(_seq(key))
            if not good:
                _lost(report, key, count)
                continue
            if kind == "cursor":
                cursors[sink] = decode_cursor(value)
            if kind == "inbox":
                readable_inbox.add((sink, _seq(key)))
            figures = report.sinks.setdefault(sink, {}).setdefault(kind, Figures())
            figures.items += 1
            figures.entries += count
            figures.bytes += len(value)
            if copy is not None:
                copy(key, value)
        low += _CHUNK
    report.bad_rowids = len(bad)
    for rowid, key in index.items():
        if rowid not in seen:  # listed by the index, not readable (or no longer there) in the table
            parsed = parse_key(key)
            _lost(report, key, parsed[2] if parsed else 0)
            if parsed and parsed[0] == "inbox":
                inbox_seqs.setdefault(parsed[1], set()).add(_seq(key))
    # The item at a sink's cursor may be sealed in part (`offset` of its entries are in a batch):
    # those are counted with the batch, not again with the item, readable or lost
    for sink, cursor in cursors.items():
        if cursor.offset and cursor.seq in inbox_seqs.get(sink, ()):
            if (sink, cursor.seq) in readable_inbox:
                report.sinks[sink]["inbox"].entries -= cursor.offset
            else:
                report.lost_entries -= cursor.offset
    hows = ["entries of unreadable items counted from their keys (read from the key index)"]
    if bad and not index_whole:
        for sink, seqs in inbox_seqs.items():
            start = cursors[sink].seq if sink in cursors else min(seqs)
            report.unknown_items += sum(1 for seq in range(start, max(seqs)) if seq not in seqs)
        hows.append("the key index is damaged too: inbox items missing between the cursor and the last "
                    "readable item are counted as lost items whose entries are unknown")
    report.how = "; ".join(hows)


def _seq(inbox_key: str) -> int:
    """An inbox key's sequence number (layout.inbox_key: `i/<sink>/<seq>.<count>.<bytes>`)."""
    return int(inbox_key.rsplit("/", 1)[1].split(".")[0])


def _lost(report: Report, key: str, count: int) -> None:
    # a cursor is rebuilt; a quarantined copy was counted before; a rejected record (r/, store/rejected.py)
    # is no acknowledged data
    if key.startswith(("c/", "q/", "r/")):
        return
    report.lost_items += 1
    report.lost_entries += count
    if len(report.lost_keys) < 10_000:
        report.lost_keys.append(key)


def copy_into(db: str, cache: Any, make_cache: Callable[[str], Any] | None = None,
              work_dir: str | None = None) -> Report:
    """Read `db`, writing every valid item into the diskcache `cache` (256 per transaction), then close it.
    `make_cache`, `work_dir`: as for `read`."""
    pending: list[tuple[str, bytes]] = []

    def flush() -> None:
        with cache.transact(retry=True):
            for key, value in pending:
                cache.set(key, value)
        pending.clear()

    def copy(key: str, value: bytes) -> None:
        pending.append((key, value))
        if len(pending) >= 256:
            flush()

    report = read(db, copy, make_cache=make_cache, work_dir=work_dir)
    flush()
    cache.close()  # the last connection: SQLite checkpoints and drops the WAL
    return report


def rebuild(queue_dir: str, make_cache: Callable[[str], object], stamp: str, *,
            require_readable: bool = False) -> tuple[Report, str]:
    """Copy every readable item of queue_dir's database into a fresh one that takes its place.

    The damaged files move to queue_dir/damaged/<stamp>/ (kept, never deleted). The copy
    is made in queue_dir/salvage.tmp first, so a crash at any point leaves either the
    damaged database in place (salvaged again at the next start) or the finished copy
    (put in place by `finish_interrupted`). `make_cache(dir)` opens a diskcache Cache."""
    db = os.path.join(queue_dir, DBNAME)
    tmp = os.path.join(queue_dir, "salvage.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    report = copy_into(db, make_cache(tmp), make_cache)
    if require_readable and not report.readable:
        shutil.rmtree(tmp, ignore_errors=True)
        return report, ""
    aside = os.path.join(queue_dir, "damaged", stamp)
    os.makedirs(aside, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.rename(db + suffix, os.path.join(aside, DBNAME + suffix))
    if os.path.exists(os.path.join(queue_dir, COUNTS)):  # what it held, by the queue's last figures
        shutil.copyfile(os.path.join(queue_dir, COUNTS), os.path.join(aside, COUNTS))
    _swap_in(queue_dir)
    return report, aside


def _swap_in(queue_dir: str) -> None:
    tmp = os.path.join(queue_dir, "salvage.tmp")
    for suffix in ("-wal", "-shm"):  # closed cleanly: nothing in them
        if os.path.exists(os.path.join(tmp, DBNAME + suffix)):
            os.remove(os.path.join(tmp, DBNAME + suffix))
    os.rename(os.path.join(tmp, DBNAME), os.path.join(queue_dir, DBNAME))
    shutil.rmtree(tmp, ignore_errors=True)
    fd = os.open(queue_dir, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself must survive a power cut
    finally:
        os.close(fd)


def finish_interrupted(queue_dir: str) -> bool:
    """A salvage cut short by a crash: put a finished copy in place, or drop a partial one.
    True when a finished copy was put in place."""
    for entry in os.scandir(queue_dir) if os.path.isdir(queue_dir) else ():
        if entry.name.startswith(REBUILD_PREFIX):  # a first-page rebuild's copy, left by a crash
            shutil.rmtree(entry.path, ignore_errors=True)
    tmp = os.path.join(queue_dir, "salvage.tmp")
    if not os.path.isdir(tmp):
        return False
    if not os.path.exists(os.path.join(queue_dir, DBNAME)) and os.path.exists(os.path.join(tmp, DBNAME)):
        _swap_in(queue_dir)  # the damaged file had moved aside: the copy was complete
        return True
    shutil.rmtree(tmp, ignore_errors=True)
    return False

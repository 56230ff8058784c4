"""What damage to the queue database costs: the salvage into a fresh database, and its count.

Kept apart from queue.py, which only says when SQLite reported damage; here is
what happens then (salvage.py does the reading and copying) and the tally of
items and entries lost, for the metrics, the log and /readyz.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from relay.errors import QueueError
from relay.store import counts, salvage

log = logging.getLogger("relay.queue")
Cache = Any  # a diskcache.Cache; only queue.py (and layout.py) import diskcache
_SALVAGE_EVERY = 10.0  # seconds at least between salvages while running: a failing disk is not copied in a loop


class Damage:
    """The salvages of one queue directory and what they (and checksum failures) lost."""

    def __init__(self, path: str, make_cache: Callable[[str], Cache], on_unreadable: str) -> None:
        self.path = path
        self.on_unreadable = on_unreadable  # "start_empty" | "exit": when nothing of the database can be read
        self._make_cache = make_cache
        self.quarantined = 0  # items moved aside or lost to damage since start
        self.entries_lost = 0  # entries those items held
        self.salvages: list[str] = []  # one line per salvage of a damaged database, for /readyz and the log
        self._lost: set[str] = set()  # keys a salvage could not read (already counted)
        self._salvaged_at = -1e9

    def recover(self, exc: BaseException, cache: Cache | None) -> tuple[bool, Cache | None]:
        """DB thread: SQLite found the file damaged. Salvage it and say True with the fresh Cache (the
        caller runs its operation again on it); False and the Cache to go on with when this is no
        damage, or a salvage ran moments ago (a disk that keeps failing must not be copied in a loop)."""
        now = time.monotonic()
        if not salvage.is_damage(exc) or now - self._salvaged_at < _SALVAGE_EVERY:
            return False, cache
        self._salvaged_at = now
        if cache is not None:
            cache.close()
        try:
            return True, self.salvage(str(exc), at_start=False)
        except (OSError, sqlite3.Error, QueueError) as failed:
            log.error("queue: salvage of %s failed: %s", self.path, failed)
            return False, self._make_cache(self.path)

    def salvage(self, why: str, *, at_start: bool) -> Cache:
        """Move the damaged database aside, copy every readable item into a fresh one, count the rest.
        Returns a Cache on the fresh database."""
        db = os.path.join(self.path, salvage.DBNAME)
        log.error("queue: %s is damaged (%s); salvaging every readable item into a fresh database", db, why)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        keep_if_unreadable = at_start and self.on_unreadable == "exit"
        held = counts.read(self.path)  # before anything moves: what the queue last said it held
        report, aside = salvage.rebuild(self.path, self._make_cache, stamp, require_readable=keep_if_unreadable)
        if not report.readable and keep_if_unreadable:
            raise QueueError(f"nothing of the queue database {db} can be read ({report.how}); {lost_figure(held)}; "
                             "it is left as it is. Move it aside to start with an empty queue (or set "
                             "queue.on_unreadable = \"start_empty\")")
        cache = self._make_cache(self.path)
        self.quarantined += report.lost_items + report.unknown_items
        self.entries_lost += report.lost_entries
        self._lost.update(report.lost_keys)
        line = (f"queue salvaged {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC in "
                f"{report.seconds:.1f}s: {report.summary()}; damaged copy kept in {aside}")
        if report.rebuilt_first_page:
            line += " (its first page was rebuilt to read it)"
        queued = sum(f.entries for kinds in report.sinks.values() for kind, f in kinds.items()
                     if kind in ("inbox", "batches"))
        if report.readable and held is not None and held.entries > queued + report.lost_entries:
            # More went missing than the pages that could be read account for: say so, uncounted
            # (the figures may be seconds old, and deliveries since then are not in them).
            line += f"; {counts.FILE} had said the queue held {held.describe()}"
        if not report.readable:
            # Nothing to count from: the figures the queue last wrote beside the database are the
            # best there is, and far better than reporting 0 lost.
            if held is not None:
                self.quarantined += held.items
                self.entries_lost += held.entries
            line += f" (nothing of it could be read: started empty; lost {lost_figure(held)})"
        self.salvages.append(line)
        log.error("%s (%s)", line, report.how)
        return cache

    def counted(self, key: str) -> bool:
        """True (once) for a key a salvage could not read: it was counted and logged then."""
        if key in self._lost:
            self._lost.discard(key)
            return True
        return False

    def quarantine(self, key: str, why: str) -> None:
        """Log and count one item that failed its checksum or could not be read."""
        log.error("queue: quarantined %s in %s: %s", key, self.path, why)
        parsed = salvage.parse_key(key)
        self.quarantined += 1
        self.entries_lost += parsed[2] if parsed else 0


def lost_figure(held: counts.Counts | None) -> str:
    """What a wholly unreadable database held, as far as counts.json tells."""
    if held is None:
        return f"an unknown number of entries (no {counts.FILE} to tell)"
    return held.describe()

"""counts.json: how much the queue held, kept beside the database for the day nothing of it can be read.

When the database file is zero-length or garbage throughout, no salvage can say
what was in it; without this file the relay would report "0 lost" for a queue
that held millions of acknowledged entries. The figures are what the outboxes
already know (items and entries per sink), written every few seconds when they
changed and at a clean stop, so a loss is reported as "about N entries, as of
<time>": honest about both the figure and its age.
"""

from __future__ import annotations

import logging
import os
import time

import msgspec

FILE = "counts.json"


class SinkCount(msgspec.Struct):
    items: int = 0
    entries: int = 0


class Counts(msgspec.Struct):
    at: float  # unix time the figures were taken
    sinks: dict[str, SinkCount] = msgspec.field(default_factory=dict)

    @property
    def items(self) -> int:
        return sum(one.items for one in self.sinks.values())

    @property
    def entries(self) -> int:
        return sum(one.entries for one in self.sinks.values())

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.at))
        return f"about {self.entries:,} entries in {self.items:,} items, as of {when} UTC ({FILE})"


def write(queue_dir: str, counts: Counts) -> None:
    """Replace queue_dir/counts.json atomically (write, fsync, rename): a crash leaves the old or the new
    file, never half of one. The directory is not fsynced: a rename lost to a power cut leaves the
    previous figures, whose time says how old they are."""
    path = os.path.join(queue_dir, FILE)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(msgspec.json.encode(counts))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_logged(queue_dir: str, counts: Counts) -> None:
    """write(), at a clean stop: a failure is logged, never raised."""
    try:
        write(queue_dir, counts)
    except OSError as exc:
        logging.getLogger("relay.queue").warning("queue: could not write %s: %s", FILE, exc)


def read(queue_dir: str) -> Counts | None:
    """The last figures written, or None when there are none (or they cannot be read)."""
    try:
        with open(os.path.join(queue_dir, FILE), "rb") as f:
            return msgspec.json.decode(f.read(), type=Counts)
    except (OSError, msgspec.DecodeError):
        return None

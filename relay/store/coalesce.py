"""Small requests for the same sinks that wait for the DB thread together become one inbox item.

Each request used to be an inbox item of its own: a 1-entry request cost a `set` at
commit, a read and a delete when the batcher sealed it with 999 others, each a trip
through diskcache. Now a small request joins the item still waiting for the DB thread,
if there is one for its sinks; the DB thread closes the item when it packs it, and the
next small request opens another. Every request in an item is answered when the commit
holding it succeeds, or refused with the same error when it fails, exactly as when it
was alone: nothing is acknowledged before it is on disk.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relay.store.writes import Write

if TYPE_CHECKING:
    from relay.store.outbox import Outbox
    from relay.store.queue import DiskQueue

# Requests with fewer bytes of encoded entries than this may share an item; larger ones are
# already worth an item (and a compression) of their own.
SMALL = 64 * 1024


class _Item:
    """An inbox item being filled on the event loop until the DB thread takes it."""

    def __init__(self, outboxes: list[Outbox]) -> None:
        self.outboxes = outboxes
        self.seqs = [outbox.reserve() for outbox in outboxes]  # its place in each inbox
        self.parts: list[bytes] = []
        self.count = 0
        self.closed = False
        self.done: asyncio.Future[None] | None = None


class Coalescer:
    """One per queue: the open item per set of sinks."""

    def __init__(self) -> None:
        # by the outboxes themselves, not their names: a reload may replace a sink's outbox
        self._open: dict[tuple[Outbox, ...], _Item] = {}
        self._lock = threading.Lock()  # the event loop fills an item, the DB thread closes it

    async def commit(self, queue: DiskQueue, outboxes: list[Outbox], count: int, lines: bytes) -> None:
        """Commit `count` entries (`lines`) to each outbox's inbox, in an item shared with the
        other small requests for the same outboxes that arrive before the DB thread takes it."""
        key = tuple(outboxes)
        with self._lock:
            item = self._open.get(key)
            opened = item is None or item.closed
            if opened:
                item = self._open[key] = _Item(outboxes)
            assert item is not None
            item.parts.append(lines)
            item.count += count
        if opened:  # queued now, right after its sequence numbers were taken: items commit in their order
            item.done = queue.append_soon(self._writer(item), self._on_commit(item))
            item.done.add_done_callback(_retrieved)
        assert item.done is not None
        # shielded: a request that goes away (its client hung up) must not cancel the others' commit
        await asyncio.shield(item.done)

    def _writer(self, item: _Item) -> Callable[[], list[Write]]:
        def writes() -> list[Write]:  # on the DB thread, when it packs the group holding the item
            with self._lock:
                item.closed = True
                lines, count = b"".join(item.parts), item.count
                item.parts = []
            return [Write(outbox.name, seq, count, lines) for outbox, seq in zip(item.outboxes, item.seqs, strict=True)]
        return writes

    @staticmethod
    def _on_commit(item: _Item) -> Callable[[list[Any]], None]:
        def on_commit(refs: list[Any]) -> None:
            for outbox, ref in zip(item.outboxes, refs, strict=True):
                outbox.committed(ref)  # inbox writes only: each ref an InboxRef
        return on_commit


def _retrieved(done: asyncio.Future[None]) -> None:
    """The commit's error reaches every request awaiting it; this only keeps asyncio from logging
    it as never retrieved when all of them went away first."""
    if not done.cancelled():
        done.exception()


"""A queue shard nobody owns any more, delivered by a worker that adopted it.

After a restart with fewer `server.workers`, shard k (queue.path/shard-<k>/)
has no owner; worker (k mod N) opens it and runs one dispatcher per configured
sink on it until it is empty, then closes it. Nothing new is ever written to
it: ingest goes only to the worker's own shard. Entries for a sink that is no
longer configured stay on disk (as they do in an owned shard), said once.

Its dead letters are handed over to the adopting worker's own store (at once, and
again for those its drain makes), so that listing, replay, re-mapping, the bound and
the metrics treat them like the worker's own. Each is written there before it is
deleted here: a crash in between leaves it in both stores (listed and replayed
twice), never in neither.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from relay.config import Config
from relay.delivery.dispatch import SinkDispatcher
from relay.delivery.sender import Sender
from relay.delivery.transport import HttpTransport
from relay.errors import QueueError
from relay.store import shards
from relay.store.deadletters import DeadLetters, drop_dead, read_raw
from relay.store.layout import BatchRef
from relay.store.outbox import Outbox
from relay.store.queue import SQLITE_MEMORY, DiskQueue
from relay.telemetry import Metrics

log = logging.getLogger("relay")
EMPTY_CHECK = 1.0  # seconds between looks at whether the shard is delivered in full

# Takes a sink's letters into the adopting worker's store; False when it has no such sink.
HandOver = Callable[[str, list[tuple[BatchRef, bytes]]], Awaitable[bool]]


class AdoptedShard:
    def __init__(self, index: int, config: Config, workers: int, metrics: Metrics, hand_over: HandOver) -> None:
        self.index = index
        self.hand_over = hand_over
        self.config = config
        self.metrics = metrics
        q = config.queue
        self.queue = DiskQueue(shards.shard_path(q.path, index), max_size=shards.share(q.max_size, workers),
                               sync=q.sync, min_free_space=q.min_free_space, on_unreadable=q.on_unreadable,
                               sqlite_memory=shards.share(SQLITE_MEMORY, workers))
        self.outboxes: dict[str, Outbox] = {}
        self.dispatchers: list[SinkDispatcher] = []
        self.sessions: list[aiohttp.ClientSession] = []
        self.dead_letters = DeadLetters(self.queue, self.outboxes, shards.share(q.dead_letter_max_size, workers))
        self._task: asyncio.Task[None] | None = None
        self._opened = False

    def start(self) -> None:
        try:
            snapshot = self.queue.open()
        except QueueError as exc:
            log.error("shard %d left by an earlier run cannot be delivered now: %s", self.index, exc)
            return
        self._opened = True
        for name, found in snapshot.items():
            if name not in self.config.sinks:
                if found.inbox or found.batches:
                    log.warning("shard %d holds entries for sink %r, which is not configured; they stay on "
                                "disk until it is configured again", self.index, name)
                continue
            self.outboxes[name] = Outbox(name, found)
        queued = sum(o.queued_entries for o in self.outboxes.values())
        if not queued and not any(o.dead for o in self.outboxes.values()):
            self._close()
            return
        if queued:
            log.info("shard %d (left by a run with more workers): delivering its %d queued entries; "
                     "nothing new is written to it", self.index, queued)
            self._start_dispatchers()
        self._task = asyncio.create_task(self._deliver(), name=f"adopted-shard:{self.index}")

    def _start_dispatchers(self) -> None:
        for name, outbox in self.outboxes.items():
            sink = self.config.sinks[name]
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=sink.concurrency))
            self.sessions.append(session)
            sender = Sender(HttpTransport(session, timeout=sink.request_timeout), sink.url, sink.api_key)
            dispatcher = SinkDispatcher(name, sink, outbox, self.queue, sender, self.metrics,
                                        on_dead_letter=self.dead_letters.enforce_bound)
            self.dispatchers.append(dispatcher)
            dispatcher.start()

    @property
    def queued_entries(self) -> int:
        return sum(o.queued_entries for o in self.outboxes.values()) if self._opened else 0

    async def _deliver(self) -> None:
        await self._hand_over_dead_letters()
        while self.queued_entries:
            await asyncio.sleep(EMPTY_CHECK)  # a periodic look, not a synchronisation
        await self._stop_dispatchers(1.0)
        await self._hand_over_dead_letters()  # those the drain made
        log.info("shard %d delivered in full; closed", self.index)
        self._close()

    async def _hand_over_dead_letters(self) -> None:
        for name, outbox in self.outboxes.items():
            refs = list(outbox.dead)
            if not refs:
                continue
            try:
                letters = await read_raw(self.queue, refs)
                if letters and not await self.hand_over(name, letters):
                    continue  # its worker has no such sink any more: they stay here, like its entries
                await drop_dead(self.queue, refs)
            except Exception as exc:  # disk full or failing: they stay here (listed offline), the drain goes on
                log.error("shard %d: could not hand its dead letters for sink %s over to this worker's "
                          "store; they stay in the shard: %s", self.index, name, exc)
                continue
            handed = set(refs)
            outbox.dead = [ref for ref in outbox.dead if ref not in handed]
            if letters:  # else every one was dropped meanwhile (the store's bound)
                log.info("shard %d: %d dead letters (%d entries) for sink %s handed over to this worker's "
                         "store", self.index, len(letters), sum(ref.count for ref, _ in letters), name)

    async def _stop_dispatchers(self, timeout: float) -> None:
        dispatchers, self.dispatchers = self.dispatchers, []
        await asyncio.gather(*(d.stop(timeout) for d in dispatchers))
        sessions, self.sessions = self.sessions, []
        await asyncio.gather(*(s.close() for s in sessions))

    def _close(self) -> None:
        if self._opened:
            self.queue.close()
            self._opened = False

    async def stop(self, timeout: float) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._stop_dispatchers(timeout)
        self._close()

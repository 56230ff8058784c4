"""Everything a running relay holds, built from one config, and how a reload swaps it.

A reload (SIGHUP or `POST /-/reload`) reads the config file again and builds
the new routes (sources, tokens, mappings) before touching anything: a config
that does not load or compile is refused with its error and the old one keeps
running. Then the route table is swapped in one assignment (requests in
flight finish on the route they started with), sinks that were removed stop
after their current attempt (their data stays on disk), new sinks start, and
sinks whose settings changed restart on the same outbox; a new key or URL
alone is applied in place and wakes a paused sink at once. Every other key of
[server], [queue], [validation] and [log] applies at once; the keys of
`config.RESTART_ONLY` refuse the reload, naming the key. What changed is named,
key by key, in the log line and the `/-/reload` answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from functools import partial

import aiohttp
import msgspec

from relay.adoption import AdoptedShard
from relay.config import RESTART_ONLY, Config, SinkConfig, changed_entries, changed_settings, load
from relay.delivery.dispatch import SinkDispatcher
from relay.delivery.sender import Sender
from relay.delivery.transport import HttpTransport
from relay.errors import ConfigError
from relay.mapping import MappingLibrary
from relay.rejections.recent import RecentRejections
from relay.rejections.redact import config_secrets
from relay.rejections.remap import RemapResult, remap
from relay.rejections.replay import ReplayResult, replay
from relay.routes import compile_routes, validation_policy
from relay.server.budget import ByteBudget
from relay.stages.pipeline import Prepared, Route
from relay.stages.schema import Validator
from relay.store import counts as counts_file
from relay.store import disk_usage, shards
from relay.store.counts import FILE as COUNTS_FILE
from relay.store.counts import Counts, SinkCount
from relay.store.deadletters import DeadLetters
from relay.store.layout import BatchRef, SinkSnapshot
from relay.store.outbox import Outbox
from relay.store.queue import SQLITE_MEMORY, DiskQueue
from relay.store.rejected import RejectedStore, stored_items
from relay.telemetry import Metrics, setup_logging

log = logging.getLogger("relay")
COUNTS_EVERY = 2.0  # seconds between writes of counts.json (only when its figures changed)


class ReloadRecord(msgspec.Struct, frozen=True):
    """The last time the config was read, for the console: when, ok or refused, and what it said."""

    at: float  # Unix seconds
    result: str  # "started" (the first load), "ok" or "refused"
    detail: str  # what changed, or why it was refused


MAX_STORED_PER_REQUEST = 1000  # rejected records of one request kept for replay; the rest counted as dropped


class Runtime:
    """The queue, the outboxes, the dispatchers and the route table of one running relay."""

    def __init__(self, config: Config, worker: int = 0, workers: int = 1) -> None:
        """`worker` of `workers`: which queue shard this process owns (relay.store.shards)."""
        self.config = config
        self.started = time.time()
        self.last_reload = ReloadRecord(self.started, "started", f"config loaded from {config.file}")
        self.worker, self.workers = worker, workers
        self.metrics = Metrics()
        self.queue = DiskQueue(shards.shard_path(config.queue.path, worker),
                               max_size=shards.share(config.queue.max_size, workers), sync=config.queue.sync,
                               min_free_space=config.queue.min_free_space,
                               on_unreadable=config.queue.on_unreadable,
                               sqlite_memory=shards.share(SQLITE_MEMORY, workers))
        self.outboxes: dict[str, Outbox] = {}
        self.dispatchers: dict[str, SinkDispatcher] = {}
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        # Mappings compile here, before the queue is opened, so a bad one fails fast; open_queue
        # binds the routes to the real outboxes with the same library (each mapping compiled once).
        self._library = MappingLibrary(config.mappings, file=config.file)
        self._validator = Validator(validation_policy(config))
        self.routes = compile_routes(config, library=self._library, validator=self._validator)
        self.dead_letters = DeadLetters(self.queue, self.outboxes,
                                        shards.share(config.queue.dead_letter_max_size, workers))
        self.recent_rejections = RecentRejections()
        self.rejected = RejectedStore(self.queue, shards.share(config.queue.rejected_max_size, workers))
        self.body_budget = ByteBudget(config.server.max_body_memory)
        self.draining = False
        self.in_flight = 0  # ingest requests being handled
        self._idle = asyncio.Event()
        self._idle.set()
        self._snapshot: dict[str, SinkSnapshot] = {}
        self._reload_lock = asyncio.Lock()
        self.log_overrides: tuple[str | None, str | None] = (None, None)  # --log-level, --log-format
        self.metrics.add_gauges(self._gauges)
        self.metrics.declare(config.sources, config.sinks)
        self.adopted: list[AdoptedShard] = []  # shards left by a run with more workers, drained here

    def open_queue(self) -> None:
        os.makedirs(self.queue.path, exist_ok=True)
        q = self.config.queue
        for problem in disk_usage.capacity_problems(self.queue.path, self.queue.max_size, q.min_free_space,
                                                    4 * self.config.server.max_body_size):
            log.warning("%s", problem)
        self._snapshot = self.queue.open()
        for name in self.config.sinks:
            self.outboxes[name] = Outbox(name, self._snapshot.pop(name, None))
        for name, found in self._snapshot.items():
            if found.inbox or found.batches:
                log.warning("queue holds %d batches and %d inbox items for sink %r, which is not configured; "
                            "they stay on disk until it is configured again", len(found.batches),
                            len(found.inbox), name)
        self.routes = compile_routes(self.config, self.outboxes, library=self._library, validator=self._validator)

    def mapping_library(self) -> MappingLibrary:
        """The running config's mappings and the presets (each compiled once), for the console's playground."""
        if self._library.user != self.config.mappings:  # a reload changed them
            self._library = MappingLibrary(self.config.mappings, file=self.config.file)
        return self._library

    async def open_rejected(self) -> None:
        await self.rejected.load()
        self.rejected.trim()  # the bound may have shrunk since

    def keep_rejected(self, route: Route, prepared: Prepared) -> None:
        """An answered request's rejected records: into the recent ring and the store (not waited for)."""
        rejected = prepared.rejected
        if rejected:
            self.recent_rejections.capture(route.name, rejected)
            if len(rejected) > MAX_STORED_PER_REQUEST:
                # a body of a million bad records must not hold the event loop and the DB thread
                # for seconds: the first ones show what went wrong, the rest are only counted
                self.rejected.count_dropped(route.name, len(rejected) - MAX_STORED_PER_REQUEST)
                rejected = rejected[:MAX_STORED_PER_REQUEST]
            self.rejected.add(stored_items(route.name, prepared.tag, rejected))

    def route_named(self, source: str) -> Route:
        """KeyError naming the configured sources."""
        for route in self.routes.values():
            if route.name == source:
                return route
        raise KeyError(f"no source named {source!r} (sources: {', '.join(self.config.sources) or 'none'})")

    async def replay_rejected(self, source: str | None = None) -> ReplayResult:
        """Replay the stored rejected records of `source` (or of every configured source)."""
        names = [self.route_named(source).name] if source is not None else list(self.config.sources)
        total = ReplayResult()
        for name in names:
            if not self.rejected.records.get(name):
                continue
            one = await replay(self.route_named(name), self.rejected, self.queue)
            for result, n in (("accepted", one.accepted), ("filtered", one.filtered),
                              ("still_rejected", one.still_rejected)):
                if n:
                    self.metrics.rejected_replayed.labels(name, result).inc(n)
            total.replayed += one.replayed
            total.accepted += one.accepted
            total.filtered += one.filtered
            total.still_rejected += one.still_rejected
            for reason, n in one.reasons.items():
                total.reasons[reason] = total.reasons.get(reason, 0) + n
        return total

    async def remap_dead_letters(self, sink: str | None = None) -> RemapResult:
        """`dead-letter replay --remap`: letters with their records re-mapped by the current mappings."""
        routes = {route.name: route for route in self.routes.values()}
        return await remap(self.dead_letters, routes, self.rejected, sink, self.recent_rejections.capture)

    def secrets(self) -> list[bytes]:
        """Every configured credential: never to appear in an admin answer."""
        return config_secrets(self.config)

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no ingest request is in flight; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # ---- counts.json: what the queue holds, for the day the database cannot be read ------

    def counts(self) -> Counts:
        return Counts(time.time(), {
            name: SinkCount(len(outbox.inbox) + len(outbox.ready) + len(outbox.inflight), outbox.queued_entries)
            for name, outbox in list(self.outboxes.items())})

    async def keep_counts(self) -> None:
        """Write counts.json every COUNTS_EVERY seconds when the figures changed (on the DB thread)."""
        last: dict[str, SinkCount] | None = None
        while True:
            now = self.counts()
            if now.sinks != last:
                try:
                    await self.queue.call(partial(_write_counts, self.queue.path, now))  # off the event loop
                    last = now.sinks
                except OSError as exc:  # a full disk: the figures stay as they were, the queue goes on
                    log.warning("queue: could not write %s: %s", COUNTS_FILE, exc)
            await asyncio.sleep(COUNTS_EVERY)

    # ---- senders ----------------------------------------------------------------------

    def _start_sink(self, name: str, sink: SinkConfig) -> None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=sink.concurrency))
        self.sessions[name] = session
        sender = Sender(HttpTransport(session, timeout=sink.request_timeout), sink.url, sink.api_key)
        dispatcher = SinkDispatcher(name, sink, self.outboxes[name], self.queue, sender, self.metrics,
                                    on_dead_letter=self._dead_letter_added)
        self.dispatchers[name] = dispatcher
        dispatcher.start()

    async def _stop_sink(self, name: str, timeout: float) -> None:
        dispatcher = self.dispatchers.pop(name, None)
        if dispatcher is not None:
            await dispatcher.stop(timeout)
        session = self.sessions.pop(name, None)
        if session is not None:
            await session.close()

    async def _take_dead_letters(self, sink: str, letters: list[tuple[BatchRef, bytes]]) -> bool:
        """An adopted shard's dead letters, kept in this worker's store from now on."""
        outbox = self.outboxes.get(sink)
        if outbox is None:
            return False
        await self.dead_letters.take_in(outbox, letters)
        await self._dead_letter_added()
        return True

    async def _dead_letter_added(self) -> None:
        dropped = await self.dead_letters.enforce_bound()
        if dropped:
            self.metrics.dead_letters_dropped.inc(dropped)

    async def start_senders(self) -> None:
        for name, sink in self.config.sinks.items():
            self._start_sink(name, sink)
        for index in shards.adopted(self.config.queue.path, self.worker, self.workers):
            shard = AdoptedShard(index, self.config, self.workers, self.metrics, self._take_dead_letters)
            self.adopted.append(shard)
            shard.start()

    async def stop_senders(self, timeout: float) -> None:
        await asyncio.gather(*(self._stop_sink(name, timeout) for name in list(self.dispatchers)),
                             *(shard.stop(timeout) for shard in self.adopted))

    # ---- reload -----------------------------------------------------------------------

    async def reload(self, path: str | None = None) -> list[str]:
        """Apply the config file again; returns what changed. Raises ConfigError, changing nothing."""
        try:
            changes = await self._reload(path)
        except ConfigError as exc:
            self.metrics.reloads.labels("refused").inc()
            self.last_reload = ReloadRecord(time.time(), "refused", str(exc))
            raise
        self.metrics.reloads.labels("ok").inc()
        self.last_reload = ReloadRecord(time.time(), "ok", "; ".join(changes) or "no setting changed")
        self.metrics.last_reload.set_to_current_time()
        self.metrics.declare(self.config.sources, self.config.sinks)
        return changes

    async def _reload(self, path: str | None) -> list[str]:
        async with self._reload_lock:
            new = load(path or self.config.file or "")
            old = self.config
            settings = changed_settings(old, new)
            for key, _ in settings:
                if key in RESTART_ONLY:
                    raise ConfigError("changes only on restart; reload refused (restart the relay, or put "
                                      "the old value back)", key=key, file=new.file)
            if new.queue.max_size < 4 * new.server.max_body_size * self.workers:
                # "auto" resolves against the new max_size, but the running worker count stays until restart
                raise ConfigError(f"must hold at least four bodies of server.max_body_size for each of the "
                                  f"{self.workers} running workers; reload refused", key="queue.max_size",
                                  file=new.file)
            outboxes = dict(self.outboxes)
            added = [name for name in new.sinks if name not in old.sinks]
            for name in added:
                outboxes[name] = Outbox(name, await self._rescan(name))
            routes = compile_routes(new, outboxes)  # may raise: nothing has changed yet
            changes = [said for _, said in settings]
            changes += await self._apply(new, outboxes, routes, added)
            # a file edited without changing a setting (a comment) is said so, never "no changes"
            log.info("config reloaded from %s: %s", new.file, "; ".join(changes) or "no setting changed")
            return changes

    async def _rescan(self, name: str) -> SinkSnapshot | None:
        """A sink configured again may still have data on disk from before."""
        snapshot = self._snapshot.pop(name, None)
        if snapshot is not None:
            return snapshot
        return (await self.queue.snapshot()).get(name)

    async def _apply(self, new: Config, outboxes: dict[str, Outbox], routes: dict[str, Route],
                     added: list[str]) -> list[str]:
        old = self.config
        changes: list[str] = []
        self.config = new
        self.queue.max_size = shards.share(new.queue.max_size, self.workers)
        self.body_budget.capacity = new.server.max_body_memory
        self.queue.min_free_space = new.queue.min_free_space
        self.dead_letters.max_bytes = shards.share(new.queue.dead_letter_max_size, self.workers)
        self.rejected.max_bytes = shards.share(new.queue.rejected_max_size, self.workers)
        self.rejected.trim()
        self.recent_rejections.keep_only(new.sources)
        self.outboxes.clear()
        self.outboxes.update(outboxes)
        self.routes = routes
        if new.log != old.log:  # --log-level / --log-format given at start still win
            setup_logging(self.log_overrides[0] or new.log.level, self.log_overrides[1] or new.log.format)
        grace = float(new.server.shutdown_grace)
        for name in [n for n in old.sinks if n not in new.sinks]:
            await self._stop_sink(name, grace)
            self.outboxes.pop(name, None)
            changes.append(f"sink {name} removed (its queued data stays on disk)")
        for name in added:
            self._start_sink(name, new.sinks[name])
            changes.append(f"sink {name} added")
        for name, sink in new.sinks.items():
            before = old.sinks.get(name)
            if before is None or before == sink:
                continue
            only_credentials = _without_credentials(before) == _without_credentials(sink)
            dispatcher = self.dispatchers[name]
            if only_credentials:
                dispatcher.config = sink
                transport = HttpTransport(self.sessions[name], timeout=sink.request_timeout)
                dispatcher.rekey(Sender(transport, sink.url, sink.api_key))
                changes.append(f"sink {name}: new key or url")
            else:
                await self._stop_sink(name, grace)
                self._start_sink(name, sink)
                changes.append(f"sink {name} restarted with new settings")
        changes += changed_entries("sources", old.sources, new.sources)
        changes += changed_entries("mappings", old.mappings, new.mappings, verb="recompiled")
        return changes

    # ---- health and gauges ------------------------------------------------------------

    def readiness_problems(self) -> list[str]:
        problems = []
        if self.draining:
            problems.append("shutting down")
        on_disk = disk_usage.allocated_bytes(self.queue.path)  # a few stat calls
        # 90 %: new data is refused a little under max_size (room kept for delivery's writes).
        if on_disk >= self.queue.max_size * 0.9:
            problems.append(f"disk budget nearly spent: {on_disk} of {self.queue.max_size} bytes on disk")
        free = disk_usage.free_space(self.queue.path)
        if free < self.queue.min_free_space * 1.1:
            problems.append(f"disk reserve: the filesystem holding {self.queue.path} has {free} bytes free and "
                            f"queue.min_free_space keeps {self.queue.min_free_space} in reserve, so new data is "
                            "refused (503) until deliveries free space")
        return problems

    def _gauges(self) -> Iterable[tuple[str, str, dict[str, str], float]]:
        for name, outbox in list(self.outboxes.items()):
            labels = {"sink": name}
            # entries of shards adopted from a run with more workers are still queued here
            adopted = sum(s.outboxes[name].queued_entries for s in self.adopted if name in s.outboxes)
            yield ("relay_queue_entries", "Entries queued for a sink (inbox and sealed batches)", labels,
                   outbox.queued_entries + adopted)
            yield "relay_queue_bytes", "Bytes queued for a sink", labels, outbox.queued_bytes
            yield "relay_queue_batches", "Sealed batches waiting for a sink", labels, len(outbox.ready) + len(outbox.inflight)
            yield ("relay_queue_oldest_entry_age_seconds", "Age of the oldest queued entry of a sink", labels,
                   outbox.oldest_age())
            yield "relay_dead_letter_entries", "Entries in the dead-letter store", labels, self.dead_letters.entries(name)
            dispatcher = self.dispatchers.get(name)
            state = dispatcher.state if dispatcher else "running"
            yield "relay_sink_up", "1 while the sink delivers, 0 while it backs off or is paused", labels, float(state == "running")
            for one in ("running", "backing_off", "paused"):
                yield ("relay_sink_state", "1 for the sink's current state", {"sink": name, "state": one},
                       float(state == one))
        for name in sorted(set(self.config.sources) | set(self.rejected.sources())):
            labels = {"source": name}
            yield ("relay_rejected_stored_records", "Rejected records kept for replay (queue.rejected_max_size)",
                   labels, self.rejected.records.get(name, 0))
            yield ("relay_rejected_stored_bytes", "Bytes of the rejected records kept for replay", labels,
                   self.rejected.bytes_by_source.get(name, 0))
            yield ("relay_rejected_dropped_total", "Rejected records dropped from the store past "
                   "queue.rejected_max_size since start", labels, self.rejected.dropped.get(name, 0))
        yield "relay_requests_in_flight", "Ingest requests being handled now", {}, self.in_flight
        yield "relay_dead_letter_bytes", "Bytes in the dead-letter store", {}, self.dead_letters.bytes()
        yield ("relay_queue_used_bytes", "Allocated bytes of the queue directory, as du counts them (what "
               "queue.max_size bounds)", {}, disk_usage.allocated_bytes(self.queue.path))
        yield "relay_queue_max_bytes", "The disk budget (queue.max_size)", {}, self.queue.max_size
        yield "relay_queue_quarantined_items", "Queue items that failed their checksum since start", {}, self.queue.damage.quarantined
        yield ("relay_queue_items_quarantined_total", "Queue items moved aside or lost to a damaged database "
               "since start", {}, self.queue.damage.quarantined)
        yield ("relay_queue_entries_lost_total", "Entries those items held (each acknowledged, never delivered)",
               {}, self.queue.damage.entries_lost)
        yield "relay_queue_salvages_total", "Damaged queue databases salvaged since start", {}, len(self.queue.damage.salvages)


def _without_credentials(sink: SinkConfig) -> tuple[object, ...]:
    return tuple(getattr(sink, f) for f in sink.__struct_fields__ if f not in ("api_key", "url"))


def _write_counts(queue_dir: str, figures: Counts, _cache: object) -> None:
    """counts.json, written on the queue's DB thread (DiskQueue.call passes the cache)."""
    counts_file.write(queue_dir, figures)

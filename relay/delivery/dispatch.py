"""Per-sink delivery: the batcher plus `concurrency` send loops.

Each loop asks the sink's health (health.py) whether it may send, takes the
oldest sealed batch, POSTs it once, and acts on the outcome: DELIVERED
deletes it from disk and, if the sink was down, wakes every waiting loop;
RETRY and PAUSE put it back in its place and tell the health state, which
decides when the next probe goes (one at a time) or, after a Retry-After, when
all loops send again; REFUSED splits it in two until the entries at fault
stand alone, and those go to the dead-letter store.
Nothing leaves the disk except on a 2xx or into the dead-letter store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from isal import igzip

from relay.config import SinkConfig
from relay.delivery.batcher import Batcher
from relay.delivery.health import SinkHealth
from relay.delivery.retry import Outcome, classify, parse_retry_after
from relay.delivery.sender import Delivery, Sender
from relay.store import bodies, originals
from relay.store.bodies import BatchShape
from relay.store.layout import BatchRef, DeadLetter, SealedBatch, checksum
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue
from relay.telemetry import Metrics, Sampler

log = logging.getLogger("relay.dispatch")
_split_array = msgspec.json.Decoder(list[msgspec.Raw]).decode
_UNDELETED_MAX = 1000  # delivered batches remembered for a later delete when the disk refuses one


def batch_entries(batch: SealedBatch) -> list[bytes]:
    """The encoded entries of a sealed batch, one bytes value each, none holding a newline.

    A batch sealed from a client's body as it came (outbox.commit, as_received) keeps the client's
    spacing, which may hold newlines; split entries are stored one a line (dead letters, the
    halves' bodies), and JSON has a newline nowhere but as spacing (in a string it is `\n`)."""
    body = igzip.decompress(batch.body) if batch.encoding == "gzip" else batch.body
    return [bytes(raw) for raw in _split_array(body.replace(b"\n", b" "))]


class SinkDispatcher:
    def __init__(self, name: str, config: SinkConfig, outbox: Outbox, queue: DiskQueue,
                 sender: Sender, metrics: Metrics,
                 on_dead_letter: Callable[[], Awaitable[object]] | None = None) -> None:
        self.on_dead_letter = on_dead_letter
        self.name = name
        self.config = config
        self.outbox = outbox
        self.queue = queue
        self.sender = sender
        self.metrics = metrics
        self.batcher = Batcher(outbox, queue, max_entries=config.batch_max_entries,
                               timeout=config.batch_timeout, compression=config.compression,
                               level=config.compression_level)
        self.state = "running"  # running | backing_off | paused
        self._sample = Sampler(10.0)
        self.last_error: str | None = None  # while not running: why
        # The latest failure, kept after recovery so the console can say what happened last.
        self.last_failure: tuple[float, str] | None = None  # (Unix seconds, error)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # set when config changes (new key): paused loops retry now
        self.health = SinkHealth(initial=config.retry_initial_backoff, maximum=config.retry_max_backoff,
                                 probe_interval=config.probe_interval)
        self._changed = asyncio.Event()  # pulsed when the health state changes: waiting loops look again
        self._tasks: list[asyncio.Task[None]] = []
        self._undeleted: list[BatchRef] = []  # delivered batches whose delete the disk refused
        # how requests that fill whole batches are sealed as they commit (store/outbox.commit)
        self._shape = BatchShape(config.batch_max_entries, config.compression, config.compression_level)

    def start(self) -> None:
        self.outbox.shape = self._shape
        self.outbox.set_sending(self.state == "running")
        self._tasks.append(asyncio.create_task(self.batcher.run(), name=f"batcher:{self.name}"))
        for i in range(self.config.concurrency):
            self._tasks.append(asyncio.create_task(self._send_loop(), name=f"sender:{self.name}:{i}"))

    async def stop(self, timeout: float) -> None:
        """Stop after the current seal and send attempts; everything else stays on disk."""
        self._stop.set()
        if self.outbox.shape is self._shape:  # requests go to the inbox until the sink runs again
            self.outbox.shape = None
            self.outbox.set_sending(False)
        self._wake.set()
        self._notify()
        self.batcher.stopping = True
        self.outbox.wake_batcher()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=max(timeout, 0.1))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def rekey(self, sender: Sender) -> None:
        """A reload changed the key or URL: use it, and retry paused batches now."""
        self.sender = sender
        self.health.wake(time.monotonic())
        self._wake.set()
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _turn(self) -> bool | None:
        """Wait until the sink's health lets this loop send: True for a probe, False for
        a plain send, None when stopping."""
        while not self._stop.is_set():
            verdict, wait = self.health.permit(time.monotonic())
            if verdict != "wait":
                return verdict == "probe"
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
            except TimeoutError:
                pass
        return None

    async def _pause(self, seconds: float) -> bool:
        """Wait, unless stopping or woken by a config change. False when stopping."""
        self._wake.clear()
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait_for(waiter, timeout=seconds)
        except TimeoutError:
            pass
        return not self._stop.is_set()

    async def _send_loop(self) -> None:
        while not self._stop.is_set():
            probe = await self._turn()
            if probe is None:
                return
            ref = await self._next_batch()
            if ref is None:
                if probe:
                    self.health.released()
                return
            if not probe:  # the sink may have gone down while this loop waited for a batch
                verdict, _ = self.health.permit(time.monotonic())
                if verdict == "wait":
                    self.outbox.requeue(ref)
                    continue
                probe = verdict == "probe"
            try:
                await self._deliver(ref, probe)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one batch kill the loop; it stays on disk
                log.exception("sink %s: unexpected error delivering %s", self.name, ref.key)
                self.outbox.requeue(ref)
                if probe:
                    self.health.released()
                    self._notify()
                await self._pause(1.0)

    async def _next_batch(self) -> BatchRef | None:
        """The oldest sealed batch, or None when stopping."""
        next_batch = asyncio.ensure_future(self.outbox.next_batch())
        stop = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait({next_batch, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if next_batch in done:
            return next_batch.result()
        next_batch.cancel()
        try:
            ref = await next_batch
        except asyncio.CancelledError:
            return None
        self.outbox.requeue(ref)  # taken at the same moment we stopped
        return None

    async def _deliver(self, ref: BatchRef, probe: bool) -> None:
        """One attempt at one batch; a batch not delivered goes back to its place in the queue."""
        queue = self.queue
        batch = self.outbox.fresh.pop(ref.key, None)  # just sealed: the bytes on disk, in memory
        if batch is None:
            batch = await queue.load_batch(ref)
        if batch is None:  # quarantined by the queue (logged, counted there)
            self.outbox.finished(ref)
            if probe:
                self.health.released()
                self._notify()
            return
        sent_in = self.health.generation
        delivery = await self.sender.send(batch)
        self._observe(delivery, batch)
        outcome = classify(delivery.status)
        if outcome in (Outcome.DELIVERED, Outcome.REFUSED):  # upstream is up and reads our key
            if self.health.succeeded():
                self._notify()  # every waiting loop at once, oldest batch first
            self._set_state("running", None)
            if outcome is Outcome.DELIVERED:
                await self._forget(ref)
            else:
                await self._split(ref, batch, delivery)
            return
        self.outbox.requeue(ref)
        now = time.monotonic()
        if outcome is Outcome.RETRY:
            reason = str(delivery.status) if delivery.status else "connection"
            self.metrics.retries.labels(self.name, reason).inc()
            delay = self.health.failed(now, probe=probe, retry_after=parse_retry_after(delivery.retry_after),
                                      sent_in=sent_in)
            error = f"{reason}: {delivery.error or ''}".strip(": ")
        else:
            delay = self.health.paused(now, probe=probe, sent_in=sent_in)
            error = (f"upstream answered {delivery.status}: {delivery.error or ''} "
                     "- check the sink's api_key and url; data is kept")
        state = self.health.sink_state  # "running" still, when the answer was stale
        self._set_state(state, None if state == "running" else error, delay)
        self._notify()

    async def _forget(self, ref: BatchRef) -> None:
        """Delete a delivered batch. When the disk refuses (full, failing, damaged), the sink goes on
        with the next batch all the same: the delete is tried again after each later delivery, and a
        batch still on disk at a restart is sent again (a duplicate, never a loss)."""
        self.outbox.finished(ref)
        pending, self._undeleted = [*self._undeleted, ref], []
        for index, old in enumerate(pending):
            try:
                await self.queue.delete_batch(old)
            except asyncio.CancelledError:
                self._undeleted.extend(pending[index:])
                raise
            except Exception as exc:
                if old is ref:  # logged once per batch, not at every retry
                    log.error("sink %s: could not delete delivered batch %s (kept on disk; the delete is "
                              "retried after the next delivery): %s", self.name, old.key, exc)
                self._undeleted.append(old)
        del self._undeleted[:-_UNDELETED_MAX]  # bounded: older ones stay on disk until the next restart

    def _observe(self, delivery: Delivery, batch: SealedBatch) -> None:
        metrics, name = self.metrics, self.name
        metrics.batches.labels(name, str(delivery.status or 0)).inc()
        metrics.latency.labels(name).observe(delivery.seconds)
        if delivery.status is not None and 200 <= delivery.status < 300:
            rejected = len(delivery.upstream_errors)
            metrics.entries_delivered.labels(name).inc(batch.count - rejected)
            if rejected:
                metrics.upstream_rejected.labels(name).inc(rejected)
                held = self._sample(name)
                if held is not None:
                    log.warning("sink %s: upstream skipped %d of %d entries, e.g. %s%s", name, rejected,
                                batch.count, delivery.upstream_errors[0],
                                f" ({held} such batches not logged in the last 10s)" if held else "",
                                extra={"fields": {"sink": name, "rejected": rejected,
                                                  "reason": delivery.upstream_errors[0]}})

    def _set_state(self, state: str, error: str | None, delay: float = 0.0) -> None:
        if state != self.state:
            fields = {"fields": {"sink": self.name, "state": state, "delay_s": round(delay, 3), "error": error}}
            if state == "running":
                log.info("sink %s: resumed", self.name, extra=fields)
            elif state == "paused":
                log.error("sink %s: paused, retrying every %.0fs: %s", self.name, delay, error, extra=fields)
            else:
                log.warning("sink %s: backing off %.2fs: %s", self.name, delay, error, extra=fields)
        self.state = state
        self.outbox.set_sending(state == "running" and not self._stop.is_set())
        self.last_error = error
        if error is not None:
            self.last_failure = (time.time(), error)

    async def _split(self, ref: BatchRef, batch: SealedBatch, delivery: Delivery) -> None:
        """Bisect a refused batch; single refused entries become dead letters."""
        entries = await asyncio.to_thread(batch_entries, batch)
        try:  # paired with entries through every split
            kept = originals.unsealed(batch.originals, len(entries))
        except (OSError, ValueError, msgspec.DecodeError) as exc:  # outside the crc: the entries still go on
            log.error("sink %s: the original records of %s are unreadable; its entries go on without them: %s",
                      self.name, ref.key, exc)
            kept = [None] * len(entries)
        stem = ref.key.rsplit(".", 2)[0]  # b/<sink>/<id>
        reason = f"upstream answered {delivery.status}: {delivery.error or 'no detail'}"
        dead: list[tuple[str, DeadLetter]] = []
        retry: list[tuple[str, SealedBatch]] = []
        if len(entries) <= 1:
            letter = DeadLetter(len(entries), b"".join(e + b"\n" for e in entries), reason,
                                delivery.status, time.time(), originals.join(kept))
            dead.append((stem, letter))
            log.error("sink %s: upstream refused an entry; moved to the dead-letter store: %s", self.name, reason)
            self.metrics.dead_lettered.labels(self.name).inc(len(entries))
        else:
            half = len(entries) // 2
            for suffix, part, part_kept in (("L", entries[:half], kept[:half]), ("R", entries[half:], kept[half:])):
                body, encoding = bodies.from_lines(part, self.config.compression, self.config.compression_level)
                retry.append((stem + suffix, SealedBatch(len(part), body, encoding, checksum(body), batch.oldest,
                                                         originals.sealed(part_kept))))
            self.metrics.retries.labels(self.name, "split").inc()
        queue = self.queue
        new_refs, dead_refs = await queue.replace_batch(ref, dead, retry)
        self.outbox.finished(ref)
        self.outbox.dead.extend(dead_refs)
        for new_ref in reversed(new_refs):
            self.outbox.add_ready(new_ref, front=True)
        if dead_refs and self.on_dead_letter is not None:
            await self.on_dead_letter()

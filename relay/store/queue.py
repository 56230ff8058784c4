"""The durable queue: one diskcache (SQLite) database, driven by one thread.

The layout of keys and values is in queue_layout.py.

Why one thread: every diskcache call blocks, and SQLite serialises writers
anyway. Appends that arrive while a commit is running are written together in
the next transaction (group commit), so concurrent requests share one fsync.
Traps in diskcache 5.6.3 handled here: `eviction_policy='none'` (it would evict
past 1 GiB), values kept inside SQLite (`disk_min_file_size`), since the
separate files it writes for large values are never fsynced; and nothing uses
`pull()`, which deletes before the caller has the value.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue as thread_queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any, TypeVar

import diskcache
import msgspec
from isal import igzip

from relay.errors import CorruptItem, QueueError, QueueFull
from relay.store import disk_usage
from relay.store.layout import (
    BatchRef,
    Cursor,
    DeadLetter,
    InboxItem,
    InboxRef,
    SealedBatch,
    SinkSnapshot,
    batch_key,
    checksum,
    dead_key,
    decode_batch,
    decode_item,
    encode,
    inbox_key,
    scan,
)

log = logging.getLogger("relay.queue")
T = TypeVar("T")

_VALUES_IN_SQLITE = 2**40  # never spill values to unsynced side files
_COMPRESS_FROM = 4096  # bytes of entries from which inbox items are stored compressed
_GROUP_MAX = 512  # appends per transaction; bounds one commit's latency


class _Job:
    __slots__ = ("fn", "future", "is_append", "loop", "nbytes", "on_commit", "pack")

    def __init__(self, fn: Callable[[], Any], future: asyncio.Future[Any] | None,
                 loop: asyncio.AbstractEventLoop | None, nbytes: int = 0, is_append: bool = False) -> None:
        self.fn, self.future, self.loop = fn, future, loop
        self.nbytes, self.is_append = nbytes, is_append
        self.on_commit: Callable[[Any], None] | None = None
        self.pack: Callable[[], int] | None = None  # runs before the transaction; returns the bytes to write


class DiskQueue:
    """Owns the Cache and the thread that runs every call on it."""

    def __init__(self, path: str, *, max_size: int, sync: str = "full", min_free_space: int = 64 * 2**20) -> None:
        self.path = path
        self.max_size = max_size
        self.min_free_space = min_free_space
        self.sync = sync
        self.used_bytes = 0  # queued data (inbox + batches + dead letters), owned by the DB thread
        self.disk_bytes = 0  # the directory's allocated bytes at the last group commit (what max_size bounds)
        self._page_size = 4096
        self._jobs: thread_queue.SimpleQueue[_Job | None] = thread_queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._cache: diskcache.Cache | None = None
        self.quarantined = 0
        self._lock_file: IO[str] | None = None
        self.commits = 0
        self._last_full_warning = -1e9  # group-commit transactions so far (one per group, not per request)

    # ---- life cycle -------------------------------------------------------------------

    def lock(self) -> bool:
        """Take the directory's lock: one relay per queue. False if another process holds it."""
        os.makedirs(self.path, exist_ok=True)
        self._lock_file = open(os.path.join(self.path, "relay.lock"), "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            return False
        return True

    def open(self, *, lock: bool = True) -> dict[str, SinkSnapshot]:
        """Open the database and scan it; call before the event loop starts using it."""
        if lock and self._lock_file is None and not self.lock():
            raise QueueError(f"queue.path {self.path} is in use by another relay process; "
                             "each relay needs its own queue directory")
        try:
            self._cache = diskcache.Cache(
                self.path, eviction_policy="none", size_limit=2**62, cull_limit=0,
                disk_min_file_size=_VALUES_IN_SQLITE, statistics=False, tag_index=False,
                sqlite_synchronous=2 if self.sync == "full" else 1,
                sqlite_cache_size=2**13, timeout=60,
                # The WAL counts against max_size too: checkpoint it often enough, and give its
                # space back after each checkpoint.
                sqlite_journal_size_limit=disk_usage.wal_limit(self.max_size),
                sqlite_wal_autocheckpoint=max(4, disk_usage.wal_limit(self.max_size) // 4096),
            )
            self._page_size = int(self._cache._sql("PRAGMA page_size").fetchone()[0])
            snapshot = self.scan()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise QueueError(f"the queue database in {self.path} cannot be read ({exc}); move the "
                             "directory aside to start with an empty queue, and keep it to recover "
                             "its data (e.g. with sqlite3 .recover)") from None
        self.used_bytes = sum(sum(ref.nbytes for ref in found.inbox) + sum(ref.nbytes for ref in found.batches)
                              + sum(ref.nbytes for ref in found.dead) for found in snapshot.values())
        self._thread = threading.Thread(target=self._run, name="relay-queue", daemon=True)
        self._thread.start()
        return snapshot

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def scan(self) -> dict[str, SinkSnapshot]:
        """Every sink's items, from the key index alone (at start-up, or on the DB thread)."""
        assert self._cache is not None
        return scan(self._cache, self._quarantine)

    # ---- the DB thread ----------------------------------------------------------------

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            group = [job]
            while len(group) < _GROUP_MAX:
                try:
                    more = jobs.get_nowait()
                except thread_queue.Empty:
                    break
                if more is None:
                    jobs.put(None)  # finish this group, then stop
                    break
                group.append(more)
            appends = [j for j in group if j.is_append]
            if appends:
                self._commit_appends(appends)
            for other in group:
                if not other.is_append:
                    self._run_one(other)

    def _commit_appends(self, appends: list[_Job]) -> None:
        cache = self._cache
        assert cache is not None
        admitted: list[_Job] = []
        for job in appends:
            if job.pack is not None:
                job.nbytes = job.pack()
        # Measured once per group, not per request: a few stat calls and one pragma.
        on_disk = self.disk_bytes = disk_usage.allocated_bytes(self.path)
        free_pages = int(cache._sql("PRAGMA freelist_count").fetchone()[0]) * self._page_size
        pending = 0
        # Keep min_free_space on the filesystem for what frees space later: sealing and
        # deleting delivered batches also write (to SQLite's WAL) before space comes back.
        disk = self._free_space() - self.min_free_space
        for job in appends:
            if not disk_usage.fits(on_disk, free_pages, pending + job.nbytes, self.max_size):
                why = (f"the queue is full ({on_disk} of {self.max_size} bytes on disk, "
                       f"{disk_usage.reserve(self.max_size)} of them kept for delivery)")
            elif job.nbytes * 2 > disk:
                why = f"the disk holding {self.path} is nearly full"
            else:
                pending += job.nbytes
                disk -= job.nbytes * 2
                admitted.append(job)
                continue
            self._warn_full(why)
            _resolve(job, error=QueueFull(f"{why}; retry later", retry_after=5.0))
        if not admitted:
            return
        results: list[Any] = []
        try:
            with cache.transact(retry=True):
                results = [job.fn() for job in admitted]
            self.commits += 1
        except BaseException as exc:  # disk full, I/O error: nothing of this group was kept
            log.error("queue: commit of %d requests failed: %s", len(admitted), exc)
            error = QueueFull(f"the queue could not be written ({exc}); retry later", retry_after=5.0)
            for job in admitted:
                _resolve(job, error=error)
            return
        for job, result in zip(admitted, results):
            self.used_bytes += job.nbytes
            _resolve(job, result=result)
        self.disk_bytes = disk_usage.allocated_bytes(self.path)

    def _warn_full(self, why: str) -> None:
        now = time.monotonic()
        if now - self._last_full_warning >= 10.0:  # once per 10s, not once per refused request
            self._last_full_warning = now
            log.warning("queue: refusing new data (503): %s", why)

    def _free_space(self) -> int:
        try:
            stat = os.statvfs(self.path)
        except OSError:
            return 2**62
        return stat.f_bavail * stat.f_frsize

    def _run_one(self, job: _Job) -> None:
        try:
            result = job.fn()
        except BaseException as exc:
            _resolve(job, error=exc)
        else:
            _resolve(job, result=result)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the DB thread and wait for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, future, loop))
        return await future

    # ---- operations (each runs on the DB thread) ----------------------------------------

    async def append(self, writes: list[tuple[str, int, int, bytes]],
                     on_commit: Callable[[list[InboxRef]], None]) -> None:
        """Commit one request's entries: writes are (sink, seq, count, encoded lines).

        Returns once the group holding them is committed; raises QueueFull when the
        disk budget cannot hold them (then nothing of this request is kept).
        `on_commit` runs on the event loop in commit order, even if the caller was
        cancelled meanwhile, so the outboxes learn of every item that reached disk."""
        now = time.time()
        packed: list[tuple[str, int, int, bytes]] = []
        cache = self._cache
        assert cache is not None

        def pack() -> int:
            # Stored gzip-compressed (isal, level 1): about a tenth of the bytes to write and
            # fsync, and isal runs without the GIL, so this thread overlaps the event loop.
            # Small items (single-entry requests) are not worth the call.
            bodies: dict[int, bytes] = {}
            for sink, seq, count, lines in writes:
                small = len(lines) < _COMPRESS_FROM
                body = bodies.get(id(lines))
                if body is None:
                    body = bodies[id(lines)] = lines if small else igzip.compress(lines, compresslevel=1)
                item = InboxItem(count, body, checksum(body), now, None if small else "gzip")
                packed.append((sink, seq, count, encode(item)))
            return sum(len(value) for *_, value in packed)

        def write() -> list[InboxRef]:
            refs = []
            for sink, seq, count, value in packed:
                cache.set(inbox_key(sink, seq, count, len(value)), value)
                refs.append(InboxRef(seq, count, len(value), now))
            return refs

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        job = _Job(write, future, loop, is_append=True)
        job.pack = pack
        job.on_commit = on_commit
        self._jobs.put(job)
        await future

    def read_inbox(self, sink: str, refs: Iterable[InboxRef]) -> list[tuple[InboxRef, InboxItem | None]]:
        """DB thread: the items behind refs; None for a missing or corrupt one (quarantined)."""
        cache = self._cache
        assert cache is not None
        out: list[tuple[InboxRef, InboxItem | None]] = []
        for ref in refs:
            key = inbox_key(sink, ref.seq, ref.count, ref.nbytes)
            item = self._checked(key, decode_item, lambda item: item.entries)
            if item is not None and item.encoding == "gzip":
                try:
                    item.entries = igzip.decompress(item.entries)
                    item.encoding = None
                except (OSError, ValueError) as exc:  # the checksum held, so this is a bug, not the disk
                    self._quarantine(key, cache.get(key), f"{key} does not decompress: {exc}")
                    item = None
            out.append((ref, item))
        return out

    def seal(self, sink: str, batch: SealedBatch | None, cursor: Cursor, batch_id: int,
             consumed: list[InboxRef]) -> BatchRef | None:
        """DB thread: store a sealed batch, advance the cursor, drop wholly sealed items."""
        cache = self._cache
        assert cache is not None
        value = encode(batch) if batch is not None else b""
        key = batch_key(sink, batch_id, batch.count, len(value)) if batch is not None else ""
        freed = 0
        with cache.transact(retry=True):
            if batch is not None:
                cache.set(key, value)
            cache.set(f"c/{sink}", encode(cursor.sealed()))
            for ref in consumed:
                cache.delete(inbox_key(sink, ref.seq, ref.count, ref.nbytes))
                freed += ref.nbytes
        self.used_bytes += len(value) - freed
        return BatchRef(key, batch.count, len(value), batch.oldest) if batch is not None else None

    def load_batch(self, ref: BatchRef) -> SealedBatch | None:
        """DB thread: a sealed batch, or None when it is corrupt (then quarantined)."""
        batch = self._checked(ref.key, decode_batch, lambda batch: batch.body)
        if batch is None:
            self.used_bytes -= ref.nbytes
        return batch

    def _checked(self, key: str, decode: Callable[[bytes], T], payload: Callable[[T], bytes]) -> T | None:
        """DB thread: read and decode one item and verify its checksum; quarantine it if it fails."""
        assert self._cache is not None
        raw = self._cache.get(key)
        try:
            if raw is None:
                raise CorruptItem(f"{key} is missing")
            value = decode(raw)
            if checksum(payload(value)) != value.crc:  # type: ignore[attr-defined]
                raise CorruptItem(f"{key} failed its checksum")
            return value
        except (CorruptItem, msgspec.DecodeError) as exc:
            self._quarantine(key, raw, str(exc))
            return None

    def delete_batch(self, ref: BatchRef) -> None:
        """DB thread: a delivered batch leaves the disk."""
        cache = self._cache
        assert cache is not None
        if cache.delete(ref.key):
            self.used_bytes -= ref.nbytes

    def replace_batch(self, ref: BatchRef, dead: list[tuple[str, DeadLetter]],
                      retry: list[tuple[str, SealedBatch]]) -> tuple[list[BatchRef], list[BatchRef]]:
        """DB thread: swap a refused batch for its dead letters and re-split halves, atomically.

        Both lists hold (stem, value) with stem "b/<sink>/<id>"; returns the new
        batch refs and dead-letter refs."""
        cache = self._cache
        assert cache is not None
        refs: list[BatchRef] = []
        dead_refs: list[BatchRef] = []
        with cache.transact(retry=True):
            for stem, letter in dead:
                value = encode(letter)
                key = dead_key(stem, letter.count, len(value))
                cache.set(key, value)
                self.used_bytes += len(value)
                dead_refs.append(BatchRef(key, letter.count, len(value)))
            for stem, batch in retry:
                value = encode(batch)
                key = f"{stem}.{batch.count}.{len(value)}"
                cache.set(key, value)
                self.used_bytes += len(value)
                refs.append(BatchRef(key, batch.count, len(value), batch.oldest))
            if cache.delete(ref.key):
                self.used_bytes -= ref.nbytes
        return refs, dead_refs

    def _quarantine(self, key: str, raw: Any, why: str) -> None:
        cache = self._cache
        assert cache is not None
        log.error("queue: quarantined %s: %s", key, why)
        self.quarantined += 1
        with cache.transact(retry=True):
            if raw is not None:
                cache.set(f"q/{key}", raw)
            cache.delete(key)

    @property
    def cache(self) -> diskcache.Cache:
        """For modules that add their own key families (deadletter.py); DB thread only."""
        assert self._cache is not None
        return self._cache

    def get_raw(self, key: str) -> Any:
        assert self._cache is not None
        return self._cache.get(key)

    def set_raw(self, key: str, value: bytes) -> None:
        assert self._cache is not None
        self._cache.set(key, value)


def _resolve(job: _Job, *, result: Any = None, error: BaseException | None = None) -> None:
    future, loop = job.future, job.loop
    if future is None or loop is None:
        return

    def settle() -> None:
        if error is None and job.on_commit is not None:
            job.on_commit(result)
        if future.done():
            return  # the caller went away (client disconnected); the write stands
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # loop closed during shutdown


__all__ = ["BatchRef", "Cursor", "DeadLetter", "DiskQueue", "InboxItem", "InboxRef",
           "QueueError", "SealedBatch", "SinkSnapshot", "batch_key", "dead_key", "inbox_key"]

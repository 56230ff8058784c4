"""The durable queue: one diskcache (SQLite) database, driven by one thread.

The layout of keys and values is in layout.py; callers use the async methods
(`append`, `read_inbox`, `seal`, ...), never the Cache itself.

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
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import IO, Any, TypeAlias, TypeVar

import diskcache
import msgspec
from isal import igzip

from relay.errors import CorruptItem, QueueError
from relay.store import disk_usage, salvage
from relay.store import writes as writes_
from relay.store.coalesce import Coalescer
from relay.store.damage import Damage
from relay.store.group_commit import GroupCommit
from relay.store.jobs import DbThread, Job
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
from relay.store.writes import Write

log = logging.getLogger("relay.queue")
T = TypeVar("T")
# further writes an append makes in its own transaction (on the DB thread, given the Cache)
Cache: TypeAlias = diskcache.Cache  # for stores of their own keys (store/rejected.py), which import no diskcache
Also = Callable[[Cache], None]


_VALUES_IN_SQLITE = 2**40  # never spill values to unsynced side files
DEFAULT_MIN_FREE_SPACE = 64 * 2**20  # bytes left free on the filesystem (queue.min_free_space)
# SQLite's page cache (32 MiB) and mmap (64 MiB) of one relay: diskcache's defaults, which a single
# process was measured with. N workers split it, so N shards take no more memory than one queue did.
SQLITE_MEMORY = 96 * 2**20


class DiskQueue:
    """Owns the Cache and the thread that runs every call on it."""

    def __init__(self, path: str, *, max_size: int, sync: str = "full",
                 min_free_space: int = DEFAULT_MIN_FREE_SPACE, on_unreadable: str = "start_empty",
                 sqlite_memory: int = SQLITE_MEMORY) -> None:
        """`sqlite_memory`: SQLite's page cache and mmap for this database together (a worker's share)."""
        self.path = path
        self.sqlite_memory = sqlite_memory
        self.max_size = max_size
        self.min_free_space = min_free_space
        self.sync = sync
        self.used_bytes = 0  # queued data (inbox + batches + dead letters), owned by the DB thread
        self.disk_bytes = 0  # the directory's allocated bytes before the last group commit (what max_size bounds)
        self.page_size = 4096
        self._worker = DbThread(GroupCommit(self), self._recover, self._checkpoint, changes=self._changes)
        self._cache: diskcache.Cache | None = None
        self.damage = Damage(path, self.make_cache, on_unreadable)  # salvages, and what damage cost
        self._lock_file: IO[str] | None = None
        self.small = Coalescer()  # small requests waiting for this thread together: one inbox item
        self.commits = 0  # group-commit transactions so far (one per group, not per request)
        self.checkpoints = 0  # WAL checkpoints run in a quiet moment (or at the end)

    # ---- life cycle -------------------------------------------------------------------

    def lock(self) -> bool:
        """Take the directory's lock: one relay per queue. False if another process holds it."""
        os.makedirs(self.path, exist_ok=True)
        self._lock_file = open(os.path.join(self.path, "relay.lock"), "a+")  # noqa: SIM115  (held open: the flock lives as long as the queue)
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
        salvage.finish_interrupted(self.path)
        try:
            snapshot = self._open_checked()
        except sqlite3.DatabaseError as exc:
            if not salvage.is_damage(exc):
                self.close()
                raise QueueError(f"the queue database in {self.path} cannot be opened: {exc}") from None
            if self._cache is not None:
                self._cache.close()
            self._cache = self.damage.salvage(str(exc), at_start=True)
            snapshot = self._open_checked()
        assert self._cache is not None
        self._cache.close()  # this thread's connection: from now on only the DB thread's is used
        self.used_bytes = sum(sum(ref.nbytes for ref in found.inbox) + sum(ref.nbytes for ref in found.batches)
                              + sum(ref.nbytes for ref in found.dead) for found in snapshot.values())
        self._worker.start()
        return snapshot

    def make_cache(self, path: str) -> diskcache.Cache:
        """A diskcache Cache on `path` with the queue's settings (also for salvaged copies)."""
        return diskcache.Cache(
            path, eviction_policy="none", size_limit=2**62, cull_limit=0,
            disk_min_file_size=_VALUES_IN_SQLITE, statistics=False, tag_index=False,
            sqlite_synchronous=2 if self.sync == "full" else 1,
            # a third page cache (negative: KiB), two thirds mmap'd reads; both count in RSS
            sqlite_cache_size=-(self.sqlite_memory // 3 // 1024), sqlite_mmap_size=self.sqlite_memory * 2 // 3,
            timeout=60,
            # The WAL counts against max_size too: checkpoint it often enough, and give its
            # space back after each checkpoint.
            sqlite_journal_size_limit=disk_usage.wal_limit(self.max_size),
            sqlite_wal_autocheckpoint=max(4, disk_usage.wal_limit(self.max_size) // 4096),
        )

    def _open_checked(self) -> dict[str, SinkSnapshot]:
        """Open the database, run SQLite's quick check, scan the keys. DatabaseError when damaged."""
        salvage.refuse_empty(self.path)
        self._cache = self.make_cache(self.path)
        self.page_size = int(self._cache._sql("PRAGMA page_size").fetchone()[0])
        problems = salvage.integrity(self._cache._con)
        if problems:
            raise sqlite3.DatabaseError(f"database disk image is malformed: {problems[0]}")
        return self.scan()

    def _checkpoint(self) -> None:
        """DB thread, when the writer has been quiet for a moment (and at close): fold the WAL into the
        database file and truncate it to 0 bytes.

        Why TRUNCATE, not the PASSIVE checkpoints SQLite runs by itself: after a passive one the WAL
        still holds every frame it copied, and after a crash recovery replays whatever valid prefix of
        the WAL is left; if the WAL was cut (a torn write, a dying volume), that prefix holds old page
        images that override newer pages in the database file, and commits vanish uncounted. With the
        WAL empty at every quiet moment, a cut WAL can only take commits of the last moments."""
        if self._cache is None:
            return
        busy, _, _ = self._cache._sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            self.checkpoints += 1

    def _changes(self) -> int:
        """DB thread: rows its connection has changed so far (a new figure: something was written)."""
        return int(self._cache._con.total_changes) if self._cache is not None else 0

    def _recover(self, exc: BaseException) -> bool:
        """DB thread: True when the database was damaged and is now salvaged (run the job again)."""
        recovered, self._cache = self.damage.recover(exc, self._cache)
        return recovered

    def close(self) -> None:
        self._worker.stop()
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

    def live_cache(self) -> diskcache.Cache:
        """DB thread: the Cache as it is now (a salvage replaces it)."""
        assert self._cache is not None
        return self._cache

    def recover(self, exc: BaseException) -> bool:
        """DB thread: True when the database was damaged and is now salvaged (run the job again)."""
        return self._recover(exc)

    # ---- operations (each runs on the DB thread) ----------------------------------------

    async def append(self, writes: list[Write] | Callable[[], list[Write]], on_commit: Callable[[list[Any]], None],
                     also: Also | None = None, originals: bytes | None = None) -> None:
        """`append_soon`, awaited."""
        await self.append_soon(writes, on_commit, also, originals)

    def append_soon(self, writes: list[Write] | Callable[[], list[Write]], on_commit: Callable[[list[Any]], None],
                    also: Also | None = None, originals: bytes | None = None) -> asyncio.Future[None]:
        """Commit one request's entries: inbox items, and sealed batches when it filled some.

        Queued for the DB thread before it returns, so that inbox items reach the disk in the
        order their sequence numbers were taken (the sink's cursor relies on it); the future is
        done once the group holding them is committed, or fails with QueueFull when the disk
        budget cannot hold them (then nothing of this request is kept).
        `on_commit` gets, per write, its InboxRef or (BatchRef, SealedBatch); it runs on the event
        loop in commit order, even if the caller was cancelled meanwhile, so the outboxes learn
        of every item that reached disk.
        `originals`: the entries' records (store/originals.py), stored in each item beside them.
        `writes` may be a function, called on the DB thread when the group is packed (store/coalesce.py)."""
        now = time.time()
        packed: list[writes_.Packed] = []

        def pack() -> int:
            packed[:] = writes_.pack(writes() if callable(writes) else writes, originals, now)
            return sum(len(item.value) for item in packed)

        def write() -> list[Any]:
            cache = self._cache  # read at each attempt: a salvage replaces it
            assert cache is not None
            refs = writes_.store(cache, packed, now)
            if also is not None:
                also(cache)
            return refs

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        job = Job(write, future, loop, is_append=True)
        job.pack = pack
        job.on_commit = on_commit
        self._worker.put(job)
        return future

    def _read_inbox(self, sink: str, refs: Iterable[InboxRef]) -> list[tuple[InboxRef, InboxItem | None]]:
        """DB thread: the items behind refs; None for a missing or corrupt one (quarantined)."""
        cache = self._cache
        assert cache is not None
        out: list[tuple[InboxRef, InboxItem | None]] = []
        for ref in refs:
            key = inbox_key(sink, ref.seq, ref.count, ref.nbytes)
            item = self._checked(key, decode_item, lambda item: item.entries if item.originals is None
                                 else item.entries + item.originals)
            if item is not None and item.encoding == "gzip":
                try:
                    item.entries = igzip.decompress(item.entries)
                    if item.originals is not None:
                        item.originals = igzip.decompress(item.originals)
                    item.encoding = None
                except (OSError, ValueError) as exc:  # the checksum held, so this is a bug, not the disk
                    self._quarantine(key, cache.get(key), f"{key} does not decompress: {exc}")
                    item = None
            out.append((ref, item))
        return out

    def _seal(self, sink: str, batch: SealedBatch | None, cursor: Cursor, batch_id: int,
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

    def _load_batch(self, ref: BatchRef) -> SealedBatch | None:
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
                if self.damage.counted(key):  # lost to damage: counted and logged by the salvage
                    return None
                raise CorruptItem(f"{key} is missing")
            value = decode(raw)
            if checksum(payload(value)) != value.crc:  # type: ignore[attr-defined]
                raise CorruptItem(f"{key} failed its checksum")
            return value
        except (CorruptItem, msgspec.DecodeError) as exc:
            self._quarantine(key, raw, str(exc))
            return None

    def _delete_batch(self, ref: BatchRef) -> int:
        """DB thread, in a group's transaction: a delivered batch leaves the disk; the bytes it
        took off the queue's count, as a change (counted once the transaction holds)."""
        cache = self._cache
        assert cache is not None
        return -ref.nbytes if cache.delete(ref.key) else 0

    def _replace_batch(self, ref: BatchRef, dead: list[tuple[str, DeadLetter]],
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
        self.damage.quarantine(key, why)
        with cache.transact(retry=True):
            if raw is not None:
                cache.set(f"q/{key}", raw)
            cache.delete(key)

    # ---- the async API: each call runs its operation on the DB thread ---------------------

    async def snapshot(self) -> dict[str, SinkSnapshot]:
        return await self._worker.call(self.scan)

    async def read_inbox(self, sink: str, refs: list[InboxRef]) -> list[tuple[InboxRef, InboxItem | None]]:
        return await self._worker.call(lambda: self._read_inbox(sink, refs))

    async def seal(self, sink: str, batch: SealedBatch | None, cursor: Cursor, batch_id: int,
                   consumed: list[InboxRef]) -> BatchRef | None:
        return await self._worker.call(lambda: self._seal(sink, batch, cursor, batch_id, consumed))

    async def load_batch(self, ref: BatchRef) -> SealedBatch | None:
        return await self._worker.call(lambda: self._load_batch(ref))

    async def delete_batch(self, ref: BatchRef) -> None:
        await self._worker.call(lambda: self._delete_batch(ref), folds=True)

    async def replace_batch(self, ref: BatchRef, dead: list[tuple[str, DeadLetter]],
                            retry: list[tuple[str, SealedBatch]]) -> tuple[list[BatchRef], list[BatchRef]]:
        return await self._worker.call(lambda: self._replace_batch(ref, dead, retry))

    # ---- for other stores keeping their own keys in this database (store/rejected.py) -------

    async def call(self, fn: Callable[[diskcache.Cache], T]) -> T:
        """Run fn(cache) on the DB thread, after every job submitted before it."""
        def run() -> T:
            assert self._cache is not None  # read at each attempt: a salvage replaces it
            return fn(self._cache)
        return await self._worker.call(run)

    def submit(self, fn: Callable[[diskcache.Cache], None]) -> None:
        """Run fn(cache) on the DB thread without waiting; a clean close() still runs it."""
        def run() -> None:
            assert self._cache is not None
            try:
                fn(self._cache)
            except Exception as exc:
                if not self._recover(exc):
                    log.error("queue: a background write failed: %s", exc)
                    return
                fn(self._cache)
        self._worker.put(Job(run, None, None))

    def get_raw(self, key: str) -> Any:
        assert self._cache is not None
        return self._cache.get(key)

    def set_raw(self, key: str, value: bytes) -> None:
        assert self._cache is not None
        self._cache.set(key, value)

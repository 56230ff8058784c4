"""Time quick_check, DiskQueue.open and a salvage on a queue directory built by build.py."""
import os, sqlite3, sys, time
from relay.store import disk_usage, salvage
from relay.store.queue import DiskQueue

PATH = sys.argv[1]
db = os.path.join(PATH, "cache.db")
print(f"queue {disk_usage.allocated_bytes(PATH):,} bytes on disk")
for run in (1, 2):
    con = sqlite3.connect(db)
    t = time.monotonic(); ok = salvage.integrity(con); qc = time.monotonic() - t
    con.close()
    q = DiskQueue(PATH, max_size=2**40, sync="normal", min_free_space=0)
    t = time.monotonic(); snap = q.open(); op = time.monotonic() - t
    q.close()
    items = sum(len(s.inbox) for s in snap.values()); entries = sum(r.count for s in snap.values() for r in s.inbox)
    print(f"run {run}: quick_check {qc:.2f}s ({ok or 'ok'}); DiskQueue.open {op:.2f}s; {items:,} items, {entries:,} entries")
q = DiskQueue(PATH, max_size=2**40, sync="normal", min_free_space=0)
t = time.monotonic(); report, aside = salvage.rebuild(PATH, q.make_cache, "bench"); whole = time.monotonic() - t
kept = sum(f.entries for kinds in report.sinks.values() for f in kinds.values())
print(f"salvage: {kept:,} entries in {report.summary()}: read+copy {report.seconds:.1f}s, whole rebuild {whole:.1f}s, "
      f"{whole / kept * 100_000:.2f}s per 100,000 entries, {whole / (disk_usage.allocated_bytes(PATH) / 2**30):.1f}s per GiB")

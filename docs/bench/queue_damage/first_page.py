"""Time reading a queue whose first page is destroyed: the rebuild (copy + splice) and the salvage.

Run on a directory built by build.py; it overwrites page 1 of DIR/cache.db (so use a throw-away build)."""
import os, sys, time
from relay.store import disk_usage, first_page, salvage
from relay.store.queue import DiskQueue

PATH = sys.argv[1]
db = os.path.join(PATH, "cache.db")
with open(db, "r+b") as f:
    f.write(b"\xa5" * 4096)
    os.fsync(f.fileno())
q = DiskQueue(PATH, max_size=2**40, sync="normal", min_free_space=0)
work = os.path.join(PATH, "splice-bench")
os.makedirs(work, exist_ok=True)
t = time.monotonic(); tpl = first_page.template(q.make_cache); tt = time.monotonic() - t
t = time.monotonic(); first_page.splice(db, tpl, work); st = time.monotonic() - t
os.remove(os.path.join(work, "cache.db"))
os.rmdir(work)
t = time.monotonic(); report, aside = salvage.rebuild(PATH, q.make_cache, "bench"); whole = time.monotonic() - t
kept = sum(f.entries for kinds in report.sinks.values() for f in kinds.values())
gib = os.path.getsize(os.path.join(aside, "cache.db")) / 2**30
print(f"template {tt:.2f}s; check + copy + splice {st:.1f}s ({gib:.2f} GiB); whole salvage {whole:.1f}s: "
      f"{report.summary()}; {whole / max(kept, 1) * 100_000:.2f}s per 100,000 entries")

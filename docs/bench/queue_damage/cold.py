import os, sqlite3, sys, time
from relay.store import salvage
from relay.store.queue import DiskQueue
PATH = sys.argv[1]
db = os.path.join(PATH, "cache.db")
def evict():
    for name in os.listdir(PATH):
        p = os.path.join(PATH, name)
        if os.path.isfile(p):
            fd = os.open(p, os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
print(f"{os.path.getsize(db):,} bytes")
evict(); con = sqlite3.connect(db)
t = time.monotonic(); salvage.integrity(con); print(f"cold quick_check {time.monotonic() - t:.2f}s"); con.close()
t = time.monotonic(); salvage.integrity(sqlite3.connect(db)); print(f"warm quick_check {time.monotonic() - t:.2f}s")
evict(); q = DiskQueue(PATH, max_size=2**40, sync="normal", min_free_space=0)
t = time.monotonic(); q.open(); print(f"cold DiskQueue.open {time.monotonic() - t:.2f}s"); q.close()
q = DiskQueue(PATH, max_size=2**40, sync="normal", min_free_space=0)
t = time.monotonic(); q.open(); print(f"warm DiskQueue.open {time.monotonic() - t:.2f}s"); q.close()

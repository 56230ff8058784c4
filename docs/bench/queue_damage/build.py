"""Build a ~1 GiB relay queue (incompressible entries) with DiskQueue itself, sync = normal."""
import asyncio, base64, os, sys, time
from relay.store.queue import DiskQueue
from relay.store import disk_usage

PATH = sys.argv[1]
TARGET = int(float(sys.argv[2]) * 2**30) if len(sys.argv) > 2 else 2**30
PER_ITEM = 100  # entries per request, ~250 bytes each, random (does not compress)

def body() -> bytes:
    return b"".join(b'{"path":"/' + base64.b64encode(os.urandom(180)) + b'"}\n' for _ in range(PER_ITEM))

async def main() -> None:
    q = DiskQueue(PATH, max_size=2**40, sync="normal", min_free_space=0)
    q.open()
    seq = 0
    started = time.monotonic()
    while disk_usage.allocated_bytes(PATH) < TARGET:
        jobs = []
        for _ in range(64):
            jobs.append(q.append([("up", seq, PER_ITEM, body())], lambda refs: None))
            seq += 1
        await asyncio.gather(*jobs)
    q.close()
    print(f"items {seq} entries {seq * PER_ITEM} bytes {disk_usage.allocated_bytes(PATH)} "
          f"built in {time.monotonic() - started:.0f}s")

asyncio.run(main())

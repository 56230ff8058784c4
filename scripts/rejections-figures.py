"""The figures README's "Operations: rejected records" closes with: memory of the recent-rejections
ring at its bounds, disk of the rejected store at its bound, CPU per rejected record captured.

    .venv/bin/python scripts/rejections-figures.py [STORE_BOUND_MIB]

In-process and single-threaded (tracemalloc, process CPU time, du of a temp dir): figures that
do not depend on what else the machine runs, unlike wall-clock throughput.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

from relay.models import Rejection
from relay.rejections.recent import RecentRejections
from relay.store.queue import DiskQueue
from relay.store.rejected import RejectedStore, stored_items


def access_log(i: int) -> dict[str, Any]:  # a typical Fluent Bit nginx record, ~400 bytes of JSON
    return {"date": 1764063000.0 + i, "remote": "192.0.2.1", "host": "-", "user": "-", "method": "GET",
            "path": f"/products/{i}?ref=newsletter&utm_source=mail", "code": "200", "size": "5123",
            "referer": "https://www.example.com/", "agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/120.0 Safari/537.36", "request_time": "0.012"}


def rejected(n: int, start: int = 0, pad: int = 0) -> list[tuple[Rejection, Any]]:
    out = []
    for i in range(start, start + n):
        record = access_log(i)
        if pad:
            record["body"] = "x" * pad
        out.append((Rejection(i, "host", "required", "required field is missing: the record carries no virtual "
                              "host; set `host` on the source"), record))
    return out


def ring_memory(pad: int, label: str) -> None:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ring = RecentRejections()
    for k in range(20):  # far past the bounds
        ring.capture("web", rejected(100, start=100 * k, pad=pad))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    figures = ring.figures("web")
    print(f"ring, {label}: {figures.records} records, {figures.bytes} bytes counted, "
          f"{held / 2**20:.2f} MiB held (tracemalloc)")


def capture_cpu() -> None:
    ring = RecentRejections()
    batch = rejected(100)
    start = time.process_time()
    for _ in range(200):
        ring.capture("web", batch)
        stored_items("web", None, batch)
    per = (time.process_time() - start) / (200 * 100)
    print(f"capture CPU: {per * 1e6:.1f} µs per rejected record (ring + store encoding)")


async def store_disk(bound: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        queue = DiskQueue(tmp, max_size=2**34, sync="normal")
        queue.open()
        store = RejectedStore(queue, bound)
        empty = int(subprocess.run(["du", "-s", "--block-size=1", tmp], capture_output=True, text=True,
                                   check=True).stdout.split()[0])
        i = 0
        await store.settled()
        while store.dropped.get("web", 0) < 10_000:  # past the bound: the oldest are being dropped
            store.add(stored_items("web", None, rejected(1000, start=i)))
            i += 1000
            await store.settled()
        queue.close()
        used = int(subprocess.run(["du", "-s", "--block-size=1", tmp], capture_output=True, text=True,
                                  check=True).stdout.split()[0])
        print(f"store at queue.rejected_max_size = {bound / 2**20:.0f} MiB: {store.records['web']} records, "
              f"{store.bytes / 2**20:.1f} MiB of values, {store.dropped.get('web', 0)} dropped; "
              f"queue directory {(used - empty) / 2**20:.1f} MiB on disk more than empty")
        print("record size:", len(json.dumps(access_log(1))), "bytes of JSON;", os.cpu_count(), "cpus")


def main() -> None:
    ring_memory(0, "200 access-log records")
    ring_memory(16_000, "records of ~16 KiB (the byte bound binds)")
    capture_cpu()
    asyncio.run(store_disk(int(sys.argv[1]) * 2**20 if len(sys.argv) > 1 else 64 * 2**20))


if __name__ == "__main__":
    main()

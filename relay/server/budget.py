"""A byte budget for request bodies held in memory at once.

Bodies are read whole before decoding; without a bound, many large bodies
arriving together could take the memory of a small machine. A request waits
for its share (its Content-Length, or the body limit when it sends none);
one request is always let through so a single body at the limit never
deadlocks. A request that cannot get its share in time gets 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from relay.errors import Unavailable


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, nbytes: int, timeout: float) -> AsyncIterator[None]:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.used == 0 or self.used + nbytes <= self.capacity),
                    timeout)
            except TimeoutError:
                raise Unavailable(f"too many large bodies in flight ({self.used} bytes); retry later",
                                  retry_after=2.0) from None
            self.used += nbytes
        try:
            yield
        finally:
            async with self._changed:
                self.used -= nbytes
                self._changed.notify_all()

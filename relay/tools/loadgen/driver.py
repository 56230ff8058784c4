"""The load generator's client: keep-alive connections that write pre-built requests, held to a rate or flat out.

A request is bytes prepared once (request line, headers and body) and written by a raw
asyncio protocol, so the generator costs a few microseconds per request, far less than
the relay spends on it, and is never what the bench measures.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from typing import Any

import msgspec

from relay.tools.bench.workloads import Workload

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


class _Answer(msgspec.Struct):
    accepted: int = 0
    rejected: int = 0


_decode_answer = msgspec.json.Decoder(_Answer).decode


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time; Content-Length answers only."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buffer[:end])
        status = int(head[9:12])
        found = CONTENT_LENGTH.search(head)
        length = int(found.group(1)) if found else 0
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        self.waiter.set_result((status, body))

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


class Driver:
    """`concurrency` clients, each sending the next body as soon as its last one is answered,
    optionally held to `rate` entries/s overall; stops after `duration` seconds."""

    def __init__(self, load: Workload, requests: list[bytes], sizes: list[int], *, host: str, port: int,
                 concurrency: int, duration: float, rate: float | None) -> None:
        self.load, self.requests, self.sizes = load, requests, sizes
        self.host, self.port = host, port
        self.concurrency, self.duration, self.rate = concurrency, duration, rate
        self.next_body = 0
        self.acks = array("I", bytes(4 * len(requests)))  # 2xx answers per body
        self.latencies = array("d")  # seconds, one per 2xx answer
        self.status: dict[str, int] = {}
        self.entries_acked = self.rejected = self.errors = self.bytes_sent = 0
        self.started = self.stopped = 0.0
        self._slot = 0.0  # when the next request may start, with a rate cap

    async def run(self, on_tick: Any) -> None:
        loop = asyncio.get_running_loop()
        self.started = time.perf_counter()
        self._slot = self.started
        deadline = self.started + self.duration
        ticker = loop.create_task(self._ticks(on_tick))
        await asyncio.gather(*(self._client(deadline) for _ in range(self.concurrency)))
        self.stopped = time.perf_counter()
        ticker.cancel()

    async def _ticks(self, on_tick: Any) -> None:
        while True:
            await asyncio.sleep(1.0)
            on_tick(self)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        return conn

    async def _client(self, deadline: float) -> None:
        conn: _Connection | None = None
        per, pool = self.load.per_body, len(self.requests)
        while True:
            now = time.perf_counter()
            if self.rate:
                slot = self._slot = max(self._slot, now - 1.0) + per / self.rate
                if slot > now:
                    await asyncio.sleep(slot - now)
                    now = time.perf_counter()
            if now >= deadline:
                break
            index = self.next_body % pool
            self.next_body += 1
            try:
                if conn is None or conn.closed:
                    conn = await self._connect()
                sent = time.perf_counter()
                status, answer = await conn.exchange(self.requests[index])
            except (OSError, ConnectionError, ValueError):
                self.errors += 1
                self.status["0"] = self.status.get("0", 0) + 1
                if conn is not None and conn.transport is not None:
                    conn.transport.abort()
                conn = None
                await asyncio.sleep(0.01)
                continue
            self.status[str(status)] = self.status.get(str(status), 0) + 1
            if not 200 <= status < 300:  # a peer may acknowledge with 201 or 204 (Fluent Bit's in_http: 201)
                self.errors += 1
                continue
            self.latencies.append(time.perf_counter() - sent)
            self.acks[index] += 1
            self.bytes_sent += self.sizes[index]
            parsed = _parse_answer(answer)
            self.entries_acked += per - parsed.rejected
            self.rejected += parsed.rejected
        if conn is not None and conn.transport is not None:
            conn.transport.close()


def _parse_answer(answer: bytes) -> _Answer:
    try:
        return _decode_answer(answer)
    except msgspec.DecodeError:
        return _Answer()


def percentiles(values: array[int] | array[float], points: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[float | None]:
    if not values:
        return [None for _ in points]
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(p * len(ordered)))] for p in points]

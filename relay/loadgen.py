"""The processes `relay bench` runs beside the relay: a load generator and two stand-in servers.

    python -m relay.loadgen drive ...   send pre-built bodies to a URL; progress and result as JSON
    python -m relay.loadgen sink ...    a lean upstream: counts entries and their ids, no validation
    python -m relay.loadgen echo ...    a trivial ingest target answering 200 to anything (to show
                                        that the load generator is never the bottleneck)

Every body is built before the timed window: the workload's records with a unique id in
`bytes_sent` (the one field every workload carries and the relay passes through as an
integer), so that what reaches upstream can be matched entry by entry to what was
acknowledged. A request is bytes prepared once (request line, headers and body) and
written on a keep-alive connection by a raw asyncio protocol: the generator costs a few
microseconds per request, far less than the relay spends on it.

`drive` prints JSON lines on stdout: {"event": "ready"} once the bodies are built, then
waits for a line on stdin to start, then one {"event": "tick"} a second and a final
{"event": "done"}; the full result (latencies, acknowledgements per body) goes to --result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import uvloop
from isal import igzip, isal_zlib

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "fluent-bit"
FIXTURE_RECORDS = "nginx-combined.json/records.jsonl"
BENCH_HOST = "www.example.com"
WORKLOADS = ("fluentbit", "passthrough", "single")
GZIP_LEVEL = 1  # bodies are built before the run; the level only changes bytes in, not decode cost
_ID = re.compile(rb'"bytes_sent":(\d+)')
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


def fixtures_dir() -> Path:
    return Path(os.environ.get("RELAY_FIXTURES", FIXTURES.parent)) / "fluent-bit"


# ---------------------------------------------------------------- workloads


class Workload(msgspec.Struct, frozen=True):
    name: str
    path: str  # where the relay takes it
    per_body: int  # entries per request
    gzip: bool


def workload(name: str, records: int = 1000) -> Workload:
    if name == "fluentbit":
        return Workload(name, "/ingest/fluentbit", records, True)
    if name == "passthrough":
        return Workload(name, "/v1/logs/custom", records, True)
    if name == "single":
        return Workload(name, "/v1/logs/custom", 1, False)
    raise ValueError(f"unknown workload {name!r}; one of {', '.join(WORKLOADS)}")


def load_fixture_records() -> list[dict[str, Any]]:
    """The 200 Fluent Bit nginx-parser records of the captured fixture, in body order."""
    text = (fixtures_dir() / FIXTURE_RECORDS).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _upstream_form(record: dict[str, Any]) -> dict[str, Any]:
    """A Fluent Bit nginx record as an app would post it straight to the upstream API."""
    path, _, query = record["path"].partition("?")
    entry: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["date"])),
        "method": record["method"], "host": BENCH_HOST, "path": path,
        "status_code": int(record["code"]), "ip": record["remote"], "user_agent": record["agent"],
    }
    if query:
        entry["query_params"] = dict(part.partition("=")[::2] for part in query.split("&"))
    if record["referer"] != "-":
        entry["referer"] = record["referer"]
    entry["duration_ms"] = 12.5
    entry["bytes_sent"] = 0  # the id goes here
    return entry


def _templates(name: str) -> list[tuple[bytes, bytes]]:
    """Per fixture record: the encoded JSON object split around the id's digits."""
    encode = msgspec.json.encode
    out = []
    for record in load_fixture_records():
        if name == "fluentbit":
            value = encode({**record, "size": "\x00"})  # Fluent Bit's parser keeps numbers as strings
            marker = b'"\\u0000"'
            head, _, tail = value.partition(marker)
            out.append((head + b'"', b'"' + tail))
        else:
            value = encode(_upstream_form(record))
            head, _, tail = value.partition(b'"bytes_sent":0')
            out.append((head + b'"bytes_sent":', tail))
    return out


def build_bodies(load: Workload, count: int) -> Iterator[bytes]:
    """`count` bodies; body b holds the ids b*per_body .. (b+1)*per_body-1."""
    templates = _templates(load.name)
    n = len(templates)
    per = load.per_body
    for b in range(count):
        first = b * per
        parts = [templates[(first + i) % n][0] + str(first + i).encode() + templates[(first + i) % n][1]
                 for i in range(per)]
        raw = b"[" + b",".join(parts) + b"]"
        yield igzip.compress(raw, compresslevel=GZIP_LEVEL) if load.gzip else raw


def request_bytes(load: Workload, host: str, body: bytes, token: str | None = None) -> bytes:
    head = [f"POST {load.path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "User-Agent: relay-bench"]
    if load.gzip:
        head.append("Content-Encoding: gzip")
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------- the HTTP client


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
        found = _CONTENT_LENGTH.search(head)
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
        self.acks = array("I", bytes(4 * len(requests)))  # 200 answers per body
        self.latencies = array("d")  # seconds, one per 200 answer
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
            if status != 200:
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


def percentiles(values: array, points: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[float | None]:
    if not values:
        return [None for _ in points]
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(p * len(ordered)))] for p in points]


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def drive(args: argparse.Namespace) -> int:
    load = workload(args.workload, args.records)
    host, _, port = args.target.rpartition(":")
    started = time.perf_counter()
    bodies = list(build_bodies(load, args.pool))
    requests = [request_bytes(load, f"{host}:{port}", body, args.token) for body in bodies]
    sizes = [len(body) for body in bodies]
    del bodies
    _emit({"event": "ready", "bodies": len(requests), "build_seconds": round(time.perf_counter() - started, 2),
           "body_bytes_mean": sum(sizes) // max(len(sizes), 1)})
    if not args.no_wait:
        sys.stdin.readline()
    driver = Driver(load, requests, sizes, host=host, port=int(port), concurrency=args.concurrency,
                    duration=args.duration, rate=args.rate)
    cpu = _cpu_seconds()

    def tick(d: Driver) -> None:
        _emit({"event": "tick", "t": round(time.perf_counter() - d.started, 3), "requests": len(d.latencies),
               "entries_acked": d.entries_acked, "errors": d.errors,
               "p99_ms": _ms(percentiles(d.latencies[-5000:], (0.99,))[0])})

    uvloop.run(driver.run(tick))
    elapsed = driver.stopped - driver.started
    p50, p95, p99 = percentiles(driver.latencies)
    result = {
        "workload": load.name, "per_body": load.per_body, "pool": len(requests),
        "seconds": elapsed, "requests_acked": len(driver.latencies), "entries_acked": driver.entries_acked,
        "rejected": driver.rejected, "errors": driver.errors, "status": driver.status,
        "bytes_sent": driver.bytes_sent, "latency_ms": {"p50": _ms(p50), "p95": _ms(p95), "p99": _ms(p99)},
        "cpu_seconds": _cpu_seconds() - cpu, "acks": list(driver.acks),
    }
    Path(args.result).write_text(json.dumps(result))
    _emit({"event": "done", "seconds": elapsed, "entries_acked": driver.entries_acked, "errors": driver.errors})
    return 0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- stand-in servers


class _SinkStats(msgspec.Struct):
    requests: int = 0
    entries_accepted: int = 0
    bytes_received: int = 0
    by_status: dict[str, int] = {}


async def _serve_sink(args: argparse.Namespace) -> None:
    """A lean upstream: key check, gunzip, count entries, append their ids to a file; no validation."""
    from aiohttp import web

    stats = _SinkStats()
    ids_file = open(args.ids, "ab") if args.ids else None  # noqa: SIM115 - open for the server's life
    split = msgspec.json.Decoder(list[msgspec.Raw]).decode
    encode = msgspec.json.encode

    async def logs(request: web.Request) -> web.Response:
        body = await request.read()
        stats.requests += 1
        stats.bytes_received += len(body)
        if args.api_key and request.headers.get("x-api-key") != args.api_key:
            stats.by_status["401"] = stats.by_status.get("401", 0) + 1
            return web.Response(status=401, body=b'{"detail":"Invalid API key"}', content_type="application/json")
        if "gzip" in request.headers.get("Content-Encoding", ""):
            body = isal_zlib.decompress(body, wbits=31)
        count = len(split(body))
        if ids_file is not None:
            ids_file.write(array("Q", map(int, _ID.findall(body))).tobytes())
        stats.entries_accepted += count
        stats.by_status["200"] = stats.by_status.get("200", 0) + 1
        return web.Response(body=encode({"status": "accepted", "message": f"Processing {count} log entries",
                                         "first_visit_id": "00000000-0000-0000-0000-000000000000",
                                         "errors": []}), content_type="application/json")

    async def stats_view(request: web.Request) -> web.Response:
        if ids_file is not None:
            ids_file.flush()
        return web.Response(body=encode(stats), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/logs/custom", logs)
    app.router.add_get("/_mock/stats", stats_view)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    port = runner.addresses[0][1]
    print(f"bench sink listening on http://{args.host}:{port}/v1/logs/custom", flush=True)
    await _until_signalled()
    if ids_file is not None:
        ids_file.close()
    await runner.cleanup()


class _Echo(asyncio.Protocol):
    """Answers every request with the same 200, reading only as far as Content-Length says."""

    ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n"
              b'{"status":"accepted"}')

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            found = _CONTENT_LENGTH.search(bytes(self.buffer[:end]))
            length = int(found.group(1)) if found else 0
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[:end + 4 + length]
            self.transport.write(self.ANSWER)


async def _serve_echo(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, args.host, args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"bench echo listening on http://{args.host}:{port}/", flush=True)
    await _until_signalled()
    server.close()


async def _until_signalled() -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay.loadgen", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("drive", help="send pre-built bodies")
    d.add_argument("--workload", choices=WORKLOADS, required=True)
    d.add_argument("--records", type=int, default=1000, help="entries per body (bulk workloads)")
    d.add_argument("--target", required=True, help="HOST:PORT")
    d.add_argument("--pool", type=int, required=True, help="distinct bodies to build (reused in turn)")
    d.add_argument("--concurrency", type=int, default=8)
    d.add_argument("--duration", type=float, default=10.0)
    d.add_argument("--rate", type=float, help="cap, entries/s")
    d.add_argument("--token")
    d.add_argument("--result", required=True, help="JSON file for the full result")
    d.add_argument("--no-wait", action="store_true", help="start at once, not on a line on stdin")
    for name in ("sink", "echo"):
        s = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=0)
        if name == "sink":
            s.add_argument("--api-key")
            s.add_argument("--ids", help="append each entry's id (bytes_sent) here, 8 bytes each")
    args = parser.parse_args(argv)
    if args.command == "drive":
        return drive(args)
    uvloop.run(_serve_sink(args) if args.command == "sink" else _serve_echo(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

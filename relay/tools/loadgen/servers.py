"""The stand-in servers the load generator can run: a lean counting upstream (`sink`) and a trivial ingest target (`echo`).

The sink shows the relay without the mock upstream's validation CPU; the echo shows
that the load generator is never the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import msgspec
from isal import isal_zlib

from relay.tools.bench.records import frame
from relay.tools.loadgen.driver import CONTENT_LENGTH


class _SinkStats(msgspec.Struct):
    requests: int = 0
    entries_accepted: int = 0
    bytes_received: int = 0
    by_status: dict[str, int] = {}
    last_accepted_at: float = 0.0  # time.monotonic() of the last accepted body (as mock_upstream's)


async def serve_sink(args: argparse.Namespace) -> None:
    """A lean upstream: key check, gunzip, count entries, append each body as received to a file.

    The ids are read from that file after the run (`records.spooled_ids`): reading them here
    took ~2 µs an entry, as much CPU as the gunzip and the count together, taken from the
    relay that shares the machine; a real upstream's work is not on the relay's cores."""
    from aiohttp import web

    stats = _SinkStats()
    spool = open(args.bodies, "ab") if args.bodies else None  # noqa: SIM115 - open for the server's life
    split = msgspec.json.Decoder(list[msgspec.Raw]).decode
    encode = msgspec.json.encode

    async def logs(request: web.Request) -> web.Response:
        body = await request.read()
        stats.requests += 1
        stats.bytes_received += len(body)
        if args.api_key and request.headers.get("x-api-key") != args.api_key:
            stats.by_status["401"] = stats.by_status.get("401", 0) + 1
            return web.Response(status=401, body=b'{"detail":"Invalid API key"}', content_type="application/json")
        received, gzipped = body, "gzip" in request.headers.get("Content-Encoding", "")
        if gzipped:
            body = isal_zlib.decompress(body, wbits=31)
        count = len(split(body))
        if spool is not None:
            spool.write(frame(received, count, gzipped=gzipped))
        stats.entries_accepted += count
        stats.last_accepted_at = time.monotonic()
        stats.by_status["200"] = stats.by_status.get("200", 0) + 1
        return web.Response(body=encode({"status": "accepted", "message": f"Processing {count} log entries",
                                         "first_visit_id": "00000000-0000-0000-0000-000000000000",
                                         "errors": []}), content_type="application/json")

    async def stats_view(request: web.Request) -> web.Response:
        if spool is not None:
            spool.flush()
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
    if spool is not None:
        spool.close()
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
            found = CONTENT_LENGTH.search(bytes(self.buffer[:end]))
            length = int(found.group(1)) if found else 0
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[:end + 4 + length]
            self.transport.write(self.ANSWER)


async def serve_echo(args: argparse.Namespace) -> None:
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

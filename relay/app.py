"""The composition root: builds every stage from the config, runs them, stops them.

Start-up: open the queue (which rebuilds each sink's state from disk), compile
the mappings, start one dispatcher per sink, then listen. Shutdown (SIGTERM or
SIGINT): answer 503 to new requests, let requests in flight finish, stop the
senders after their current attempt, close the queue, exit 0 within
`server.shutdown_grace`. What was not delivered stays on disk for the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime

import aiohttp
import uvloop
from aiohttp import web

from .config import DEFAULT_CONFIG_PATH, Config, load
from .dispatch import SinkDispatcher
from .errors import ConfigError
from .ingest import build_app
from .mapping import MappingLibrary
from .outbox import Outbox
from .pipeline import Route
from .queue import DiskQueue
from .schema import ValidationPolicy, Validator
from .sender import Sender
from .telemetry import Metrics, setup_logging

log = logging.getLogger("relay")
MOCK_API_KEY = "local-mock-key"


def validation_policy(config: Config) -> ValidationPolicy:
    v = config.validation
    now = None
    if v.now:
        try:
            now = datetime.fromisoformat(v.now).timestamp()
        except ValueError:
            raise ConfigError(f"expected an ISO 8601 time, got {v.now!r}", key="validation.now",
                              file=config.file) from None
    return ValidationPolicy(on_invalid=v.on_invalid, max_age=float(v.max_age),
                            max_future=float(v.max_future), now=now)


def build_routes(config: Config, library: MappingLibrary, validator: Validator,
                 outboxes: dict[str, Outbox]) -> dict[str, Route]:
    """Path -> Route for every source; compiles each mapping (ConfigError names the source)."""
    routes: dict[str, Route] = {}
    for name, source in config.sources.items():
        try:
            mapper = library.get(source.mapping)
        except ConfigError as exc:
            if exc.key and exc.key.startswith("mappings."):
                raise
            raise ConfigError(exc.message, key=f"sources.{name}.mapping", file=config.file) from None
        route = Route(name, source, mapper, validator,
                      [outboxes[sink] for sink in config.source_sinks(name) if sink in outboxes],
                      [token.encode() for token in source.tokens])
        for path in filter(None, [f"/ingest/{name}", source.path]):
            routes[path] = route
    return routes


class Runtime:
    """Everything a running relay holds; the ingest routes read it through the app."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.queue = DiskQueue(config.queue.path, max_size=config.queue.max_size, sync=config.queue.sync)
        self.library = MappingLibrary(config.mappings, file=config.file)
        self.validator = Validator(validation_policy(config))
        self.outboxes: dict[str, Outbox] = {}
        self.dispatchers: dict[str, SinkDispatcher] = {}
        self.routes = build_routes(config, self.library, self.validator, {s: Outbox(s) for s in config.sinks})
        self.draining = False
        self.sessions: list[aiohttp.ClientSession] = []
        self.metrics.add_gauges(self._gauges)

    def open_queue(self) -> None:
        os.makedirs(self.config.queue.path, exist_ok=True)
        snapshot = self.queue.open()
        for name in self.config.sinks:
            self.outboxes[name] = Outbox(name, snapshot.get(name))
        for name, found in snapshot.items():
            if name not in self.config.sinks and (found.inbox or found.batches):
                log.warning("queue holds %d batches and %d inbox items for sink %r, which is not configured; "
                            "they stay on disk until it is configured again", len(found.batches),
                            len(found.inbox), name)
        self.routes = build_routes(self.config, self.library, self.validator, self.outboxes)

    async def start_senders(self) -> None:
        for name, sink in self.config.sinks.items():
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=sink.concurrency))
            self.sessions.append(session)
            sender = Sender(session, sink.url, sink.api_key, timeout=sink.request_timeout)
            dispatcher = SinkDispatcher(name, sink, self.outboxes[name], self.queue, sender, self.metrics)
            self.dispatchers[name] = dispatcher
            dispatcher.start()

    async def stop_senders(self, timeout: float) -> None:
        await asyncio.gather(*(d.stop(timeout) for d in self.dispatchers.values()))
        for session in self.sessions:
            await session.close()

    def readiness_problems(self) -> list[str]:
        problems = []
        if self.draining:
            problems.append("shutting down")
        if self.queue.used_bytes >= self.queue.max_size * 0.95:
            problems.append(f"disk budget nearly spent: {self.queue.used_bytes} of {self.queue.max_size} bytes queued")
        return problems

    def _gauges(self) -> Iterable[tuple[str, str, dict[str, str], float]]:
        for name, outbox in self.outboxes.items():
            labels = {"sink": name}
            yield "relay_queue_entries", "Entries queued for a sink (inbox and sealed batches)", labels, outbox.queued_entries
            yield "relay_queue_bytes", "Bytes queued for a sink", labels, outbox.queued_bytes
            yield "relay_queue_batches", "Sealed batches waiting for a sink", labels, len(outbox.ready) + len(outbox.inflight)
            dispatcher = self.dispatchers.get(name)
            state = dispatcher.state if dispatcher else "running"
            yield "relay_sink_up", "1 while the sink delivers, 0 while it backs off or is paused", labels, float(state == "running")
        yield "relay_queue_used_bytes", "Bytes of queued data, all sinks", {}, self.queue.used_bytes
        yield "relay_queue_max_bytes", "The disk budget (queue.max_size)", {}, self.queue.max_size


def _describe_start(runtime: Runtime) -> None:
    config = runtime.config
    scheme = "https" if config.server.tls_cert else "http"
    log.info("relay listening on %s://%s", scheme, config.server.address)
    for path, route in sorted(runtime.routes.items()):
        sinks = ", ".join(outbox.name for outbox in route.outboxes)
        log.info("  POST %s  source %s: mapping %s -> %s%s", path, route.name, route.config.mapping, sinks,
                 "" if route.tokens else " (no token required)")
    for name, outbox in runtime.outboxes.items():
        log.info("  sink %s -> %s (%d entries queued on disk)", name, config.sinks[name].url, outbox.queued_entries)


async def serve(config: Config) -> int:
    runtime = Runtime(config)
    runtime.open_queue()
    server = config.server
    app = build_app(runtime)
    # auto_decompress=False: decode.py undoes Content-Encoding itself, with its own bomb limits.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, auto_decompress=False,
                           shutdown_timeout=max(server.shutdown_grace * 0.5, 0.1))
    await runner.setup()
    ssl_context = None
    if server.tls_cert and server.tls_key:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(server.tls_cert, server.tls_key)
    host, port = server.host_port
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024, reuse_address=True)
    await runtime.start_senders()
    await site.start()
    _describe_start(runtime)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    started = time.monotonic()
    log.info("stopping: no new requests; finishing those in flight (grace %.0fs)", server.shutdown_grace)
    runtime.draining = True
    await runner.cleanup()
    remaining = server.shutdown_grace - (time.monotonic() - started)
    await runtime.stop_senders(max(remaining - 0.5, 0.1))
    runtime.queue.close()
    log.info("stopped; %d entries stay queued on disk for the next start",
             sum(o.queued_entries for o in runtime.outboxes.values()))
    return 0


def _start_local_mock() -> subprocess.Popen[bytes]:
    """`make run` without PROFOUND_API_KEY: deliver to a local mock upstream instead."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mock = subprocess.Popen([sys.executable, "-m", "relay", "mock-upstream", "--port", str(port),
                             "--api-key", MOCK_API_KEY])
    url = f"http://127.0.0.1:{port}/v1/logs/custom"
    os.environ["PROFOUND_URL"] = url
    os.environ["PROFOUND_API_KEY"] = MOCK_API_KEY
    print(f"relay: PROFOUND_API_KEY is not set, so entries go to a local mock upstream at {url}\n"
          "relay: to deliver to the real API: export PROFOUND_API_KEY=<your key> and run `make run` again",
          file=sys.stderr, flush=True)
    return mock


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="config file (TOML or YAML)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides [log] level")
    parser.add_argument("--log-format", choices=["text", "json"], help="overrides [log] format")
    parser.add_argument("--with-mock-upstream", action="store_true",
                        help="when PROFOUND_API_KEY is unset, start `relay mock-upstream` and deliver to it")


def run(args: argparse.Namespace) -> int:
    mock = _start_local_mock() if args.with_mock_upstream and not os.environ.get("PROFOUND_API_KEY") else None
    try:
        try:
            config = load(args.config)
        except ConfigError as exc:
            print(f"relay: config error: {exc}", file=sys.stderr)
            return 2
        setup_logging(args.log_level or config.log.level, args.log_format or config.log.format)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(config))
    finally:
        if mock is not None:
            mock.terminate()
            mock.wait(timeout=10)

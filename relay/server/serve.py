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

import uvloop
from aiohttp import web

from relay.config import DEFAULT_CONFIG_PATH, Config, load
from relay.errors import ConfigError, QueueError
from relay.runtime import Runtime
from relay.server.app import build_app, runner_options
from relay.server.keys import SHUTDOWN
from relay.telemetry import setup_logging

log = logging.getLogger("relay")
MOCK_API_KEY = "local-mock-key"


def _describe_start(runtime: Runtime) -> None:
    config = runtime.config
    scheme = "https" if config.server.tls_cert else "http"
    log.info("relay listening on %s://%s", scheme, config.server.address)
    for path, route in sorted(runtime.routes.items()):
        sinks = ", ".join(outbox.name for outbox in route.outboxes)
        open_to = "" if route.tokens else " (no token: any client)" if route.config.allow_anonymous else \
            " (no token: loopback clients only)"
        served = f"{path} ({route.protocol} paths under it" + (", and at the root" if route.protocol != "http" else "") \
            + ")" if route.protocol != "http" else path
        log.info("  POST %s  source %s: mapping %s -> %s%s", served, route.name, route.config.mapping, sinks, open_to)
    for name, outbox in runtime.outboxes.items():
        log.info("  sink %s -> %s (%d entries queued on disk)", name, config.sinks[name].url, outbox.queued_entries)
    for name, route in sorted({route.name: route for route in runtime.routes.values()}.items()):
        host_warning = route.mapper.host_warning(name, route.config.host)
        if host_warning:
            log.warning("%s", host_warning)
        if not route.tokens and route.config.allow_anonymous:
            log.warning("source %s accepts writes from any client that reaches %s, without a token "
                        "(sources.%s.allow_anonymous = true)", name, config.server.address, name)


async def reload(runtime: Runtime) -> None:
    try:
        await runtime.reload()
    except ConfigError as exc:
        log.error("reload refused, the running config stays: %s", exc)


async def serve(config: Config, log_overrides: tuple[str | None, str | None] = (None, None)) -> int:
    try:
        runtime = Runtime(config)
        runtime.log_overrides = log_overrides
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    server = config.server
    app = build_app(runtime)
    runner = web.AppRunner(app, **runner_options(server))
    try:
        await runner.setup()  # runs the app's start-up steps: opens the queue, starts the senders
    except (ConfigError, QueueError) as exc:
        log.error("%s", exc)
        return 2
    ssl_context = None
    if server.tls_cert and server.tls_key:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(server.tls_cert, server.tls_key)
    host, port = server.host_port
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024, reuse_address=True)
    await site.start()
    _describe_start(runtime)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = asyncio.create_task(reload(runtime))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    server = runtime.config.server  # shutdown_grace as the last reload left it
    app[SHUTDOWN].grace = float(server.shutdown_grace)
    app[SHUTDOWN].begin()
    log.info("stopping: no new requests; finishing those in flight (grace %.0fs)", server.shutdown_grace)
    runtime.draining = True  # new requests get 503 while those in flight finish
    if not await runtime.wait_idle(server.shutdown_grace * 0.5):
        log.warning("stopping: %d requests still in flight after %.0fs; closing", runtime.in_flight,
                    server.shutdown_grace * 0.5)
    await runner.cleanup()  # closes the socket, then the app's clean-up steps stop the senders and the queue
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
    # only the mock gets an example host: the real API must never receive an invented one
    os.environ.setdefault("RELAY_DEFAULT_HOST", "www.example.com")
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
    # The queue thread needs the GIL around every SQLite call; with the default 5 ms switch
    # interval it waits behind the event loop's decoding and mapping. Measured with relay
    # bench: 2 ms gives the best of both workloads (0.5 ms helped bulk bodies but cost the
    # one-entry requests a fifth of their rate).
    sys.setswitchinterval(0.002)
    mock = _start_local_mock() if args.with_mock_upstream and not os.environ.get("PROFOUND_API_KEY") else None
    try:
        try:
            config = load(args.config)
        except ConfigError as exc:
            print(f"relay: config error: {exc}", file=sys.stderr)
            return 2
        setup_logging(args.log_level or config.log.level, args.log_format or config.log.format)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(config, (args.log_level, args.log_format)))
    finally:
        if mock is not None:
            mock.terminate()
            mock.wait(timeout=10)

"""One relay process: builds every stage from the config, runs them, stops them.

`relay serve` runs this in its own process with one worker, and in each worker
process with several (relay.server.supervisor). Start-up: open the queue (which
rebuilds each sink's state from disk), compile the mappings, start one
dispatcher per sink, then listen. Shutdown (SIGTERM or SIGINT): answer 503 to
new requests, let requests in flight finish, stop the senders after their
current attempt, close the queue, exit 0 within `server.shutdown_grace`. What
was not delivered stays on disk for the next start.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl

from aiohttp import web

from relay.config import Config
from relay.errors import ConfigError, QueueError
from relay.runtime import Runtime
from relay.server.app import build_app, runner_options
from relay.server.keys import SHUTDOWN

log = logging.getLogger("relay")


def _describe_start(runtime: Runtime) -> None:
    config = runtime.config
    scheme = "https" if config.server.tls_cert else "http"
    if runtime.workers > 1:
        log.info("relay worker %d of %d listening on %s://%s (queue shard %s)", runtime.worker, runtime.workers,
                 scheme, config.server.address, runtime.queue.path)
        if runtime.worker:
            return  # the sources and sinks are said once, by worker 0
    else:
        log.info("relay listening on %s://%s", scheme, config.server.address)
    for path, route in sorted(runtime.routes.items()):
        sinks = ", ".join(outbox.name for outbox in route.outboxes)
        open_to = "" if route.tokens else " (no token: any client)" if route.config.allow_anonymous else \
            " (no token: loopback clients only)"
        served = path if route.protocol == "http" else f"{path} ({route.protocol} paths under it, and at the root)"
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


async def serve(config: Config, log_overrides: tuple[str | None, str | None] = (None, None),
                worker: int = 0, workers: int = 1) -> int:
    try:
        runtime = Runtime(config, worker, workers)
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
    # Several workers share the port: the kernel spreads connections across them (SO_REUSEPORT).
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024, reuse_address=True,
                       reuse_port=workers > 1 or None)
    await site.start()
    # What start-up built (mappings, routes, config, imports) lives as long as the process: out of
    # the collector's sight, a full collection no longer walks it. Measured under a held load, the
    # full collections paused the event loop 20-33 ms every few seconds, which set the p99.
    gc.freeze()
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
    queued = sum(o.queued_entries for o in runtime.outboxes.values())
    log.info("stopped; %d %s queued on disk for the next start", queued, "entry stays" if queued == 1 else "entries stay")
    return 0

"""The web Application: its routes, and each start-up step paired with its clean-up.

`cleanup_ctx` runs the steps in order when the runner is set up (before the
socket listens) and undoes them in reverse when it is cleaned up (after the
socket is closed and requests in flight are done): the queue opens first and
closes last; its counts.json is kept from then on, and written a last time
after the senders stopped; the senders start last and stop, within what is
left of `server.shutdown_grace`, first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from relay.config import ServerConfig
from relay.runtime import Runtime
from relay.server import admin, ingest, probes, rejections
from relay.server.console import routes as console
from relay.server.keys import RUNTIME, SHUTDOWN, ShutdownClock
from relay.server.replies import json_errors
from relay.server.siblings import SIBLINGS, Siblings
from relay.store import counts


async def _queue(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    runtime.open_queue()  # rebuilds each sink's state from disk
    await runtime.open_rejected()
    yield
    runtime.queue.close()


async def _counts(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    task = asyncio.create_task(runtime.keep_counts())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    counts.write_logged(runtime.queue.path, runtime.counts())  # the senders have stopped: the final figures


async def _siblings(app: web.Application) -> AsyncIterator[None]:
    await app[SIBLINGS].start(app[RUNTIME])  # this worker's views, for its siblings (siblings.py)
    yield
    await app[SIBLINGS].stop()


async def _senders(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.start_senders()
    yield
    # What was not delivered by then stays on disk for the next start.
    await runtime.stop_senders(max(app[SHUTDOWN].remaining() - 0.5, 0.1))


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=runtime.config.server.max_body_size, middlewares=[json_errors])
    app[RUNTIME] = runtime
    app[SHUTDOWN] = ShutdownClock(float(runtime.config.server.shutdown_grace))
    app[SIBLINGS] = Siblings(runtime.config.queue.path, runtime.worker, runtime.workers)
    app.cleanup_ctx.extend([_queue, _counts, _siblings, _senders])
    probes.add_routes(app)
    admin.add_routes(app)
    console.add_routes(app)  # its history sampler starts after the queue opened
    rejections.add_routes(app)
    ingest.add_routes(app)  # last: it takes POST on every other path
    return app


def runner_options(server: ServerConfig) -> dict[str, Any]:
    """How the app is served (web.AppRunner's options), by `relay serve` and the tests alike."""
    # auto_decompress=False: decode.py undoes Content-Encoding itself, with its own bomb limits.
    # keepalive_timeout: an idle or half-sent connection (slowloris) is closed after read_timeout,
    # not after aiohttp's default of an hour.
    return {"handle_signals": False, "access_log": None, "auto_decompress": False,
            "keepalive_timeout": float(server.read_timeout),
            "shutdown_timeout": max(server.shutdown_grace * 0.5, 0.1)}

"""The ingest route: auth, size limits, status codes and answers. No parsing here.

POST on any path is looked up in the runtime's route table (so a reload can
change sources without restarting the server); decoding, mapping and the
queue are the pipeline's business.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from relay.errors import (
    IngestError,
    PayloadTooLarge,
    RequestTimeout,
    ShuttingDown,
    UnknownSource,
)
from relay.server.auth import authorize
from relay.server.keys import RUNTIME
from relay.server.replies import reply
from relay.stages import pipeline
from relay.telemetry import Sampler

if TYPE_CHECKING:
    from relay.runtime import Runtime

log = logging.getLogger("relay.ingest")
_sample = Sampler(10.0)  # client errors are logged at most once per source and status per 10s


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over the limit of {limit} bytes")
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g}s") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes") from None


async def handle_ingest(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    runtime.request_started()
    try:
        return await _ingest(runtime, request)
    finally:
        runtime.request_finished()


async def _ingest(runtime: Runtime, request: web.Request) -> web.Response:
    route = runtime.routes.get(request.path)
    source = route.name if route else "_unknown"
    try:
        if route is None:
            known = ", ".join(sorted(runtime.routes))
            raise UnknownSource(f"no source at {request.path}; configured: {known}")
        if runtime.draining:
            raise ShuttingDown("the relay is shutting down; retry on another instance or later",
                               retry_after=5.0)
        authorize(route, request)
        server = runtime.config.server
        share = min(request.content_length or server.max_body_size, server.max_body_size)
        async with runtime.body_budget.hold(share, timeout=float(server.read_timeout)):
            body = await _read_body(request, server.max_body_size, server.read_timeout)
            runtime.metrics.received_bytes.labels(source).inc(len(body))
            prepared = pipeline.prepare(route, body, content_type=request.headers.get("Content-Type"),
                                        content_encoding=request.headers.get("Content-Encoding"),
                                        headers=request.headers, max_size=server.max_body_size)
            del body
            await pipeline.commit(route, prepared, runtime.queue)
    except IngestError as exc:
        runtime.metrics.requests.labels(source, str(exc.status)).inc()
        held = None if exc.status == 401 or exc.status >= 500 else _sample(f"{source}:{exc.status}")
        if held is not None:
            log.info("%s %s: %s %s%s", request.method, request.path, exc.status, exc.message,
                     f" ({held} more like it in the last 10s)" if held else "",
                     extra={"fields": {"source": source, "status": exc.status}})
        headers = dict(exc.headers)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="relay", charset="UTF-8"'
        return reply(exc.status, {"status": "error", "error": exc.message}, headers)
    result = pipeline.answer(prepared)
    pipeline.count(runtime.metrics, route, prepared)
    runtime.keep_rejected(route, prepared)
    runtime.metrics.requests.labels(source, "200").inc()
    return reply(200, {"status": "accepted", "accepted": result.accepted, "rejected": result.rejected,
                        "filtered": result.filtered, "errors": result.errors})


def add_routes(app: web.Application) -> None:
    """Ingest answers POST on any path not taken by an earlier route: add it last."""
    app.router.add_post("/{path:.*}", handle_ingest)

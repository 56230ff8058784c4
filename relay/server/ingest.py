"""The ingest route: auth, size limits, status codes and answers. No parsing here.

Any method on any path is resolved against the runtime's route table (server.protocols: a
source's path, a protocol's paths; a reload can
change sources without restarting the server); decoding, mapping and the
queue are the pipeline's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from relay.errors import (
    IngestError,
    PayloadTooLarge,
    RequestTimeout,
    ShuttingDown,
    UnknownSource,
)
from relay.server import protocols
from relay.server.auth import authorize, pick
from relay.server.keys import RUNTIME, STARTED
from relay.server.protocols import Protocol
from relay.server.protocols import http as _http
from relay.stages import pipeline
from relay.telemetry import Sampler

if TYPE_CHECKING:
    from relay.runtime import Runtime

log = logging.getLogger("relay.ingest")
HTTP = _http.PROTOCOL
_sample = Sampler(10.0)  # client errors are logged at most once per source and status per 10s


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over the limit of {limit} bytes")
    if request.content.is_eof() and request.content_length is not None:
        # all of it came with the headers (a small body): nothing to wait for, so no timer to arm
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes") from None
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g}s") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes") from None


async def handle_ingest(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    found = protocols.table(runtime.routes).resolve(request.method, request.path)
    if request.path == "/" and request.method in ("GET", "HEAD") and (
            found is None or "text/html" in request.headers.get("Accept", "")):
        # the root is the console's for a browser; an Elasticsearch client's GET / is its handshake
        raise web.HTTPFound("/-/console")
    if found is None:
        if request.method != "POST":  # as the router answered before protocols took other methods
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        known = ", ".join(sorted(runtime.routes))
        return _failed(runtime, request, HTTP, "_unknown",
                       UnknownSource(f"no source at {request.path}; configured: {known}"))
    if found.kind != "ingest":  # a handshake: what clients ask before they send; no token needed
        return await found.protocol.handshake(found.kind, request)
    request[STARTED] = time.monotonic()
    runtime.request_started()
    try:
        return await _ingest(runtime, request, found)
    finally:
        runtime.request_finished()


def _failed(runtime: Runtime, request: web.Request, protocol: Protocol, source: str,
            exc: IngestError) -> web.Response:
    runtime.metrics.requests.labels(source, str(exc.status)).inc()
    held = None if exc.status == 401 or exc.status >= 500 else _sample(f"{source}:{exc.status}")
    if held is not None:
        log.info("%s %s: %s %s%s", request.method, request.path, exc.status, exc.message,
                 f" ({held} more like it in the last 10s)" if held else "",
                 extra={"fields": {"source": source, "status": exc.status}})
    return protocol.failed(exc, request)


async def _ingest(runtime: Runtime, request: web.Request, found: protocols.Match) -> web.Response:
    route = pick(found.candidates, request)
    source = route.name
    try:
        if runtime.draining:
            raise ShuttingDown("the relay is shutting down; retry on another instance or later",
                               retry_after=5.0)
        authorize(route, request)
        server = runtime.config.server
        share = min(request.content_length or server.max_body_size, server.max_body_size)
        async with runtime.body_budget.hold(share, timeout=float(server.read_timeout)):
            body = await _read_body(request, server.max_body_size, server.read_timeout)
            counters = runtime.metrics.source(source)
            counters.received_bytes.inc(len(body))
            prepared = pipeline.prepare(route, body, content_type=request.headers.get("Content-Type"),
                                        content_encoding=request.headers.get("Content-Encoding"),
                                        headers=request.headers, max_size=server.max_body_size,
                                        path=found.subpath + (f"?{request.query_string}" if request.query_string else ""))
            del body
            await pipeline.commit(route, prepared, runtime.queue)
    except IngestError as exc:
        return _failed(runtime, request, found.protocol, source, exc)
    pipeline.count(runtime.metrics, route, prepared)
    runtime.keep_rejected(route, prepared)
    counters.ok.inc()
    return found.protocol.accepted(prepared, request)


def add_routes(app: web.Application) -> None:
    """Ingest and the protocols' handshakes answer every method on any path not taken by an earlier
    route: add it last."""
    app.router.add_route("*", "/{path:.*}", handle_ingest)

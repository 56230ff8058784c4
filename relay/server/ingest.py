"""HTTP routes: auth, size limits, status codes and answers. No parsing here.

POST on any path is looked up in the runtime's route table (so a reload can
change sources without restarting the server); decoding, mapping and the
queue are the pipeline's business.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.errors import (
    IngestError,
    PayloadTooLarge,
    RequestTimeout,
    ShuttingDown,
    Unauthorized,
    UnknownSource,
)
from relay.server import admin
from relay.stages import pipeline
from relay.telemetry import Sampler

if TYPE_CHECKING:
    from relay.runtime import Runtime
    from relay.stages.pipeline import Route

log = logging.getLogger("relay.ingest")
RUNTIME = admin.RUNTIME_KEY
_json = msgspec.json.Encoder()
_sample = Sampler(10.0)  # client errors are logged at most once per source and status per 10s


def _reply(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_json.encode(payload), content_type="application/json",
                        headers=headers)


def _presented_tokens(request: web.Request) -> list[bytes]:
    """Every place a shipper can put its token: Bearer, x-api-key, or a basic-auth password."""
    found: list[bytes] = []
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        found.append(value.strip().encode())
    elif scheme.lower() == "basic" and value.strip():
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
            found.append(password)
        except (binascii.Error, ValueError):
            pass
    api_key = request.headers.get("x-api-key")
    if api_key:
        found.append(api_key.encode())
    return found


def anonymous_allowed(route: Route, request: web.Request) -> bool:
    """A source without tokens: any client when it says `allow_anonymous = true`, else only loopback
    ones, so that a relay listening on 0.0.0.0 is not an open door into the upstream account."""
    return route.config.allow_anonymous or admin.loopback_client(request)


def _authorize(route: Route, request: web.Request) -> None:
    tokens = route.tokens
    if not tokens:
        if anonymous_allowed(route, request):
            return
        raise Unauthorized(f"source {route.name} has no tokens, so it answers only clients on this machine: "
                           f"set sources.{route.name}.tokens (and send one), or sources.{route.name}.allow_anonymous "
                           "= true to accept anyone who can reach the port")
    ok = False
    for presented in _presented_tokens(request):
        for token in tokens:  # no early exit: the time taken does not depend on which matched
            ok |= hmac.compare_digest(presented, token)
    if not ok:
        raise Unauthorized("missing or invalid token: send it as 'Authorization: Bearer <token>', "
                           "'x-api-key: <token>' or as the basic-auth password")


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
        _authorize(route, request)
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
        return _reply(exc.status, {"status": "error", "error": exc.message}, headers)
    result = pipeline.answer(prepared)
    pipeline.count(runtime.metrics, route, prepared)
    runtime.metrics.requests.labels(source, "200").inc()
    return _reply(200, {"status": "accepted", "accepted": result.accepted, "rejected": result.rejected,
                        "filtered": result.filtered, "errors": result.errors})


async def handle_healthz(request: web.Request) -> web.Response:
    return _reply(200, {"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    problems = runtime.readiness_problems()
    if problems:
        return _reply(503, {"status": "not ready", "reasons": problems})
    return _reply(200, {"status": "ready"})


async def handle_metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = generate_latest(runtime.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer, even the router's 404/405 or a bug of ours, has the JSON error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return _reply(exc.status, {"status": "error", "error": exc.reason}, headers)
    except Exception:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return _reply(500, {"status": "error", "error": "internal error: the request was not "
                            "acknowledged; retry it"})


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=runtime.config.server.max_body_size, middlewares=[json_errors])
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    admin.add_routes(app)
    app.router.add_post("/{path:.*}", handle_ingest)
    return app

"""Probes for orchestrators and scrapers: /healthz (alive), /readyz (take traffic?), /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.server.keys import RUNTIME
from relay.server.replies import reply


async def handle_healthz(request: web.Request) -> web.Response:
    return reply(200, {"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    problems = runtime.readiness_problems()
    if problems:
        return reply(503, {"status": "not ready", "reasons": problems, "notes": runtime.queue.damage.salvages})
    if runtime.queue.damage.salvages:  # ready, but the operator must know what the damage took
        return reply(200, {"status": "ready", "notes": runtime.queue.damage.salvages})
    return reply(200, {"status": "ready"})


async def handle_metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = generate_latest(runtime.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)

"""Probes for orchestrators and scrapers: /healthz (alive), /readyz (take traffic?), /metrics.

With several workers, /readyz and /metrics speak for the whole relay, whichever
worker answers: ready only when every worker is (naming any that is not), and
the metrics of all workers merged into one set of series (siblings.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.server import siblings
from relay.server.keys import RUNTIME
from relay.server.replies import reply
from relay.telemetry import export_samples, merged_exposition

if TYPE_CHECKING:
    from relay.runtime import Runtime


async def handle_healthz(request: web.Request) -> web.Response:
    return reply(200, {"status": "ok"})


@siblings.view("readyz")
async def local_readiness(runtime: Runtime, query: Mapping[str, str]) -> dict[str, Any]:
    return {"reasons": runtime.readiness_problems(), "notes": runtime.queue.damage.salvages}


async def handle_readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    answers = await request.app[siblings.SIBLINGS].everyone("readyz", request.query, runtime)
    several = len(answers) > 1
    problems: list[str] = []
    notes: list[Any] = []
    for answer in answers:
        said = f"worker {answer.worker}: " if several else ""
        if not answer.ok:
            problems.append(f"{said}{answer.error}")
            continue
        problems += [f"{said}{reason}" for reason in answer.value["reasons"]]
        notes += answer.value["notes"]
    if problems:
        return reply(503, {"status": "not ready", "reasons": problems, "notes": notes})
    if notes:  # ready, but the operator must know what the damage took
        return reply(200, {"status": "ready", "notes": notes})
    return reply(200, {"status": "ready"})


@siblings.view("metrics")
async def local_metrics(runtime: Runtime, query: Mapping[str, str]) -> Any:
    return export_samples(runtime.metrics.registry)


async def handle_metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    sibs = request.app[siblings.SIBLINGS]
    if sibs.count == 1:
        body = generate_latest(runtime.metrics.registry)
    else:
        # A worker that does not answer (restarting) is left out of this scrape, not waited for.
        answers = await sibs.everyone("metrics", request.query, runtime)
        body = merged_exposition(answer.value for answer in answers if answer.ok)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)

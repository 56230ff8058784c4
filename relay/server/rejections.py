"""Admin endpoints for rejected records: the recent ones with their records, and replay.

    GET  /-/rejections?source=S&limit=N   recent rejections (newest first), top reasons, store figures
    POST /-/rejections/replay?source=S    re-map the stored ones with the current config

Guarded as the other admin endpoints (admin.py). Records are shown redacted; as a last guard
every configured credential is replaced wherever it appears in the answer.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from relay.errors import IngestError
from relay.rejections.redact import scrub
from relay.server.admin import guard
from relay.server.replies import reply

_json = msgspec.json.Encoder()
MAX_LIMIT = 1000


async def handle_rejections(request: web.Request) -> web.Response:
    runtime = guard(request)
    source = request.query.get("source")
    try:
        limit = min(max(int(request.query.get("limit", "100")), 0), MAX_LIMIT)
    except ValueError:
        return reply(400, {"status": "error", "error": f"limit must be a whole number, got "
                                                       f"{request.query['limit']!r}"})
    if source is not None and source not in runtime.config.sources:
        return reply(404, {"status": "error", "error": f"no source named {source!r} (sources: "
                                                       f"{', '.join(runtime.config.sources) or 'none'})"})
    names = [source] if source is not None else list(runtime.config.sources)
    recent = runtime.recent_rejections
    store = runtime.rejected
    await store.settled()  # the figures count the rejections of requests already answered
    body = _json.encode({
        "rejections": recent.recent(source, limit),
        "top": {name: recent.top(name) for name in names},
        "stored": {name: {"records": store.records.get(name, 0), "bytes": store.bytes_by_source.get(name, 0),
                          "dropped": store.dropped.get(name, 0)} for name in names},
        "recent": {name: recent.figures(name) for name in names},  # the in-memory ring's own figures
    })
    return web.Response(status=200, body=scrub(body, runtime.secrets()), content_type="application/json")


async def handle_replay(request: web.Request) -> web.Response:
    runtime = guard(request)
    try:
        result = await runtime.replay_rejected(request.query.get("source"))
    except KeyError as exc:
        return reply(404, {"status": "error", "error": exc.args[0]})
    except IngestError as exc:  # the queue is full or behind: nothing of the failing chunk was queued
        return reply(exc.status, {"status": "error", "error": exc.message}, dict(exc.headers))
    body = scrub(_json.encode(result), runtime.secrets())
    return web.Response(status=200, body=body, content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/-/rejections", handle_rejections)
    app.router.add_post("/-/rejections/replay", handle_replay)

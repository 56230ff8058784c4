"""Admin endpoints for rejected records: the recent ones with their records, and replay.

    GET  /-/rejections?source=S&limit=N   recent rejections (newest first), top reasons, store figures
    POST /-/rejections/replay?source=S    re-map the stored ones with the current config

Guarded as the other admin endpoints (admin.py). Records are shown redacted; as a last guard
every configured credential is replaced wherever it appears in the answer. With several workers
both speak for the whole relay (siblings.py): each worker gives its own ring and its own shard's
store, merged by relay.rejections.merge; a replay is done by each worker on its own shard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from relay.errors import IngestError
from relay.rejections.merge import merge_listings, merge_replays
from relay.rejections.redact import scrub
from relay.server import siblings
from relay.server.admin import guard
from relay.server.replies import reply

if TYPE_CHECKING:
    from relay.runtime import Runtime

_json = msgspec.json.Encoder()
MAX_LIMIT = 1000


def _limit(query: Mapping[str, str]) -> int:
    return min(max(int(query.get("limit", "100")), 0), MAX_LIMIT)


def _unknown_source(runtime: Runtime, source: str) -> web.Response:
    return reply(404, {"status": "error", "error": f"no source named {source!r} (sources: "
                                                   f"{', '.join(runtime.config.sources) or 'none'})"})


@siblings.view("rejections")
async def local_rejections(runtime: Runtime, query: Mapping[str, str]) -> Any:
    """This worker's part (the query was checked by the public route)."""
    source = query.get("source")
    names = [source] if source is not None else list(runtime.config.sources)
    recent = runtime.recent_rejections
    store = runtime.rejected
    await store.settled()  # the figures count the rejections of requests already answered
    # as plain JSON values: a sibling's part travels as JSON (the records are msgspec.Raw)
    return msgspec.json.decode(_json.encode({
        "rejections": recent.recent(source, _limit(query)),
        "top": {name: recent.top(name) for name in names},
        "stored": {name: {"records": store.records.get(name, 0), "bytes": store.bytes_by_source.get(name, 0),
                          "dropped": store.dropped.get(name, 0)} for name in names},
        "recent": {name: recent.figures(name) for name in names},  # the in-memory ring's own figures
    }))


async def handle_rejections(request: web.Request) -> web.Response:
    runtime = guard(request)
    source = request.query.get("source")
    try:
        limit = _limit(request.query)
    except ValueError:
        return reply(400, {"status": "error", "error": f"limit must be a whole number, got "
                                                       f"{request.query['limit']!r}"})
    if source is not None and source not in runtime.config.sources:
        return _unknown_source(runtime, source)
    answers = await request.app[siblings.SIBLINGS].everyone("rejections", request.query, runtime)
    answer = merge_listings([a.value for a in answers if a.ok], limit)
    missing = [f"worker {a.worker}: {a.error}" for a in answers if not a.ok]
    if missing:
        answer["incomplete"] = "; ".join(missing)
    return web.Response(status=200, body=scrub(_json.encode(answer), runtime.secrets()),
                        content_type="application/json")


@siblings.view("rejections/replay")
async def local_replay(runtime: Runtime, query: Mapping[str, str]) -> Any:
    try:
        return {"result": msgspec.to_builtins(await runtime.replay_rejected(query.get("source")))}
    except KeyError as exc:
        return {"status": 404, "error": exc.args[0], "headers": {}}
    except IngestError as exc:  # the queue is full or behind: nothing of the failing chunk was queued
        return {"status": exc.status, "error": exc.message, "headers": dict(exc.headers)}


async def handle_replay(request: web.Request) -> web.Response:
    runtime = guard(request)
    source = request.query.get("source")
    if source is not None and source not in runtime.config.sources:  # one answer, not one per worker
        return _unknown_source(runtime, source)
    answers = await request.app[siblings.SIBLINGS].everyone("rejections/replay", request.query, runtime)
    done = [a.value["result"] for a in answers if a.ok and "result" in a.value]
    failed = [(a.worker, a.value) for a in answers if a.ok and "result" not in a.value]
    missing = [f"worker {a.worker}: {a.error}" for a in answers if not a.ok]
    result = merge_replays(done)
    if failed:
        several = len(answers) > 1
        first = failed[0][1]
        error = "; ".join(f"worker {w}: {v['error']}" if several else v["error"] for w, v in failed)
        body: dict[str, Any] = {"status": "error", "error": error}
        if done:  # what the other workers replayed stands: say so
            body["replayed_elsewhere"] = result
        status, headers = first["status"], first["headers"]
    else:
        body, status, headers = result, 200, {}
    if missing:
        body["incomplete"] = "; ".join(missing)
    return web.Response(status=status, body=scrub(_json.encode(body), runtime.secrets()),
                        content_type="application/json", headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/-/rejections", handle_rejections)
    app.router.add_post("/-/rejections/replay", handle_replay)

"""Admin endpoints: reload and the dead-letter store.

Guarded by `server.admin_token` (as a Bearer token) when one is set; without
one they answer only to clients on the loopback interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from relay.errors import ConfigError
from relay.server.auth import admin_allowed
from relay.server.keys import RUNTIME
from relay.server.replies import error_body, reply

if TYPE_CHECKING:
    from relay.runtime import Runtime


def guard(request: web.Request) -> Runtime:
    runtime: Runtime = request.app[RUNTIME]
    if not admin_allowed(request, runtime.config.server.admin_token):
        raise web.HTTPForbidden(
            body=error_body("admin endpoints need server.admin_token as a "
                            "Bearer token (or, when none is set, a loopback client)"),
            content_type="application/json")
    return runtime


async def handle_reload(request: web.Request) -> web.Response:
    runtime = guard(request)
    try:
        changes = await runtime.reload()
    except ConfigError as exc:
        return reply(400, {"status": "error", "error": f"reload refused, the running config stays: {exc}"})
    return reply(200, {"status": "reloaded", "changes": changes})


async def handle_dead_letters(request: web.Request) -> web.Response:
    runtime = guard(request)
    try:
        letters = await runtime.dead_letters.list(request.query.get("sink"))
    except KeyError as exc:
        return reply(404, {"status": "error", "error": exc.args[0]})
    return reply(200, {"dead_letters": letters})


async def handle_replay(request: web.Request) -> web.Response:
    runtime = guard(request)
    try:
        if request.query.get("remap") in ("1", "true", "yes"):
            return reply(200, await runtime.remap_dead_letters(request.query.get("sink")))
        count = await runtime.dead_letters.replay(request.query.get("sink"))
    except KeyError as exc:
        return reply(404, {"status": "error", "error": exc.args[0]})
    return reply(200, {"status": "replayed", "entries": count})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/-/reload", handle_reload)
    app.router.add_get("/-/dead-letters", handle_dead_letters)
    app.router.add_post("/-/dead-letters/replay", handle_replay)

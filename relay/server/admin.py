"""Admin endpoints: reload and the dead-letter store.

Guarded by `server.admin_token` (as a Bearer token) when one is set; without
one they answer only to clients on the loopback interface. With several
workers each endpoint acts on every worker (siblings.py): a reload is applied
by each (the answer says what each applied), dead letters are listed and
replayed from every shard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from relay.errors import ConfigError
from relay.rejections.remap import add_up
from relay.server import siblings
from relay.server.auth import admin_allowed
from relay.server.keys import RUNTIME
from relay.server.replies import error_body, reply

if TYPE_CHECKING:
    from relay.runtime import Runtime


def guard(request: web.Request) -> Runtime:
    runtime: Runtime = request.app[RUNTIME]
    if not admin_allowed(request, runtime.config.server.admin_token):
        raise web.HTTPForbidden(
            text=error_body("admin endpoints need server.admin_token as a "
                            "Bearer token (or, when none is set, a loopback client)").decode(),
            content_type="application/json")
    return runtime


async def _everyone(request: web.Request, name: str, runtime: Runtime) -> list[siblings.Answer]:
    return await request.app[siblings.SIBLINGS].everyone(name, request.query, runtime)


@siblings.view("reload")
async def local_reload(runtime: Runtime, query: Mapping[str, str]) -> dict[str, Any]:
    try:
        return {"status": "reloaded", "changes": await runtime.reload()}
    except ConfigError as exc:
        return {"status": "error", "error": f"reload refused, the running config stays: {exc}"}


async def handle_reload(request: web.Request) -> web.Response:
    runtime = guard(request)
    answers = await _everyone(request, "reload", runtime)
    if len(answers) == 1:
        answer = answers[0].value
        return reply(400 if answer["status"] == "error" else 200, answer)
    workers = [{"worker": a.worker, **a.value} if a.ok else {"worker": a.worker, "status": "error", "error": a.error}
               for a in answers]
    failed = [w for w in workers if w["status"] == "error"]
    if failed:
        said = "; ".join(f"worker {w['worker']}: {w['error']}" for w in failed)
        return reply(400, {"status": "error", "error": said, "workers": workers})
    here = request.app[siblings.SIBLINGS].index
    mine = next(w for w in workers if w["worker"] == here)
    return reply(200, {"status": "reloaded", "changes": mine["changes"], "workers": workers})


@siblings.view("dead-letters")
async def local_dead_letters(runtime: Runtime, query: Mapping[str, str]) -> dict[str, Any]:
    try:
        letters = await runtime.dead_letters.list(query.get("sink"))
        # as plain JSON values: a sibling's part travels as JSON, and the entries are raw JSON
        return {"dead_letters": msgspec.json.decode(msgspec.json.encode(letters))}
    except KeyError as exc:
        return {"error": exc.args[0]}


@siblings.view("dead-letters/replay")
async def local_replay(runtime: Runtime, query: Mapping[str, str]) -> dict[str, Any]:
    try:
        if query.get("remap") in ("1", "true", "yes"):
            remapped: dict[str, Any] = msgspec.to_builtins(await runtime.remap_dead_letters(query.get("sink")))
            return remapped
        return {"entries": await runtime.dead_letters.replay(query.get("sink"))}
    except KeyError as exc:
        return {"error": exc.args[0]}


def _gathered(answers: list[siblings.Answer]) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """(each worker's part, an error every worker gave, the workers that did not answer)."""
    parts = [a.value for a in answers if a.ok]
    errors = [p["error"] for p in parts if "error" in p]
    missing = [f"worker {a.worker}: {a.error}" for a in answers if not a.ok]
    return [p for p in parts if "error" not in p], errors[0] if errors else None, "; ".join(missing) or None


async def handle_dead_letters(request: web.Request) -> web.Response:
    runtime = guard(request)
    answers = await _everyone(request, "dead-letters", runtime)
    _, error, missing = _gathered(answers)
    if error:
        return reply(404, {"status": "error", "error": error})
    several = len(answers) > 1
    letters = [{**letter, "worker": a.worker} if several else letter
               for a in answers if a.ok and "error" not in a.value for letter in a.value["dead_letters"]]
    body: dict[str, Any] = {"dead_letters": letters}
    if missing:
        body["incomplete"] = missing
    return reply(200, body)


async def handle_replay(request: web.Request) -> web.Response:
    runtime = guard(request)
    parts, error, missing = _gathered(await _everyone(request, "dead-letters/replay", runtime))
    if error:
        return reply(404, {"status": "error", "error": error})
    body = add_up(parts)
    if missing:
        body["incomplete"] = missing
    return reply(200, body)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/-/reload", handle_reload)
    app.router.add_get("/-/dead-letters", handle_dead_letters)
    app.router.add_post("/-/dead-letters/replay", handle_replay)

"""Admin endpoints: reload and the dead-letter store.

Guarded by `server.admin_token` (as a Bearer token) when one is set; without
one they answer only to clients on the loopback interface.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from relay.errors import ConfigError

if TYPE_CHECKING:
    from relay.runtime import Runtime

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")  # the same key ingest.py registers
_json = msgspec.json.Encoder()


def _reply(status: int, payload: object) -> web.Response:
    return web.Response(status=status, body=_json.encode(payload), content_type="application/json")


def loopback_client(request: web.Request) -> bool:
    """The peer of the TCP connection is this machine's loopback (127.0.0.0/8, ::1, ::ffff:127.x).
    Headers such as X-Forwarded-For are not trusted: anyone can send them."""
    try:
        peer = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        return peer.ipv4_mapped.is_loopback
    return peer.is_loopback


def _allowed(request: web.Request, token: str | None) -> bool:
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())
    return loopback_client(request)


def _guard(request: web.Request) -> Runtime:
    runtime: Runtime = request.app[RUNTIME_KEY]
    if not _allowed(request, runtime.config.server.admin_token):
        raise web.HTTPForbidden(
            body=_json.encode({"status": "error", "error": "admin endpoints need server.admin_token as a "
                               "Bearer token (or, when none is set, a loopback client)"}),
            content_type="application/json")
    return runtime


async def handle_reload(request: web.Request) -> web.Response:
    runtime = _guard(request)
    try:
        changes = await runtime.reload()
    except ConfigError as exc:
        return _reply(400, {"status": "error", "error": f"reload refused, the running config stays: {exc}"})
    return _reply(200, {"status": "reloaded", "changes": changes})


async def handle_dead_letters(request: web.Request) -> web.Response:
    runtime = _guard(request)
    try:
        letters = await runtime.dead_letters.list(request.query.get("sink"))
    except KeyError as exc:
        return _reply(404, {"status": "error", "error": exc.args[0]})
    return _reply(200, {"dead_letters": letters})


async def handle_replay(request: web.Request) -> web.Response:
    runtime = _guard(request)
    try:
        count = await runtime.dead_letters.replay(request.query.get("sink"))
    except KeyError as exc:
        return _reply(404, {"status": "error", "error": exc.args[0]})
    return _reply(200, {"status": "replayed", "entries": count})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/-/reload", handle_reload)
    app.router.add_get("/-/dead-letters", handle_dead_letters)
    app.router.add_post("/-/dead-letters/replay", handle_replay)

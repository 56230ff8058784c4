"""The console's routes: the page and its two assets, the state it polls, the playground, the login.

    GET  /                      -> 302 /-/console
    GET  /-/console[?token=T]   the page; with ?token= sets the session cookie and redirects (303)
                                to strip the token from the address bar; without access, a login form
    POST /-/console/login       the login form (token=T), same cookie
    GET  /-/console/console.js, console.css   (public: static code, no data)
    GET  /-/console/state       JSON, polled every 2 s (relay.server.console.state)
    POST /-/console/map         the mapping playground (relay.server.console.playground)

Access is the admin endpoints' (server.auth.admin_allowed): the admin token, or a loopback
client when none is set. A browser cannot send a Bearer header when it opens a page, so the
token is exchanged once for an HttpOnly, SameSite=Strict cookie derived from it
(auth.console_session); the page never sees or shows the token.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from functools import cache
from html import escape
from importlib import resources

from aiohttp import web

from relay.server.auth import CONSOLE_COOKIE, admin_allowed, console_session
from relay.server.console.history import INTERVAL, History
from relay.server.console.playground import PlaygroundError, parse_request, run_playground
from relay.server.console.state import build_state, current_sample
from relay.server.keys import HISTORY, RUNTIME
from relay.server.replies import reply

ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
# Everything comes from the relay itself: no CDN, no inline script, no framing.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}
_LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>relay console: sign in</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/-/console/console.css"></head><body class="login">
<form method="post" action="/-/console/login"><h1>relay console</h1><p>{message}</p>
<label><span>Admin token (<code>server.admin_token</code>)</span>
<input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">Open the console</button></form></body></html>"""
_NO_TOKEN = ("This relay has no server.admin_token, so its console answers only on this machine "
             "(a loopback client). Set server.admin_token to open it from elsewhere.")


@cache
def _asset(name: str) -> bytes:
    return resources.files("relay.server.console").joinpath(name).read_bytes()


def _page(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="text/html", charset="utf-8", headers=HEADERS)


def _login_page(status: int, message: str) -> web.Response:
    return _page(status, _LOGIN.format(message=escape(message)).encode())


def _token(request: web.Request) -> str | None:
    return request.app[RUNTIME].config.server.admin_token


def _signed_in(request: web.Request, token: str) -> web.Response:
    """303 to the bare console URL (the token leaves the address bar), with the session cookie
    (Secure when the relay serves TLS: over plain HTTP a Secure cookie would never come back)."""
    response = web.Response(status=303, headers={**HEADERS, "Location": "/-/console"})
    response.set_cookie(CONSOLE_COOKIE, console_session(token), path="/-/", httponly=True, samesite="Strict",
                        secure=request.secure or None)
    return response


def _token_matches(presented: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(presented.encode(), (token or "").encode())


async def handle_page(request: web.Request) -> web.StreamResponse:
    token = _token(request)
    presented = request.query.get("token")
    if presented is not None:
        if _token_matches(presented, token):
            return _signed_in(request, token or "")
        return _login_page(403, "That token is not this relay's admin token." if token else _NO_TOKEN)
    if admin_allowed(request, token):
        return _page(200, _asset("console.html"))
    if token:
        return _login_page(401, "The console needs the relay's admin token.")
    return _login_page(403, _NO_TOKEN)


async def handle_login(request: web.Request) -> web.StreamResponse:
    token = _token(request)
    form = await request.post()
    presented = form.get("token")
    if isinstance(presented, str) and _token_matches(presented, token):
        return _signed_in(request, token or "")
    return _login_page(403, "That token is not this relay's admin token." if token else _NO_TOKEN)


def _guard(request: web.Request) -> None:
    if not admin_allowed(request, _token(request)):
        raise web.HTTPForbidden(
            text='{"status":"error","error":"the console needs server.admin_token (as a Bearer token or its '
                 'session cookie; open /-/console?token=...), or, when none is set, a loopback client"}',
            content_type="application/json")


async def handle_asset(request: web.Request) -> web.Response:
    # Not guarded: static code with no data in it, and the sign-in form needs the stylesheet.
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(body=_asset(name), content_type=ASSETS[name], charset="utf-8", headers=HEADERS)


async def handle_state(request: web.Request) -> web.Response:
    _guard(request)
    state = build_state(request.app[RUNTIME], request.app[HISTORY])
    # the recent-rejections panel polls /-/rejections only where this relay serves it
    state["rejections"] = any(r.canonical == "/-/rejections" for r in request.app.router.resources())
    return reply(200, state, headers={"Cache-Control": "no-store"})


async def handle_map(request: web.Request) -> web.Response:
    _guard(request)
    runtime = request.app[RUNTIME]
    try:
        ask = parse_request(await request.read())
        # mapping a thousand records takes milliseconds; off the loop all the same, ingest goes on
        answer = await asyncio.to_thread(run_playground, runtime, ask)
    except PlaygroundError as exc:
        return reply(400, {"status": "error", "error": str(exc)})
    return reply(200, answer)


async def sampling(app: web.Application) -> AsyncIterator[None]:
    """Start-up step: a sample into the console's history now and every INTERVAL seconds."""
    runtime, history = app[RUNTIME], app[HISTORY]

    async def loop() -> None:
        while True:
            history.add(current_sample(runtime, time.time()))
            await asyncio.sleep(INTERVAL)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def add_routes(app: web.Application) -> None:
    app[HISTORY] = History()
    app.router.add_get("/-/console", handle_page)
    app.router.add_post("/-/console/login", handle_login)
    app.router.add_get("/-/console/state", handle_state)
    app.router.add_post("/-/console/map", handle_map)
    app.router.add_get("/-/console/{name}", handle_asset)
    app.cleanup_ctx.append(sampling)

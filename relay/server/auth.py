"""Who may call what: source tokens for ingest, the admin token (or loopback) for /-/ routes."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
from typing import TYPE_CHECKING

from aiohttp import web

from relay.errors import Unauthorized

if TYPE_CHECKING:
    from relay.stages.pipeline import Route


def _presented_tokens(request: web.Request) -> list[bytes]:
    """Every place a shipper can put its token: Bearer, x-api-key, a basic-auth password, and the
    native protocols' own: `Splunk <token>` (HEC), `ApiKey <base64 id:key>` or the key as it is
    (Elasticsearch: the key part or the whole value may be the token), DD-API-KEY (Datadog)."""
    found: list[bytes] = []
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme in ("bearer", "splunk") and value:
        found.append(value.encode())
    elif scheme in ("basic", "apikey") and value:
        if scheme == "apikey":
            found.append(value.encode())
        try:
            _, _, password = base64.b64decode(value, validate=True).partition(b":")
            found.append(password)
        except (binascii.Error, ValueError):
            pass
    for header in ("x-api-key", "DD-API-KEY"):
        api_key = request.headers.get(header)
        if api_key:
            found.append(api_key.encode())
    return found


def loopback_client(request: web.Request) -> bool:
    """The peer of the TCP connection is this machine's loopback (127.0.0.0/8, ::1, ::ffff:127.x).
    Headers such as X-Forwarded-For are not trusted: anyone can send them."""
    return _is_loopback(request.remote or "")


@functools.lru_cache(maxsize=4096)  # parsing with ipaddress costs ~20 µs; the same peers come back
def _is_loopback(address: str) -> bool:
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        return peer.ipv4_mapped.is_loopback
    return peer.is_loopback


def anonymous_allowed(route: Route, request: web.Request) -> bool:
    """A source without tokens: any client when it says `allow_anonymous = true`, else only loopback
    ones, so that a relay listening on 0.0.0.0 is not an open door into the upstream account."""
    return route.config.allow_anonymous or loopback_client(request)


def authorize(route: Route, request: web.Request) -> None:
    """Raise Unauthorized unless the request carries one of the source's tokens, or the source
    has none and the client may write without one."""
    tokens = route.tokens
    if not tokens:
        if anonymous_allowed(route, request):
            return
        raise Unauthorized(f"source {route.name} has no tokens, so it answers only clients on this machine: "
                           f"set sources.{route.name}.tokens (and send one), or sources.{route.name}.allow_anonymous "
                           "= true to accept anyone who can reach the port")
    if not _holds_token(route, _presented_tokens(request)):
        raise Unauthorized("missing or invalid token: send it as 'Authorization: Bearer <token>', "
                           "'x-api-key: <token>' or as the basic-auth password")


CONSOLE_COOKIE = "relay_console"
# The console's own requests say so: a cross-site form cannot add a header, so a POST that only
# carries the cookie (already SameSite=Strict) is refused without it.
CONSOLE_HEADER = "X-Relay-Console"


def console_session(token: str) -> str:
    """The console cookie's value: derived from the admin token, never the token itself (a cookie
    seen in a browser's storage does not give the token away); a new token ends every session."""
    return hmac.new(token.encode(), b"relay console session", hashlib.sha256).hexdigest()


def _console_cookie_ok(request: web.Request, token: str) -> bool:
    presented = request.cookies.get(CONSOLE_COOKIE)
    if not presented:
        return False
    if request.method not in ("GET", "HEAD") and request.headers.get(CONSOLE_HEADER) != "1":
        return False
    return hmac.compare_digest(presented.encode(), console_session(token).encode())


def _holds_token(route: Route, presented: list[bytes]) -> bool:
    ok = False
    for token in route.tokens:  # no early exit: the time taken does not depend on which matched
        for offered in presented:
            ok |= hmac.compare_digest(offered, token)
    return ok


def pick(candidates: list[Route], request: web.Request) -> Route:
    """The source among several sharing a protocol's root paths whose token the request carries;
    else the one without tokens (authorize then decides); else the first, which authorize refuses."""
    if len(candidates) == 1:
        return candidates[0]
    presented = _presented_tokens(request)
    chosen = None
    for route in candidates:  # every one compared, whichever matches
        if _holds_token(route, presented) and chosen is None:
            chosen = route
    if chosen is not None:
        return chosen
    return next((route for route in candidates if not route.tokens), candidates[0])


def admin_allowed(request: web.Request, token: str | None) -> bool:
    """The admin token as a Bearer token (or the console's session cookie made from it); without one
    configured, only a loopback client."""
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
            return True
        return _console_cookie_ok(request, token)
    return loopback_client(request)

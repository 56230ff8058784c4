"""Who may call what: source tokens for ingest, the admin token (or loopback) for /-/ routes."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress

from aiohttp import web

from relay.errors import Unauthorized


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


def authorize(tokens: list[bytes], request: web.Request) -> None:
    """Raise Unauthorized unless the request carries one of a source's tokens (none: open source)."""
    if not tokens:
        return
    ok = False
    for presented in _presented_tokens(request):
        for token in tokens:  # no early exit: the time taken does not depend on which matched
            ok |= hmac.compare_digest(presented, token)
    if not ok:
        raise Unauthorized("missing or invalid token: send it as 'Authorization: Bearer <token>', "
                           "'x-api-key: <token>' or as the basic-auth password")


def admin_allowed(request: web.Request, token: str | None) -> bool:
    """The admin token as a Bearer token; without one configured, only a loopback client."""
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())
    peer = request.remote or ""
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False

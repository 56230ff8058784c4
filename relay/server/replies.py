"""The one shape of every answer: a JSON body, and the JSON error for anything that escapes a handler."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("relay.ingest")
_json = msgspec.json.Encoder()


def reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_json.encode(payload), content_type="application/json",
                        headers=headers)


def error_body(message: str) -> bytes:
    return _json.encode({"status": "error", "error": message})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer, even the router's 404/405 or a bug of ours, has the JSON error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return reply(exc.status, {"status": "error", "error": exc.reason}, headers)
    except Exception:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return reply(500, {"status": "error", "error": "internal error: the request was not "
                           "acknowledged; retry it"})

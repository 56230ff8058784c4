"""Datadog logs intake: `POST /api/v2/logs` and `/v1/input`, 202 `{}` after the durable commit.

Served at the root (the Agent, Vector and Fluent Bit set a host, not a path) and under the
source's prefix. The token is the `DD-API-KEY` header (server.auth). Errors are Datadog's shape,
`{"errors":[{"status":"400","title":...,"detail":...}]}`; an invalid key is a 403 as the intake
answers it (clients do not retry it), a full queue a 503 with Retry-After (they retry). Records the
mapping rejected do not change the 202: the intake has no per-log answer, so they are counted
(relay_entries_rejected_total), logged, and named in `rejected`/`errors` keys clients ignore.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from relay.errors import IngestError
from relay.server.protocols import Protocol
from relay.stages import pipeline

if TYPE_CHECKING:
    from relay.stages.pipeline import Prepared

_PATHS = frozenset(["/api/v2/logs", "/v1/input"])
_json = msgspec.json.Encoder()


def _answer(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_json.encode(payload), content_type="application/json",
                        headers=headers)


class Datadog(Protocol):
    name = "datadog"
    at_root = True

    def match(self, method: str, subpath: str) -> str | None:
        return "ingest" if method == "POST" and subpath.rstrip("/") in _PATHS else None

    def accepted(self, prepared: Prepared, request: web.Request) -> web.Response:
        if not prepared.rejections:
            return _answer(202, {})
        result = pipeline.answer(prepared)
        return _answer(202, {"accepted": result.accepted, "rejected": result.rejected, "errors": result.errors})

    def failed(self, exc: IngestError, request: web.Request) -> web.Response:
        status = 403 if exc.status == 401 else exc.status
        title = HTTPStatus(status).phrase
        return _answer(status, {"errors": [{"status": str(status), "title": title, "detail": exc.message}]},
                       dict(exc.headers))


PROTOCOL = Datadog()

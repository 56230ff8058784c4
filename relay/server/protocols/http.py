"""Plain HTTP/JSON: POST the records to the source's path; the relay's own JSON answers (README "Status codes")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from relay.errors import IngestError
from relay.server.protocols import Protocol
from relay.server.replies import reply
from relay.stages import pipeline

if TYPE_CHECKING:
    from relay.stages.pipeline import Prepared


class Http(Protocol):
    name = "http"

    def match(self, method: str, subpath: str) -> str | None:
        return "ingest" if method == "POST" and subpath in ("", "/") else None

    def accepted(self, prepared: Prepared, request: web.Request) -> web.Response:
        result = pipeline.answer(prepared)
        return reply(200, {"status": "accepted", "accepted": result.accepted, "rejected": result.rejected,
                           "filtered": result.filtered, "errors": result.errors})

    def failed(self, exc: IngestError, request: web.Request) -> web.Response:
        headers = dict(exc.headers)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="relay", charset="UTF-8"'
        return reply(exc.status, {"status": "error", "error": exc.message}, headers)


PROTOCOL = Http()

"""Splunk HEC: event and raw endpoints, health, indexer acknowledgement, and HEC's answers.

Served at the root (HEC clients set a host and port) and under the source's prefix. Answers are
HEC's: `{"text":"Success","code":0}` (plus `rejected`/`errors` when the mapping rejected some
events: HEC clients ignore keys they do not know), and on errors `{"text":...,"code":N}` with
HEC's codes: 2 token required (401), 4 invalid token (403), 5 no data, 6 invalid data format,
12/13 event field required/blank (400), 9 server is busy (503 with Retry-After).

Indexer acknowledgement (Vector's `splunk_hec_logs` asks for it by default): a request with a
channel (`X-Splunk-Request-Channel` header or `channel` query) gets an `ackId`. The relay answers
only after the durable commit, so every ackId it ever issued is already durable:
`POST /services/collector/ack` answers true for every id asked. Ids start from the clock at
start-up so a restarted relay does not reissue an id a client still waits on.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from relay.errors import IngestError
from relay.server.protocols import Protocol
from relay.stages import pipeline

if TYPE_CHECKING:
    from relay.stages.pipeline import Prepared

_EVENT = frozenset(["/services/collector", "/services/collector/event", "/services/collector/event/1.0",
                    "/services/collector/raw", "/services/collector/raw/1.0"])
_HEALTH = frozenset(["/services/collector/health", "/services/collector/health/1.0"])
_ACK = frozenset(["/services/collector/ack", "/services/collector/ack/1.0"])
_CODES = {400: 6, 408: 6, 413: 6, 415: 6, 503: 9, 500: 8}
_MAX_ACKS = 10_000  # ids answered per ack request; more is not a real client
_json = msgspec.json.Encoder()


def _answer(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_json.encode(payload), content_type="application/json",
                        headers=headers)


def _channel(request: web.Request) -> str | None:
    return request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel") or None


class SplunkHec(Protocol):
    name = "splunk_hec"
    at_root = True

    def __init__(self) -> None:
        self._ack_ids = itertools.count(int(time.time() * 1000))

    def match(self, method: str, subpath: str) -> str | None:
        subpath = subpath.rstrip("/") or "/"
        if subpath in _EVENT:
            return "ingest" if method == "POST" else None
        if subpath in _HEALTH and method in ("GET", "HEAD", "POST"):
            return "health"
        if subpath in _ACK and method == "POST":
            return "ack"
        return None

    async def handshake(self, kind: str, request: web.Request) -> web.Response:
        if kind == "health":
            return _answer(200, {"text": "HEC is healthy", "code": 17})
        try:
            asked = msgspec.json.decode(await request.read()).get("acks")
            ids = [int(i) for i in asked[:_MAX_ACKS]]
        except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
            return _answer(400, {"text": 'Invalid data format: expected {"acks":[id, ...]}', "code": 6})
        return _answer(200, {"acks": {str(i): True for i in ids}})

    def accepted(self, prepared: Prepared, request: web.Request) -> web.Response:
        payload: dict[str, Any] = {"text": "Success", "code": 0}
        if _channel(request):
            payload["ackId"] = next(self._ack_ids)
        if prepared.rejections:
            result = pipeline.answer(prepared)
            payload.update(accepted=result.accepted, rejected=result.rejected, errors=result.errors)
        return _answer(200, payload)

    def failed(self, exc: IngestError, request: web.Request) -> web.Response:
        headers = dict(exc.headers)
        if exc.status == 401:
            if not request.headers.get("Authorization"):
                return _answer(401, {"text": "Token is required", "code": 2},
                               {"WWW-Authenticate": "Splunk"})
            return _answer(403, {"text": "Invalid token", "code": 4})
        code = exc.code if exc.code is not None else _CODES.get(exc.status, 6)
        text = "Server is busy" if exc.status == 503 else exc.message
        return _answer(exc.status, {"text": text, "code": code, **({"detail": exc.message}
                                                                    if text != exc.message else {})}, headers)


PROTOCOL = SplunkHec()

"""OTLP/HTTP logs: `POST /v1/logs` in, OTLP's own answers out.

Served at the root (an OTel SDK or Collector appends `/v1/logs` to its endpoint) and under the
source's prefix (`/ingest/<name>/v1/logs`, its `path` + `/v1/logs`: set that as the client's
logs endpoint when several OTLP sources must be told apart without tokens).

Answers, as the OTLP/HTTP spec has them, in the request's encoding (protobuf or JSON):
- 200 after the durable commit with an ExportLogsServiceResponse; when the mapping or the
  validation rejected records, `partial_success {rejected_log_records, error_message}` names
  them (clients log it and do not retry: the rest are kept);
- 400/401/413/415 with a google.rpc.Status (code INVALID_ARGUMENT, UNAUTHENTICATED, ...),
  which clients do not retry;
- 429/503 with `Retry-After` and a Status (UNAVAILABLE / RESOURCE_EXHAUSTED), which they retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from relay.errors import IngestError
from relay.server.protocols import Protocol
from relay.stages.protocols import otlp

if TYPE_CHECKING:
    from relay.stages.pipeline import Prepared

MAX_MESSAGE = 4096  # characters of error_message: the first rejections, then a count
_CODES = {400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED,
          404: code_pb2.NOT_FOUND, 408: code_pb2.DEADLINE_EXCEEDED, 413: code_pb2.INVALID_ARGUMENT,
          415: code_pb2.INVALID_ARGUMENT, 429: code_pb2.RESOURCE_EXHAUSTED, 503: code_pb2.UNAVAILABLE}


def _json_wanted(request: web.Request) -> bool:
    try:
        return otlp.media(request.headers.get("Content-Type"), b"") == "json"
    except IngestError:  # a Content-Type that is not OTLP's: answer in protobuf, the default
        return False


def _render(message: ExportLogsServiceResponse | status_pb2.Status, status: int, request: web.Request,
            headers: dict[str, str] | None = None) -> web.Response:
    if _json_wanted(request):
        return web.Response(status=status, headers=headers, content_type="application/json",
                            body=json_format.MessageToJson(message, indent=None).encode())
    return web.Response(status=status, headers=headers, content_type="application/x-protobuf",
                        body=message.SerializeToString())


def rejection_message(prepared: Prepared) -> str:
    """The rejections as one line each, cut at MAX_MESSAGE characters with a count of the rest."""
    lines: list[str] = []
    size = 0
    for number, rejection in enumerate(prepared.rejections):
        line = rejection.render()
        if size + len(line) > MAX_MESSAGE:
            lines.append(f"... and {len(prepared.rejections) - number} more rejected log records")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


class Otlp(Protocol):
    name = "otlp"
    at_root = True

    def match(self, method: str, subpath: str) -> str | None:
        return "ingest" if method == "POST" and subpath.rstrip("/") in otlp.PATHS else None

    def accepted(self, prepared: Prepared, request: web.Request) -> web.Response:
        response = ExportLogsServiceResponse()
        if prepared.rejections:
            response.partial_success.rejected_log_records = len(prepared.rejections)
            response.partial_success.error_message = rejection_message(prepared)
        return _render(response, 200, request)

    def failed(self, exc: IngestError, request: web.Request) -> web.Response:
        status = status_pb2.Status(code=_CODES.get(exc.status, code_pb2.UNKNOWN), message=exc.message)
        return _render(status, exc.status, request, dict(exc.headers))


PROTOCOL = Otlp()

"""Loki push: `POST /loki/api/v1/push` in, Loki's own answers out.

Served at the root (Promtail, Alloy, Fluent Bit and Vector post to `<url>/loki/api/v1/push`)
and under the source's prefix (`/ingest/<name>/loki/api/v1/push`).

Answers as Loki gives them:
- 204, empty, after the durable commit when every entry was taken (or dropped on purpose by
  drop_if);
- 400 with a text body listing the rejected entries when some were rejected: the others are
  committed all the same, as Loki keeps the valid entries of a push it answers 400. Clients
  (Promtail, Alloy, Fluent Bit, Vector) log a 400 and do not retry it, so nothing is sent twice;
- 400/401/413/415 with the reason as text; 429/503 with `Retry-After`, which clients retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from relay.errors import IngestError
from relay.server.protocols import Protocol
from relay.stages.protocols import loki

if TYPE_CHECKING:
    from relay.stages.pipeline import Prepared

MAX_LISTED = 100  # rejected entries named in a 400; the rest are counted


class Loki(Protocol):
    name = "loki"
    at_root = True

    def match(self, method: str, subpath: str) -> str | None:
        return "ingest" if method == "POST" and subpath.rstrip("/") in loki.PATHS else None

    def accepted(self, prepared: Prepared, request: web.Request) -> web.Response:
        rejections = prepared.rejections
        if not rejections:
            return web.Response(status=204)
        kept = prepared.accepted
        lines = [f"{len(rejections)} of {prepared.received} entries rejected ({kept} accepted; "
                 "do not resend them):"]
        lines += [r.render() for r in rejections[:MAX_LISTED]]
        if len(rejections) > MAX_LISTED:
            lines.append(f"... and {len(rejections) - MAX_LISTED} more")
        return web.Response(status=400, text="\n".join(lines) + "\n")

    def failed(self, exc: IngestError, request: web.Request) -> web.Response:
        return web.Response(status=exc.status, text=exc.message + "\n", headers=exc.headers)


PROTOCOL = Loki()

"""One upstream request: POST a sealed batch through a Transport, report what came back. No loops, no sleeps."""

from __future__ import annotations

import time

import msgspec

from relay.delivery.transport import Transport
from relay.errors import NoAnswer
from relay.store.layout import SealedBatch


class Delivery(msgspec.Struct, gc=False):
    status: int | None  # None: no answer (connection error or timeout)
    error: str | None = None  # transport error, or the upstream's `detail`
    retry_after: str | None = None
    upstream_errors: list[str] = []  # a 200's per-entry `errors`
    seconds: float = 0.0


class _Answer(msgspec.Struct):
    errors: list[str] = []
    detail: str | msgspec.Raw | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode


class Sender:
    def __init__(self, transport: Transport, url: str, api_key: str) -> None:
        self.transport = transport
        self.url = url
        self.api_key = api_key

    async def send(self, batch: SealedBatch) -> Delivery:
        headers = {"x-api-key": self.api_key, "Content-Type": "application/json"}
        if batch.encoding:
            headers["Content-Encoding"] = batch.encoding
        started = time.monotonic()
        try:
            reply = await self.transport.post(self.url, batch.body, headers)
        except NoAnswer as exc:
            return Delivery(None, error=str(exc), seconds=time.monotonic() - started)
        payload, status = reply.body, reply.status
        answer = _parse(payload)
        error = None
        if not 200 <= status < 300:
            detail = answer.detail if answer else None
            error = (detail if isinstance(detail, str) else payload[:300].decode("utf-8", "replace")) or None
        return Delivery(status, error=error, retry_after=reply.retry_after,
                        upstream_errors=answer.errors if answer and status == 200 else [],
                        seconds=time.monotonic() - started)


def _parse(payload: bytes) -> _Answer | None:
    try:
        return _decode_answer(payload)
    except msgspec.DecodeError:
        return None

"""The one seam between delivery and the network: POST bytes, get a status, body and Retry-After back.

Like httpx's transports: `Sender` speaks only to a `Transport`, so the sender
and the dispatcher run in unit tests against a scripted one, without sockets.
`HttpTransport` is the real one, over an aiohttp ClientSession.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
import msgspec

from relay.errors import NoAnswer


class Reply(msgspec.Struct, gc=False):
    status: int
    body: bytes
    retry_after: str | None = None


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
        """One request; raises NoAnswer when no HTTP answer came (connection error, timeout)."""
        ...


class HttpTransport:
    def __init__(self, session: aiohttp.ClientSession, *, timeout: float) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=self.timeout) as response:
                return Reply(response.status, await response.read(), response.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise NoAnswer(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

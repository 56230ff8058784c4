"""The Application's typed keys: what every handler and start-up step may find on `request.app`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from relay.server.console.history import History

if TYPE_CHECKING:
    from relay.runtime import Runtime


class ShutdownClock:
    """When the stop signal came: the clean-up steps share one `server.shutdown_grace`."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.started: float | None = None

    def begin(self) -> None:
        self.started = time.monotonic()

    def remaining(self) -> float:
        spent = time.monotonic() - self.started if self.started is not None else 0.0
        return self.grace - spent


RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
SHUTDOWN: web.AppKey[ShutdownClock] = web.AppKey("shutdown", ShutdownClock)
HISTORY: web.AppKey[History] = web.AppKey("console_history", History)
STARTED: web.RequestKey[float] = web.RequestKey("started", float)  # time.monotonic() when an ingest began

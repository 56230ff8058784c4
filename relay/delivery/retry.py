"""Pure delivery policy: what an upstream answer means, and how long to wait.

The same table shippers apply to the relay, the relay applies upstream:
retry 408, 429 and 5xx (but not 501) and transport errors; a whole-batch
refusal (400, 413, 422) is split to find the entries at fault; a bad key or
a wrong URL (401, 403, other 4xx, 501) pauses the sink and keeps its data.
"""

from __future__ import annotations

import email.utils
import enum
import random
import time
from collections.abc import Callable


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # temporary: the same batch again after a backoff
    REFUSED = "refused"  # upstream will never take this batch as it is: bisect it
    PAUSE = "pause"  # nothing will pass until an operator acts (key, URL): keep data, wait


REFUSED_STATUSES = frozenset({400, 413, 422})
RETRY_STATUSES = frozenset({408, 429})
MAX_RETRY_AFTER = 600.0  # seconds; a longer Retry-After is capped


def classify(status: int | None) -> Outcome:
    """status None means the request never got an answer (connection error, timeout)."""
    if status is None:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in RETRY_STATUSES or (status >= 500 and status != 501):
        return Outcome.RETRY
    if status in REFUSED_STATUSES:
        return Outcome.REFUSED
    return Outcome.PAUSE


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def backoff(attempt: int, *, initial: float, maximum: float, retry_after: float | None = None,
            rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter; `attempt` counts failures so far (0 = first retry).

    Half of the delay is fixed and half random, so that many relays retrying
    the same outage spread out, yet none hammers it at zero delay. A
    Retry-After from upstream wins when it asks for longer."""
    uniform: Callable[[float, float], float] = (rng or random).uniform
    ceiling = min(maximum, initial * float(2 ** min(attempt, 30)))
    delay = ceiling / 2 + uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay

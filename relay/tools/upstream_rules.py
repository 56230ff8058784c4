"""The upstream custom-log API's per-entry rules (SPEC §2), pure: no server, no I/O.

`validate_batch` splits a batch into the entries the upstream keeps and one
"Invalid log format: entry I: ..." line per entry it skips, as the mock answers
them inside a 200. Every field has a check in `FIELDS`; the timestamp is checked
apart, against a `Clock` window, in any form `parse_timestamp` reads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

DEFAULT_MAX_AGE = 30 * 86400.0  # how far in the past a timestamp may lie, seconds
DEFAULT_MAX_FUTURE = 86400.0  # how far ahead
MS_THRESHOLD = 2e10  # as pydantic reads Unix time: a larger number counts milliseconds
DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class Clock(msgspec.Struct, frozen=True):
    """The timestamp window: [now - max_age, now + max_future]."""

    pinned: float | None = None
    max_age: float = DEFAULT_MAX_AGE
    max_future: float = DEFAULT_MAX_FUTURE

    def now(self) -> float:
        return time.time() if self.pinned is None else self.pinned


Check = Callable[[Any], "str | None"]  # a field's value -> what is wrong with it, or None


def _string(limit: int) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        return f"must be at most {limit} characters" if len(value) > limit else None

    return check


def _number(low: int, high: float = math.inf, integer: bool = True) -> Check:
    kind = "an integer" if integer else "a number"
    text = f"must be {kind} " + (f"between {low} and {high}" if high < math.inf else f">= {low}")

    def check(value: Any) -> str | None:
        typed = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        return None if typed and low <= value <= high and value != math.inf else text

    return check


def _query_params(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return "must be an object of string to string"
    if any(len(key) > 100 for key in value):
        return "keys must be at most 100 characters"
    if any(len(item) > 1000 for item in value.values()):
        return "values must be at most 1000 characters"
    return None


# field -> (required, check); timestamp is checked apart as it needs the clock.
FIELDS: dict[str, tuple[bool, Check]] = {
    "method": (True, _string(10)),
    "host": (True, _string(255)),
    "path": (True, _string(2048)),
    "status_code": (True, _number(100, 599)),
    "ip": (True, _string(45)),
    "user_agent": (True, _string(1024)),
    "query_params": (False, _query_params),
    "referer": (False, _string(2048)),
    "bytes_sent": (False, _number(0)),
    "duration_ms": (False, _number(0, integer=False)),
}


def parse_timestamp(value: Any) -> float | None:
    """Unix seconds from Unix s or ms (a number or numeric string) or ISO 8601; else None."""
    try:
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                parsed = datetime.fromisoformat(value.strip())
                if parsed.tzinfo is None:  # naive: read as UTC
                    parsed = parsed.replace(tzinfo=UTC)
                return parsed.timestamp()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            return None
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    return number / 1000 if abs(number) > MS_THRESHOLD else number


def check_timestamp(value: Any, clock: Clock) -> str | None:
    seconds = parse_timestamp(value)
    if seconds is None:
        return "timestamp must be a Unix timestamp or an ISO 8601 string"
    now = clock.now()
    if now - clock.max_age <= seconds <= now + clock.max_future:
        return None
    return (f"timestamp out of reasonable range (older than {_human(clock.max_age)}"
            f" or more than {_human(clock.max_future)} ahead)")


def check_entry(entry: Any, clock: Clock) -> list[str]:
    """Every rule the entry breaks, each naming its field; empty when valid."""
    if not isinstance(entry, dict):
        return ["entry must be a JSON object"]
    problems = []
    if entry.get("timestamp") is None:
        problems.append("timestamp is required")
    elif (problem := check_timestamp(entry["timestamp"], clock)) is not None:
        problems.append(problem)
    for name, (required, check) in FIELDS.items():
        value = entry.get(name)  # null counts as absent
        if value is None:
            if required:
                problems.append(f"{name} is required")
        elif (problem := check(value)) is not None:
            problems.append(f"{name} {problem}")
    return problems


def validate_batch(entries: list[Any], clock: Clock) -> tuple[list[Any], list[str]]:
    """(valid entries, one "Invalid log format: entry I: ..." string per invalid one)."""
    valid, errors = [], []
    for index, entry in enumerate(entries):
        if problems := check_entry(entry, clock):
            errors.append(f"Invalid log format: entry {index}: {'; '.join(problems)}")
        else:
            valid.append(entry)
    return valid, errors


def _human(seconds: float) -> str:
    unit = next((u for u, size in DURATION_UNITS.items() if seconds >= size), "s")
    return f"{seconds / DURATION_UNITS[unit]:g}{unit}"

"""Value coercion shared by the compiled mappers: what "present", "a number" and "a string" mean.

A value is *missing* when it is None, "" or "-" (the placeholder nginx, Envoy
and ALB write for an empty column). Coercions never raise for a value of the
wrong kind: they return it unchanged so that validation names it
(`status_code: must be an integer 100..599, got "abc"`). Rule failures that
only the mapping can explain (a line that is not a combined log line) raise
`RuleError`, which the mapper turns into a per-record rejection.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from typing import Any


class RuleError(ValueError):
    """A mapping rule could not read a value; becomes a Rejection(field, reason, message)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def show(value: Any, limit: int = 80) -> str:
    """A value quoted for a message, cut to `limit` characters."""
    text = f'"{value}"' if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_missing(value: Any) -> bool:
    return value is None or value == "" or value == "-"


def first(value: Any) -> Any:
    """Arrays stand for their first element (Caddy's header arrays, OTel string[] attributes)."""
    while value.__class__ is list or value.__class__ is tuple:
        if not value:
            return None
        value = value[0]
    return None if is_missing(value) else value


def to_str(value: Any) -> Any:
    """Numbers become their decimal text; arrays their first element; others stay (validation names them)."""
    if value.__class__ is list or value.__class__ is tuple:
        value = first(value)
    if value.__class__ is str or value is None:
        return value
    if value.__class__ is int:
        return str(value)
    if value.__class__ is float:
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def to_int(value: Any) -> Any:
    """"200" -> 200, 200.0 -> 200; anything else unchanged."""
    if value.__class__ is str:
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if number.is_integer() else value
    if value.__class__ is float and value.is_integer():
        return int(value)
    if value.__class__ is list or value.__class__ is tuple:
        item = first(value)
        return None if item is None else to_int(item)
    return value


def to_num(value: Any) -> Any:
    """"0.25" -> 0.25, "12" -> 12; NaN and infinities unchanged so that validation rejects them."""
    if value.__class__ is str:
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    if value.__class__ is list or value.__class__ is tuple:
        item = first(value)
        return None if item is None else to_num(item)
    return value


def to_float(value: Any) -> Any:
    number = to_num(value)
    return float(number) if number.__class__ is int else number


def scaled(value: Any, factor: float, integer: bool) -> Any:
    """Multiply a number by a unit factor: whole numbers for sizes, µs resolution for durations."""
    number = to_num(value)
    if number.__class__ is not int and number.__class__ is not float:
        return number
    result = number * factor
    if integer:
        return round(result)
    if result.__class__ is float:
        result = round(result, 6)
        if result.is_integer() and number.__class__ is int:
            return int(result)
    return result


TIME_UNITS = {"s": 1000.0, "ms": 1.0, "us": 0.001, "µs": 0.001, "ns": 0.000001}  # -> milliseconds
SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def strip_ip_port(value: str) -> str:
    """`1.2.3.4:5678` -> `1.2.3.4`, `[::1]:80` -> `::1`; anything else unchanged."""
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def is_ip(value: str) -> bool:
    # inet_pton (C, a tenth of ipaddress's cost: every new client IP of a request goes through
    # here) takes only what ipaddress takes too; what it refuses (a zone id `fe80::1%eth0`,
    # anything malformed) is asked of ipaddress, which has the last word
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in value else socket.AF_INET, value)
        return True
    except (OSError, ValueError, UnicodeError):
        pass
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def span(seconds: float) -> str:
    """A duration as the config writes one ("30d", "12h", "90s"): the largest unit it fills exactly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"

"""Timestamp readers: any shape a log shipper writes -> Unix seconds (float).

Formatting back to ISO 8601 UTC is the schema's job (`relay.stages.schema.format_timestamp`);
this module only reads. Every reader is memoised per distinct text (records of
one batch share seconds), so the common case is one dict lookup.

What `auto` reads:
- numbers: Unix seconds, milliseconds, microseconds or nanoseconds, told apart by
  magnitude (< 1e11 s, < 1e14 ms, < 1e17 µs, else ns); numeric strings the same;
- ISO 8601 / RFC 3339 with `T`, `t` or a space, any fraction digits, `Z`, `±HH:MM`,
  `±HHMM`, `±HH` or no offset (read as UTC: Fluent Bit's `java_sql_timestamp`
  `2026-11-25 08:00:00.000000` is UTC);
- CLF `10/Oct/2000:13:55:36 -0700`;
- RFC 2822 / HTTP dates (`Wed, 25 Nov 2026 08:00:00 GMT`);
- MessagePack EventTime: ext type 0 objects (msgspec `Ext`, msgpack `ExtType`),
  `{"EventTime": [s, ns]}` and `[s, ns]`; msgpack `Timestamp`; `datetime`.
"""

from __future__ import annotations

import calendar
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from relay.stages.values import RuleError, show

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}  # fmt: skip
_MEMO_LIMIT = 16384
_MAX_TEXT = 64  # no timestamp is longer: longer text is refused before it is parsed or remembered
_memo: dict[Any, float] = {}  # text (or (pattern, text)) -> epoch, for what `auto` reads the same way
_clf_memo: dict[str, float] = {}
_EVENT_TIME = struct.Struct(">II")

UNIT_FORMATS = {"unix": 1.0, "unix_s": 1.0, "unix_ms": 1e-3, "unix_us": 1e-6, "unix_ns": 1e-9}
NAMED_FORMATS = ("auto", "iso8601", "clf", *UNIT_FORMATS)


def from_number(value: float) -> float:
    """Unix time in s, ms, µs or ns, told apart by magnitude -> seconds."""
    size = abs(value)
    if size < 1e11:
        return float(value)
    if size < 1e14:
        return value / 1e3
    if size < 1e17:
        return value / 1e6
    return value / 1e9


def _remember(key: Any, epoch: float, memo: dict[Any, float] = _memo) -> float:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = epoch
    return epoch


def _offset(text: str) -> float:
    """'', 'Z', '+01:00', '-0700', '+01' -> seconds east of UTC."""
    if not text or text in ("Z", "z", "UTC", "GMT"):
        return 0.0
    sign = text[0]
    digits = text[1:].replace(":", "")
    if sign not in "+-" or not digits.isdigit() or len(digits) not in (2, 4):
        raise ValueError(f"bad UTC offset {text!r}")
    seconds = int(digits[:2]) * 3600 + int(digits[2:] or 0) * 60
    return float(seconds if sign == "+" else -seconds)


def parse_iso(text: str) -> float:
    """ISO 8601 / RFC 3339 -> Unix seconds; raises ValueError."""
    epoch = _memo.get(text)
    if epoch is not None:
        return epoch
    if len(text) > _MAX_TEXT:
        raise ValueError("over-long timestamp")
    if len(text) >= 19 and text[4] == "-" and text[10] in "Tt " and text[13] == ":" and text[16] == ":":
        head = text[:10] + text[11:19]  # one memo entry per second, whatever the fraction and offset
        base = _memo.get(head)
        if base is None:
            moment = datetime(int(text[:4]), int(text[5:7]), int(text[8:10]),
                              int(text[11:13]), int(text[14:16]), int(text[17:19]))  # fmt: skip
            base = _remember(head, float(calendar.timegm(moment.timetuple())))
        rest = text[19:]
        fraction = 0.0
        if rest[:1] in (".", ","):
            end = 1
            while end < len(rest) and rest[end].isdigit():
                end += 1
            digits = rest[1:end][:9]
            fraction = int(digits) / 10 ** len(digits) if digits else 0.0
            rest = rest[end:]
        return _remember(text, base + fraction - _offset(rest.strip()))
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))  # dates alone, `T08:00Z`, ...
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _remember(text, parsed.timestamp())


def parse_clf(text: str) -> float:
    """`25/Nov/2026:09:00:00 +0100` (brackets allowed) -> Unix seconds; raises ValueError."""
    epoch = _clf_memo.get(text)
    if epoch is not None:
        return epoch
    if len(text) > _MAX_TEXT:
        raise ValueError("over-long timestamp")
    body = text.strip().strip("[]")
    when, _, zone = body.partition(" ")
    day, month, rest = when.split("/", 2)
    year, hour, minute, second = rest.split(":")
    whole, _, frac = second.partition(".")
    moment = datetime(int(year), _MONTHS[month[:1].upper() + month[1:3].lower()], int(day),
                      int(hour), int(minute), int(whole))  # fmt: skip  (checks every range)
    fraction = int(frac) / 10 ** len(frac) if frac.isdigit() else 0.0
    return _remember(text, calendar.timegm(moment.timetuple()) + fraction - _offset(zone.strip()), _clf_memo)


def _event_time(value: Any) -> float | None:
    code = getattr(value, "code", None)
    data = getattr(value, "data", None)
    if code == 0 and isinstance(data, (bytes, bytearray, memoryview)) and len(data) == 8:
        seconds, nanos = _EVENT_TIME.unpack(bytes(data))
        return float(seconds + nanos / 1e9)
    to_unix = getattr(value, "to_unix", None)  # msgpack.Timestamp
    return float(to_unix()) if callable(to_unix) else None


def to_epoch(value: Any) -> float:
    """Any timestamp shape (see the module docstring) -> Unix seconds; raises ValueError."""
    cls = value.__class__
    if cls is float or cls is int:
        return from_number(value)
    if cls is str:
        text = value.strip()
        if not text or len(text) > _MAX_TEXT:
            raise ValueError("empty or over-long timestamp")
        epoch = _memo.get(text)
        if epoch is not None:
            return epoch
        if text[0].isdigit() and len(text) >= 8 and text[4] == "-":
            return parse_iso(text)
        if text[0] in "-+.0123456789":
            try:
                return _remember(text, from_number(float(text)))
            except ValueError:
                pass
        if (len(text) > 3 and text[2] == "/") or text[:1] == "[":
            return parse_clf(text)
        if text[:1].isalpha():
            parsed = parsedate_to_datetime(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return _remember(text, parsed.timestamp())
        return parse_iso(text)
    if cls is dict and "EventTime" in value:
        return to_epoch(value["EventTime"])
    if cls is list or cls is tuple:
        if len(value) == 2 and all(part.__class__ is int for part in value):
            return float(value[0] + value[1] / 1e9)  # EventTime as [seconds, nanoseconds]
        if value:
            return to_epoch(value[0])
        raise ValueError("empty array")
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if cls is bool:
        raise ValueError("a boolean is not a timestamp")
    epoch = _event_time(value)
    if epoch is None:
        raise ValueError(f"cannot read a timestamp from {type(value).__name__}")
    return epoch


def _strptime_reader(fmt: str) -> Callable[[Any], float]:
    def read(value: Any) -> float:
        if value.__class__ is not str:
            return to_epoch(value)
        if len(value) > 4 * _MAX_TEXT:
            raise ValueError("over-long timestamp")
        key = (fmt, value)
        epoch = _memo.get(key)
        if epoch is None:
            parsed = datetime.strptime(value.strip(), fmt)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            epoch = _remember(key, parsed.timestamp())
        return epoch

    return read


def _unit_reader(factor: float) -> Callable[[Any], float]:
    def read(value: Any) -> float:
        if value.__class__ is float or value.__class__ is int:
            return value * factor
        if value.__class__ is str:
            try:
                return float(value) * factor
            except ValueError:
                pass
        return to_epoch(value)  # not a number after all: read whatever it is

    return read


def _strict(name: str, parse: Callable[[str], float]) -> Callable[[Any], float]:
    def read(value: Any) -> float:
        return parse(value) if value.__class__ is str else to_epoch(value)

    return read


def reader(fmt: str | None) -> Callable[[Any], float]:
    """The reader for a mapping's `format` option; raises RuleError when the value cannot be read."""
    inner: Callable[[Any], float]
    if fmt is None or fmt == "auto":
        inner = to_epoch
    elif fmt in UNIT_FORMATS:
        inner = _unit_reader(UNIT_FORMATS[fmt])
    elif fmt == "iso8601":
        inner = _strict(fmt, parse_iso)
    elif fmt == "clf":
        inner = _strict(fmt, parse_clf)
    elif "%" in fmt:
        inner = _strptime_reader(fmt)
    else:
        raise ValueError(f"unknown timestamp format {fmt!r}: use one of {', '.join(NAMED_FORMATS)} or a strptime pattern")
    label = fmt or "auto"

    def read(value: Any) -> float:
        try:
            return inner(value)
        except (ValueError, TypeError, KeyError, OverflowError, IndexError) as exc:
            raise RuleError("format", f'format "{label}" cannot read {show(value)} as a timestamp') from exc

    return read

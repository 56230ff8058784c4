"""The upstream log entry (SPEC §2) and its rules: validate, repair or reject.

Pure: no I/O. One policy (`ValidationPolicy`) decides what an invalid field
costs. In "repair" mode a fixable problem is fixed and counted by
"field:action" (over-long strings are truncated, methods upper-cased, ports
stripped from IPs, a missing user agent becomes "", an invalid optional field
is dropped); in "reject" mode the same problems reject the entry with a
`Rejection` naming the field and the rule. What no repair can fix (a missing
required field, a status outside 100..599, a timestamp out of range) rejects
in both modes.

`Validator.check` is the hot path the compiled mappers call once per record
with the mapped values (None = missing; the timestamp already turned into Unix
seconds by the mapping); `Validator.validate` takes a dict of fields as a user
or an upstream-form record would write them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from relay.models import Rejection
from relay.stages.values import is_ip, span, strip_ip_port
from relay.stages.values import show as _show

FIELDS = (
    "timestamp", "method", "host", "path", "status_code", "ip", "user_agent",
    "query_params", "referer", "bytes_sent", "duration_ms",
)  # fmt: skip
REQUIRED = FIELDS[:7]
OPTIONAL = FIELDS[7:]
# SPEC §2's length limits, in characters: the fast check, the rules and the repairs all read this table.
MAX_LENGTH = {"method": 10, "host": 255, "path": 2048, "ip": 45, "user_agent": 1024, "referer": 2048,
              "query_key": 100, "query_value": 1000}
_CHECKED_MAX = tuple(MAX_LENGTH[f] for f in ("host", "path", "user_agent", "referer"))  # check()'s fast path
QUERY_KEY_MAX = MAX_LENGTH["query_key"]
QUERY_VALUE_MAX = MAX_LENGTH["query_value"]
DEFAULT_MAX_AGE = 30 * 86400.0
DEFAULT_MAX_FUTURE = 86400.0
_CACHE_LIMIT = 65536  # entries per memo table before it is cleared
# The fraction of a timestamp as text, by table: `base + _MS_TAIL[ms]` costs a sixth of
# f"{base}.{ms:03d}Z" (a format spec is parsed on every call), and timestamps are per entry
_MS_TAIL = tuple(f".{n:03d}Z" for n in range(1000))  # milliseconds: ".120Z"
_US_HEAD = tuple(f".{n:03d}" for n in range(1000))  # microseconds: ".120" + "456Z"
_US_TAIL = tuple(f"{n:03d}Z" for n in range(1000))
_FLOAT_MAX = 1.7e308
_INT_MAX = 2**63 - 1  # bytes_sent beyond a signed 64-bit integer is garbage an upstream store may choke on
# methods taken as they are on the fast path; any other string goes through the rules (upper case, length)
_METHODS = frozenset(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "PURGE"]
)


class Entry(msgspec.Struct, omit_defaults=True, gc=False):
    """One upstream log entry, fields in the order of the SPEC §2 table."""

    timestamp: str
    method: str
    host: str
    path: str
    status_code: int
    ip: str
    user_agent: str
    query_params: dict[str, str] | UnsetType = UNSET
    referer: str | UnsetType = UNSET
    bytes_sent: int | UnsetType = UNSET
    duration_ms: float | int | UnsetType = UNSET


class ValidationPolicy(msgspec.Struct):
    on_invalid: Literal["repair", "reject"] = "repair"
    max_age: float = DEFAULT_MAX_AGE  # seconds; older timestamps are out of range
    max_future: float = DEFAULT_MAX_FUTURE  # seconds ahead of now
    now: float | None = None  # pinned clock (unix seconds) for tests and replays; None = time.time()


def format_timestamp(epoch: float, seconds: dict[int, str] | None = None) -> str:
    """Unix seconds -> ISO 8601 UTC: whole seconds as `...:00Z`, else ms or µs digits.
    `seconds` memoises the text of each whole second (records of a batch share seconds)."""
    sec = math.floor(epoch)
    micros = round((epoch - sec) * 1_000_000)
    if micros >= 1_000_000:
        sec, micros = sec + 1, micros - 1_000_000
    base = seconds.get(sec) if seconds is not None else None
    if base is None:
        base = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if seconds is not None:
            if len(seconds) >= _CACHE_LIMIT:
                seconds.clear()
            seconds[sec] = base
    if not micros:
        return base + "Z"
    if micros % 1000 == 0:
        return base + _MS_TAIL[micros // 1000]
    return base + _US_HEAD[micros // 1000] + _US_TAIL[micros % 1000]


class _Invalid(Exception):
    """A field that fails its rule: (field, rule name, message)."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.field, self.reason, self.message = field, reason, message


class Validator:
    """Applies SPEC §2 under one `ValidationPolicy`; cheap to call per record."""

    def __init__(self, policy: ValidationPolicy | None = None) -> None:
        self.policy = policy or ValidationPolicy()
        self.repair = self.policy.on_invalid == "repair"
        self.repairs: dict[str, int] = {}  # running totals of repairs made through validate()
        self._iso: dict[float, str] = {}  # epoch -> ISO string, for whole seconds and repeated values
        self._seconds: dict[int, str] = {}  # whole second -> "YYYY-MM-DDTHH:MM:SS"
        self._ips: set[str] = set()  # strings known to be valid IPs as they are
        self.lo = self.hi = 0.0
        self.check: Callable[..., Entry | Rejection] = self._make_check(0.0, 0.0)
        self.begin()

    def begin(self) -> None:
        """Refresh the timestamp window (and rebind `check` to it); mappers call it once per batch."""
        now = self.policy.now if self.policy.now is not None else time.time()
        lo, hi = now - self.policy.max_age, now + self.policy.max_future
        if lo != self.lo or hi != self.hi:  # a pinned clock keeps its window (and closure)
            self.lo, self.hi = lo, hi
            self.check = self._make_check(lo, hi)

    # -- hot path -------------------------------------------------------------------------

    def fast_parts(self) -> tuple[float, float, Callable[..., Any], Callable[..., Any], Callable[[float], str], set[str]]:
        """What `check`'s fast path reads, for a compiled mapping that runs it inline
        (relay.mapping.fused): the window as of the last `begin()`, and the memo tables."""
        return self.lo, self.hi, self._iso.get, self._seconds.get, self._iso_of, self._ips

    def _make_check(self, lo: float, hi: float) -> Callable[..., Entry | Rejection]:
        """`check(index, ts, method, host, path, status, ip, ua, qp, referer, nbytes, duration, repairs)`:
        the mapped values (None = missing, ts in Unix seconds) -> an Entry, or a Rejection; repairs
        counted in `repairs`. A closure, so the common case reads only locals: every value already
        valid (and its timestamp and IP seen before) builds the Entry at once; anything else goes
        through the field-by-field rules of `_slow`."""
        iso_get, ips, slow, methods, unset = self._iso.get, self._ips, self._slow, _METHODS, UNSET
        iso_of, second_get = self._iso_of, self._seconds.get
        host_max, path_max, ua_max, referer_max = _CHECKED_MAX

        def check(
            index: int, ts: Any, method: Any, host: Any, path: Any, status: Any, ip: Any,
            ua: Any, qp: Any, referer: Any, nbytes: Any, duration: Any, repairs: dict[str, int],
        ) -> Entry | Rejection:  # fmt: skip
            iso = iso_get(ts) if ts.__class__ is float else None
            if iso is None and ts.__class__ is float and lo <= ts <= hi:  # a new fraction of a known second?
                sec = int(ts)
                micros = round((ts - sec) * 1_000_000)
                base = second_get(sec)
                if base is None or not 0 < micros < 1_000_000:
                    iso = iso_of(ts)
                elif micros % 1000:
                    iso = base + _US_HEAD[micros // 1000] + _US_TAIL[micros % 1000]
                else:
                    iso = base + _MS_TAIL[micros // 1000]
            if (
                iso is not None
                and lo <= ts <= hi
                and method.__class__ is str and method in methods
                and host.__class__ is str and 0 < len(host) <= host_max
                and path.__class__ is str and 0 < len(path) <= path_max
                and status.__class__ is int and 100 <= status <= 599
                and ip.__class__ is str and ip in ips
                and ua.__class__ is str and len(ua) <= ua_max
                and (referer is None or (referer.__class__ is str and len(referer) <= referer_max))
                and (nbytes is None or (nbytes.__class__ is int and 0 <= nbytes <= _INT_MAX))
                and (duration is None or ((duration.__class__ is float or duration.__class__ is int)
                                          and 0 <= duration <= _FLOAT_MAX))
                and (qp is None or qp.__class__ is Query or _query_ok(qp))
            ):  # fmt: skip
                return Entry(
                    iso, method, host, path, status, ip, ua,
                    unset if qp is None or not qp else qp,
                    unset if referer is None else referer,
                    unset if nbytes is None else nbytes,
                    unset if duration is None else duration,
                )  # fmt: skip
            return slow(index, [ts, method, host, path, status, ip, ua, qp, referer, nbytes, duration], repairs)

        return check

    # -- dict form ------------------------------------------------------------------------

    def validate(self, fields: dict[str, Any], index: int, repairs: dict[str, int] | None = None) -> Entry | Rejection:
        """Fields as written in upstream form (timestamp Unix or ISO 8601) -> Entry or Rejection."""
        counts = self.repairs if repairs is None else repairs
        if self.policy.now is None:
            self.begin()
        values = [_blank_to_none(fields.get(name)) for name in FIELDS]
        if values[0] is not None and values[0].__class__ is not bool:
            from relay.stages.timestamps import (
                to_epoch,  # the timestamp readers live with the mapping
            )

            try:
                values[0] = to_epoch(values[0])
            except (ValueError, TypeError, OverflowError):
                pass  # left as it is: _timestamp names it
        return self._slow(index, values, counts)

    # -- the rules, one field at a time ------------------------------------------------------

    def _slow(self, index: int, values: list[Any], repairs: dict[str, int]) -> Entry | Rejection:
        fixes: list[str] = []
        try:
            out = [
                self._timestamp(values[0]),
                self._method(values[1], fixes),
                self._string("host", values[2], fixes),
                self._string("path", values[3], fixes),
                self._status(values[4]),
                self._ip(values[5], fixes),
                self._user_agent(values[6], fixes),
                self._optional("query_params", values[7], self._query, fixes),
                self._optional("referer", values[8], self._referer, fixes),
                self._optional("bytes_sent", values[9], _bytes_sent, fixes),
                self._optional("duration_ms", values[10], _duration, fixes),
            ]
        except _Invalid as bad:
            return Rejection(index, bad.field, bad.reason, bad.message)
        for key in fixes:
            repairs[key] = repairs.get(key, 0) + 1
        return Entry(*out)

    def _fix(self, fixes: list[str], field: str, action: str, reason: str, message: str) -> None:
        """Record a repair, or in reject mode reject with the rule that was broken."""
        if not self.repair:
            raise _Invalid(field, reason, message)
        fixes.append(f"{field}:{action}")

    def _timestamp(self, value: Any) -> str:
        if value is None:
            raise _Invalid("timestamp", "required", "required field is missing")
        epoch = value
        if epoch.__class__ is not float and epoch.__class__ is not int:
            raise _Invalid("timestamp", "format", f"must be a Unix or ISO 8601 timestamp, got {_show(value)}")
        if not self.lo <= epoch <= self.hi:
            when = "in the future" if epoch > self.hi else "too old"
            raise _Invalid(
                "timestamp", "out_of_range",
                f"out of range: {_iso_or_repr(epoch)} is {when} (accepted: {span(self.policy.max_age)} back, "
                f"{span(self.policy.max_future)} ahead)",
            )  # fmt: skip
        return self._iso.get(epoch) or self._iso_of(epoch)

    def _iso_of(self, epoch: float) -> str:
        """Format (in range) `epoch`; whole seconds are remembered, fractions only built from their second."""
        iso = format_timestamp(epoch, self._seconds)
        if epoch == int(epoch):
            if len(self._iso) >= _CACHE_LIMIT:
                self._iso.clear()
            self._iso[epoch] = iso
        return iso

    def _method(self, value: Any, fixes: list[str]) -> str:
        text = self._string("method", value, fixes)
        upper = text.upper()
        if upper != text:
            self._fix(fixes, "method", "uppercased", "uppercase", f"must be upper case, got {_show(text)}")
        return upper

    def _string(self, field: str, value: Any, fixes: list[str]) -> str:
        if value is None or value == "":
            if field == "host":
                raise _Invalid(
                    "host", "required",
                    "required field is missing: the record carries no virtual host; set `host` on the source",
                )  # fmt: skip
            raise _Invalid(field, "required", "required field is missing")
        if value.__class__ is not str:
            raise _Invalid(field, "type", f"must be a string, got {_show(value)}")
        return self._truncated(field, value, fixes)

    def _truncated(self, field: str, value: str, fixes: list[str]) -> str:
        limit = MAX_LENGTH[field]
        if len(value) > limit:
            self._fix(fixes, field, "truncated", "max_length", f"longer than {limit} characters ({len(value)})")
            return value[:limit]
        return value

    def _status(self, value: Any) -> int:
        if value is None:
            raise _Invalid("status_code", "required", "required field is missing")
        status = _as_int(value)
        if status is None or not 100 <= status <= 599:
            raise _Invalid("status_code", "range", f"must be an integer 100..599, got {_show(value)}")
        return status

    def _ip(self, value: Any, fixes: list[str]) -> str:
        if value is None or value == "":
            raise _Invalid("ip", "required", "required field is missing")
        if value.__class__ is not str:
            raise _Invalid("ip", "type", f"must be a string, got {_show(value)}")
        text = value
        if text in self._ips:
            return text
        bare = strip_ip_port(text)
        if len(bare) > MAX_LENGTH["ip"] or not is_ip(bare):  # an IP cut short is a wrong IP: never truncated
            raise _Invalid("ip", "invalid_ip", f"must be an IP address, got {_show(value)}")
        if bare != text:
            self._fix(fixes, "ip", "port_stripped", "invalid_ip", f"must be an IP address without a port, got {_show(text)}")
        elif len(self._ips) < _CACHE_LIMIT:
            self._ips.add(text)
        return bare

    def _user_agent(self, value: Any, fixes: list[str]) -> str:
        if value is None:
            self._fix(fixes, "user_agent", "filled_empty", "required", "required field is missing")
            return ""
        return "" if value == "" else self._string("user_agent", value, fixes)

    def _optional(self, field: str, value: Any, rule: Any, fixes: list[str]) -> Any:
        if value is None:
            return UNSET
        try:
            return rule(value, fixes)
        except _Invalid as bad:
            self._fix(fixes, field, "dropped", bad.reason, bad.message)
            return UNSET

    def _referer(self, value: Any, fixes: list[str]) -> str:
        if value.__class__ is not str:
            raise _Invalid("referer", "type", f"must be a string, got {_show(value)}")
        return self._truncated("referer", value, fixes)

    def _query(self, value: Any, fixes: list[str]) -> Any:
        if not isinstance(value, dict):
            raise _Invalid("query_params", "type", f"must be an object of strings, got {_show(value)}")
        if not value:
            return UNSET
        out: dict[str, str] = {}
        for key, val in value.items():
            key = key if key.__class__ is str else str(key)
            if val.__class__ is not str:
                if val is None or isinstance(val, (dict, list)):
                    raise _Invalid("query_params", "type", f"value of {_show(key)} must be a string, got {_show(val)}")
                self._fix(fixes, "query_params", "coerced", "type", f"value of {_show(key)} must be a string, got {_show(val)}")
                val = "true" if val is True else "false" if val is False else str(val)
            if len(key) > QUERY_KEY_MAX or len(val) > QUERY_VALUE_MAX:
                self._fix(
                    fixes, "query_params", "truncated", "max_length",
                    f"key {_show(key[:40])} or its value is over {QUERY_KEY_MAX}/{QUERY_VALUE_MAX} characters",
                )  # fmt: skip
                key, val = key[:QUERY_KEY_MAX], val[:QUERY_VALUE_MAX]
            out[key] = val
        return out


class Query(dict[str, str]):
    """A parsed query string whose keys and values are all strings within the limits above.

    The URL parsers build one (`relay.mapping.parsers.parse_query`) and memoise it, so the
    same object goes into every entry with that query: the checks take it by its class
    without looking inside (`_query_ok` walked every pair of every entry's dict: 1.5 µs
    a query on the bench), and nothing may change it in place. A repair builds a new dict."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a parsed query is shared between entries: copy it with dict() to change it")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _read_only

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and copy without __setitem__
        return (Query, (dict(self),))

    @staticmethod
    def within_limits(pairs: dict[str, str]) -> bool:
        return all(len(key) <= QUERY_KEY_MAX and len(val) <= QUERY_VALUE_MAX for key, val in pairs.items())


def _query_ok(qp: Any) -> bool:
    if qp.__class__ is not dict:
        return False
    for key, val in qp.items():
        if val.__class__ is not str or len(key) > QUERY_KEY_MAX or len(val) > QUERY_VALUE_MAX:
            return False
    return True


def _blank_to_none(value: Any) -> Any:
    return None if value is None or value == "" or value == "-" else value


def _as_int(value: Any) -> int | None:
    if value.__class__ is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _bytes_sent(value: Any, fixes: list[str]) -> int:
    number = _as_int(value)
    if number is None or not 0 <= number <= _INT_MAX:
        raise _Invalid("bytes_sent", "range", f"must be an integer >= 0 (64-bit), got {_show(value)}")
    return number


def _duration(value: Any, fixes: list[str]) -> float | int:
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number.__class__ not in (int, float) or not 0 <= number <= _FLOAT_MAX:
        raise _Invalid("duration_ms", "range", f"must be a number >= 0, got {_show(value)}")
    return number


def _iso_or_repr(epoch: float) -> str:
    try:
        return format_timestamp(epoch)
    except (OverflowError, ValueError, OSError):
        return repr(epoch)

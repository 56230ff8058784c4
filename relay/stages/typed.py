"""The fast route for bodies already in upstream form: JSON straight into `Entry` values.

A mapping that copies every field of SPEC §2 from the key of the same name (`profound`)
needs no per-field Python: msgspec decodes a JSON array (or NDJSON) of objects straight
into `Entry` Structs whose types and `Meta` constraints are SPEC §2's rules, in C. What
C cannot say is checked in one short loop: the timestamp is in range and written the way
`format_timestamp` would write it (zero fraction digits dropped as it drops them), the IP is an IP
without a port, and no text field is the "-" placeholder (which means missing).

The route is all or nothing, and only ever says yes for a body the per-record path
would accept untouched: no rejection, no repair, no filtering. Anything else (a field
of another type, a bad entry, a number for a timestamp, a repair to make) returns None,
and the caller runs the body through the per-record path, which names the index, field
and rule exactly as it always has. So the fast route changes cost, never outcome.

`check(..., exact=True)` also says whether the body's JSON array already says what the
relay would send: no key outside SPEC §2 (decoded with unknown keys refused, and only
when one is found decoded again as usual). Such a body can go upstream as the client
compressed it (pipeline.Prepared.as_received): the same values, with the client's
spacing, escapes, key order and fraction digits (`.120000Z` is the instant `.120Z` is).
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from msgspec import UNSET, Meta, UnsetType

from relay.stages.schema import _INT_MAX, _METHODS, MAX_LENGTH, Validator
from relay.stages.schema import Entry as _Entry
from relay.stages.values import is_ip, strip_ip_port

_CACHE_LIMIT = 65536
_FLOAT_MAX = 1.7e308
# What format_timestamp writes: whole seconds, then `Z` or 3 or 6 fraction digits and `Z`.
# Checked in Python, memoised: a Meta pattern would run a regex per entry (~half the decode).
_SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", re.ASCII)
_TAIL = re.compile(r"Z|\.\d{3}Z|\.\d{6}Z", re.ASCII)
_LAST_EXACT = 2**32  # below it a float holds an epoch to well under half a microsecond


# SPEC §2's lengths, from the one table in schema.py; min_length=1: "" means missing
_Host = Annotated[str, Meta(min_length=1, max_length=MAX_LENGTH["host"])]
_Path = Annotated[str, Meta(min_length=1, max_length=MAX_LENGTH["path"])]
_Ip = Annotated[str, Meta(min_length=1, max_length=MAX_LENGTH["ip"])]
_Agent = Annotated[str, Meta(min_length=1, max_length=MAX_LENGTH["user_agent"])]
_Referer = Annotated[str, Meta(min_length=1, max_length=MAX_LENGTH["referer"])]
_QueryKey = Annotated[str, Meta(max_length=MAX_LENGTH["query_key"])]
_QueryValue = Annotated[str, Meta(max_length=MAX_LENGTH["query_value"])]
_Query = Annotated[dict[_QueryKey, _QueryValue], Meta(min_length=1)]  # {} goes upstream as no query
_Status = Annotated[int, Meta(ge=100, le=599)]
_Bytes = Annotated[int, Meta(ge=0, le=_INT_MAX)]
_Duration = Annotated[float, Meta(ge=0, le=_FLOAT_MAX)] | Annotated[int, Meta(ge=0)]
_Method = Literal[tuple(sorted(_METHODS))]  # type: ignore[valid-type]  # the methods taken as they are


class Upstream(_Entry, omit_defaults=True, gc=False):
    """An `Entry` as decoded from upstream form, its fields held to SPEC §2 by their types.

    Same fields, order and encoding as `Entry` (a subclass, so everything that takes an Entry
    takes it); "" (missing) fails `min_length`, an empty query object fails `min_length` too."""

    timestamp: str
    method: _Method  # type: ignore[valid-type]
    host: _Host
    path: _Path
    status_code: _Status
    ip: _Ip
    user_agent: _Agent
    query_params: _Query | UnsetType = UNSET
    referer: _Referer | UnsetType = UNSET
    bytes_sent: _Bytes | UnsetType = UNSET
    duration_ms: _Duration | UnsetType = UNSET


class _Exact(Upstream, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """An `Upstream` with no key outside SPEC §2: its JSON can be sent on as it is."""


_ARRAY = msgspec.json.Decoder(list[Upstream])
_LINES = msgspec.json.Decoder(Upstream)
_EXACT = msgspec.json.Decoder(list[_Exact])
_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


class Typed(NamedTuple):
    entries: list[Any] | None  # of Upstream (an Entry); None: take the per-record path
    as_sent: bool  # the body's JSON array is already what the relay sends (check(exact=True))


class TypedRoute:
    """The fast route of one passthrough source; keeps its per-second and per-IP memos."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}  # "YYYY-MM-DDTHH:MM:SS" -> Unix seconds
        self._tails: set[str] = set()  # what follows the seconds, seen well-formed: "Z", ".123Z", ...

    def entries(self, data: bytes, *, lines: bool, validator: Validator) -> list[_Entry] | None:
        """`data` (a JSON array, or NDJSON when `lines`) as entries, or None: take the per-record path."""
        return self.check(data, lines=lines, validator=validator).entries

    def check(self, data: bytes, *, lines: bool, validator: Validator, exact: bool = False) -> Typed:
        """`entries`, and with `exact` (a JSON array) whether the body is as the relay would send it."""
        found: list[Any]
        try:
            if exact and not lines:
                try:
                    found = _EXACT.decode(data)
                except msgspec.ValidationError:  # a key outside the schema, or a bad entry: as usual
                    exact, found = False, _ARRAY.decode(data)
            else:
                exact, found = False, _LINES.decode_lines(data) if lines else _ARRAY.decode(data)
        except _ERRORS:
            return _NOT_TYPED
        if not found:
            return _NOT_TYPED
        validator.begin()
        lo, hi = validator.lo, validator.hi - 1.0  # a second is in range when all of it is
        seconds, second_of, tails, ips = self._seconds, self._second, self._tails, validator._ips
        for entry in found:
            ts = entry.timestamp
            base = seconds.get(ts[:19])
            if base is None:
                base = second_of(ts[:19])
                if base is None:
                    return _NOT_TYPED
            if ts[19:] not in tails:
                if not _TAIL.fullmatch(ts, 19):
                    return _NOT_TYPED
                if len(tails) >= _CACHE_LIMIT:
                    tails.clear()
                tails.add(ts[19:])
            if not lo <= base <= hi:  # out of range, or at the window's edge: the rules say which
                return _NOT_TYPED
            if ts[-4:] == "000Z":  # the same instant as it came: a body sent as it came may keep it as it is
                entry.timestamp = _written_back(ts)
            ip = entry.ip
            if ip not in ips:
                if not _bare_ip(ip):
                    return _NOT_TYPED
                if len(ips) >= _CACHE_LIMIT:
                    ips.clear()
                ips.add(ip)
            if entry.host == "-" or entry.path == "-" or entry.user_agent == "-" or entry.referer == "-":
                return _NOT_TYPED
        return Typed(found, exact)

    @staticmethod
    def again(data: bytes) -> list[Any]:
        """The entries of a JSON array `check(exact=True)` said is as sent, decoded once more: for a
        commit that wants them encoded after pipeline.prepare let them go (rare: a second sink
        that cuts batches of another size, or a sink stopped meanwhile). Not checked again, so
        the window moving on since cannot turn an accepted entry away."""
        found = _EXACT.decode(data)
        for entry in found:
            if entry.timestamp[-4:] == "000Z":
                entry.timestamp = _written_back(entry.timestamp)
        return found

    def _second(self, head: str) -> float | None:
        if not _SECOND.fullmatch(head):
            return None
        try:
            moment = datetime(int(head[:4]), int(head[5:7]), int(head[8:10]),
                              int(head[11:13]), int(head[14:16]), int(head[17:19]))  # fmt: skip
        except ValueError:
            return None
        epoch = float(calendar.timegm(moment.timetuple()))
        if not 0 <= epoch < _LAST_EXACT:
            return None
        if len(self._seconds) >= _CACHE_LIMIT:
            self._seconds.clear()
        self._seconds[head] = epoch
        return epoch


_NOT_TYPED = Typed(None, False)


def _written_back(ts: str) -> str:
    """A well-formed timestamp ending in `000Z` as format_timestamp writes it: `.120000Z` -> `.120Z`, `.000Z` -> `Z`."""
    return ts[:19] + "Z" if len(ts) == 24 or ts[20:23] == "000" else ts[:23] + "Z"


def _bare_ip(text: str) -> bool:
    """An IP as the per-record path keeps it without a repair: no port, no brackets."""
    return strip_ip_port(text) == text and is_ip(text)

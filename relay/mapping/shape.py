"""The keys a mapping reads, as a msgspec Struct: JSON records decoded with only those keys.

Decoding a record into a dict builds a Python string (and a hash-table slot) for every key
and value, also the ones no rule reads (Fluent Bit's `user`, an app's trace ids). When every
record path of a mapping is one plain key (`path`, `@timestamp`, not `a.b` or `a[0]`), the
mapping knows the whole set in advance: msgspec decodes each object straight into a Struct
holding just those keys (C skips the others), and the compiled mapping reads attributes
instead of calling `dict.get`.

The Struct types every key as `Any` and defaults it to None, so it takes every JSON object
the dict path takes and gives each rule the same value `record.get(key)` would: nothing about
the outcome changes. One exception is tried first: a key read only as a plain integer field
(`status_code = "code"`, `bytes_sent = "size"`: no parse, type, scale or unescape, not in a
drop rule or the line) is typed `int` and decoded with msgspec's lax conversion, which turns
"200" into 200 in C (`int()` of a short string costs ~250 ns here, a table lookup ~100). What
that conversion accepts it reads as `to_int` does ("200", "2e2", "200.0", 200.0); anything else
("-", "", " 200", null, true, 200.5) fails the body's decode, which is then decoded again with
every key `Any`, as before. After such a failure the next few bodies skip the typed try, so a
source whose sizes are often "-" (Apache's `%b`) pays for a failed decode one body in
`_BACKOFF`. A body where some item is not an object (or which is not one JSON
array, or NDJSON of objects) fails to decode here and takes the dict path, which names the
record at fault as it always has. A mapping with a nested or dynamic path has no shape and
always takes the dict path.

A mapping with a lane (lane.py) tries a stricter Struct before that one: the keys its rules
read first as text are also typed `str`, so a body whose records all have text there (a JSON
null, number or object fails the decode in C) gives records the compiled lane can take as they
are. The Structs are tried strictest first, each with its own backoff, and all of them put
their fields in the order the first body has its keys (msgspec looks for the next field first).
"""

from __future__ import annotations

from typing import Any

import msgspec

from relay.mapping import lane as lanes
from relay.mapping.spec import KIND, MappingSpec

_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)
_BACKOFF = 16  # bodies decoded loose after a typed decode failed


def record_keys(spec: MappingSpec) -> list[str] | None:
    """The record keys `spec` reads, in first-use order; None when some path is not one plain key."""
    paths = [path for rule in spec.fields.values() if rule for source in rule.sources for path in source.paths]
    if spec.line is not None:
        paths += [*spec.line.paths, *spec.line.unless]
    paths += [cond.path for cond in spec.drop_if if cond.path is not None]
    keys: list[str] = []
    for path in paths:
        if path.kind != "record":
            continue  # $tag, $header, $time, $line: not read from the record
        if not path.simple:
            return None
        key = str(path.steps[0])
        if key not in keys:
            keys.append(key)
    return keys


def int_keys(spec: MappingSpec) -> set[str]:
    """The plain record keys read only as a plain integer field (no parse, type, scale, unescape)."""
    plain: dict[str, bool] = {}
    for target, rule in spec.fields.items():
        for source in rule.sources if rule else ():
            as_int = (KIND.get(target) == "int" and source.parse is None and source.type is None
                      and source.scale in (None, 1) and not source.unescape)
            for path in source.paths:
                if path.simple:
                    key = str(path.steps[0])
                    plain[key] = plain.get(key, True) and as_int
    raw = [*spec.line.paths, *spec.line.unless] if spec.line is not None else []
    raw += [cond.path for cond in spec.drop_if if cond.path is not None]
    for path in raw:  # a drop rule or the line sees the value as sent
        if path.simple:
            plain[str(path.steps[0])] = False
    return {key for key, ok in plain.items() if ok}


class RecordShape:
    """A mapping's record Struct and its decoders. `attrs[key]` is the attribute that holds `key`."""

    def __init__(self, name: str, keys: list[str], ints: set[str] | None = None,
                 lane: lanes.Lane | None = None) -> None:
        self.name = name
        self.keys = keys
        # attributes k0, k1, ...: any JSON key (`@timestamp`, `user-agent`) is a valid one this way
        self.attrs = {key: f"k{n}" for n, key in enumerate(keys)}
        self.ints = set(ints or ()) & set(keys)
        self.lane = lane
        self._ordered = False  # the Structs' field order taken from the first body yet?
        self._build(keys)

    def _build(self, order: list[str]) -> None:
        """The Structs and decoders, fields in `order`. msgspec tries the field after the last one
        first, so a Struct in the order a shipper writes its keys decodes faster (~13 % on Fluent
        Bit's records); the attributes, and so the compiled mapping, are the same in any order."""
        self.order = order
        self.type = self._struct(self.name, {})
        self._array = msgspec.json.Decoder(list[self.type])  # type: ignore[name-defined]
        self._lines = msgspec.json.Decoder(self.type)
        # the tries, strictest first: (array decoder, NDJSON decoder); a failure skips its try for _BACKOFF bodies
        self._tries: list[tuple[Any, Any]] = []
        self.strict_type: Any = None  # the lane's records (lane.py)
        if self.lane is not None:
            self.strict_type = self._struct(f"{self.name}_strict", {**dict.fromkeys(self.ints, int),
                                                                    **dict.fromkeys(self.lane.strings, str)})
            self._tries.append(self._lax(self.strict_type))
        if self.ints:
            typed = self._struct(f"{self.name}_typed", dict.fromkeys(self.ints, int))
            self._tries.append(self._lax(typed))
        self._skips = [0] * len(self._tries)

    def _order_of(self, data: bytes) -> list[str]:
        """The keys in the order the first record of `data` has them (a guess, good enough for speed)."""
        head = data[:8192]
        found = {key: head.find(msgspec.json.encode(key)) for key in self.keys}
        return sorted(self.keys, key=lambda key: (found[key] < 0, found[key]))

    def _struct(self, name: str, types: dict[str, Any]) -> Any:
        fields = [(self.attrs[key], types.get(key, Any), msgspec.field(default=None, name=key)) for key in self.order]
        # gc=False: a decoded record can hold containers but never a reference back to itself
        return msgspec.defstruct(f"{name}_record", fields, gc=False)

    @staticmethod
    def _lax(struct: Any) -> tuple[Any, Any]:
        # lax: "200" -> 200 for the int keys; a `str` key takes only a JSON string either way
        return (msgspec.json.Decoder(list[struct], strict=False),
                msgspec.json.Decoder(struct, strict=False))

    def decode(self, data: bytes, *, lines: bool) -> list[Any] | None:
        """`data` (one JSON array, or NDJSON when `lines`) as records, or None: take the dict path."""
        if not self._ordered:
            self._ordered = True
            order = self._order_of(data)
            if order != self.order:
                self._build(order)
        for n, (array, line) in enumerate(self._tries):
            if self._skips[n]:
                self._skips[n] -= 1
                continue
            try:
                records: list[Any] = line.decode_lines(data) if lines else array.decode(data)
                return records
            except _ERRORS:
                self._skips[n] = _BACKOFF
        try:
            return self._lines.decode_lines(data) if lines else self._array.decode(data)
        except _ERRORS:
            return None


def record_shape(spec: MappingSpec) -> RecordShape | None:
    keys = record_keys(spec)
    if keys is None:
        return None
    ints = int_keys(spec)
    return RecordShape(spec.name, keys, ints, lanes.plan(spec, ints))

"""The keys a mapping reads, as a msgspec Struct: JSON records decoded with only those keys.

Decoding a record into a dict builds a Python string (and a hash-table slot) for every key
and value, also the ones no rule reads (Fluent Bit's `user`, an app's trace ids). When every
record path of a mapping is one plain key (`path`, `@timestamp`, not `a.b` or `a[0]`), the
mapping knows the whole set in advance: msgspec decodes each object straight into a Struct
holding just those keys (C skips the others), and the compiled mapping reads attributes
instead of calling `dict.get`.

The Struct types every key as `Any` and defaults it to None, so it takes every JSON object
the dict path takes and gives each rule the same value `record.get(key)` would: nothing about
the outcome changes. A body where some item is not an object (or which is not one JSON
array, or NDJSON of objects) fails to decode here and takes the dict path, which names the
record at fault as it always has. A mapping with a nested or dynamic path has no shape and
always takes the dict path.
"""

from __future__ import annotations

from typing import Any

import msgspec

from relay.mapping.spec import MappingSpec

_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


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


class RecordShape:
    """A mapping's record Struct and its decoders. `attrs[key]` is the attribute that holds `key`."""

    def __init__(self, name: str, keys: list[str]) -> None:
        self.keys = keys
        # attributes k0, k1, ...: any JSON key (`@timestamp`, `user-agent`) is a valid one this way
        self.attrs = {key: f"k{n}" for n, key in enumerate(keys)}
        fields = [(attr, Any, msgspec.field(default=None, name=key)) for key, attr in self.attrs.items()]
        # gc=False: a decoded record can hold containers but never a reference back to itself
        self.type = msgspec.defstruct(f"{name}_record", fields, gc=False)
        self._array = msgspec.json.Decoder(list[self.type])  # type: ignore[name-defined]
        self._lines = msgspec.json.Decoder(self.type)

    def decode(self, data: bytes, *, lines: bool) -> list[Any] | None:
        """`data` (one JSON array, or NDJSON when `lines`) as records, or None: take the dict path."""
        try:
            return self._lines.decode_lines(data) if lines else self._array.decode(data)
        except _ERRORS:
            return None


def record_shape(spec: MappingSpec) -> RecordShape | None:
    keys = record_keys(spec)
    return RecordShape(spec.name, keys) if keys is not None else None

"""Structs that cross stage boundaries. Everything here is plain data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec


class Rejection(msgspec.Struct, frozen=True, gc=False):
    """Why the record at `index` in a request did not become an entry."""

    index: int
    field: str | None
    reason: str  # short machine-readable rule name, e.g. "max_length", "required", "invalid_json"
    message: str  # human sentence naming the field and the rule

    def render(self) -> str:
        where = f"$[{self.index}]" + (f".{self.field}" if self.field else "")
        return f"{where}: {self.message}"


class Decoded(msgspec.Struct, gc=False):
    """A request body turned into records (any JSON value per record; mappings expect objects)."""

    records: list[Any]
    format: str  # "json", "ndjson", "json_stream", "msgpack", "gelf", "text", ...
    # Records that could not be decoded on their own (e.g. one bad NDJSON line).
    # Their indexes count in the same sequence as `records` would have had.
    errors: list[Rejection] = []
    # Set only when `errors` is not empty: the original index of each entry of `records`,
    # so that rejections found later still name the record's place in the request.
    indexes: list[int] | None = None
    # Set only with `errors`: what each of them was, for the rejected-records store: the bytes of
    # the bad line or object, a decoded value that is not a record, or None when nothing is left.
    bad: list[Any] = []
    # What a native protocol's answer needs besides the rejections (e.g. each `_bulk` item's
    # action and index); None for plain HTTP. Opaque to the pipeline.
    meta: Any = None


class RecordContext(msgspec.Struct, gc=False):
    """What a mapping may read besides the record itself."""

    source: str
    tag: str | None = None
    headers: Mapping[str, str] = {}
    host: str | None = None  # the source's `host` setting: fills entries whose logs carry none


class MapResult(msgspec.Struct, gc=False):
    """Outcome of mapping + validating one request's records."""

    entries: list[Any]  # schema.Entry values, ready to encode
    rejections: list[Rejection]
    filtered: int = 0  # dropped on purpose by drop_if rules
    repairs: dict[str, int] = {}  # "field:rule" -> count


class IngestResult(msgspec.Struct, gc=False):
    """What a 200 answer says."""

    accepted: int
    rejected: int
    filtered: int
    errors: list[str]

"""Decoders of the native protocols: one module per protocol, named as `sources.X.protocol` names it.

Each module exposes

    decode(body: bytes, *, content_type: str | None, path: str, max_size: int) -> relay.models.Decoded

where `path` is the request path below the source's prefix (the whole path at a protocol's root)
with its query string, over a body whose Content-Encoding is already undone (stages.compression, bounded by
server.max_body_size). `max_size` (server.max_body_size) bounds what a protocol inflates
itself: Loki's protobuf body is always snappy, with no Content-Encoding to say so. Records are plain JSON
values the mapping language reads, with the
protocol's per-record metadata merged in under the keys the module's docstring lists;
`Decoded.meta` carries what the protocol's answer needs (e.g. `_bulk` item actions).
Decoders are pure: errors are relay.errors IngestErrors, per-record problems Rejections.

A module may also expose `decode_shaped(body, *, content_type, path, shape) -> Decoded | None`:
its common body with the records decoded into a mapping's record Struct (relay.mapping.shape),
None for `decode` to take the body (`_bulk` has one; see `shaped_decoder`).

Modules are found by name, so adding a protocol is adding its module (and its server half
in relay/server/protocols/), nothing here.
"""

from __future__ import annotations

import importlib
import urllib.parse
from typing import Any, Protocol

from relay.models import Decoded, Rejection


class DecodeFn(Protocol):
    def __call__(self, body: bytes, *, content_type: str | None, path: str, max_size: int) -> Decoded: ...


def decoder(protocol: str) -> DecodeFn:
    """The decode function of `protocol`; ModuleNotFoundError if this build has none."""
    module = importlib.import_module(f"{__name__}.{protocol}")
    fn: DecodeFn = module.decode
    return fn


class ShapedDecodeFn(Protocol):
    def __call__(self, body: bytes, *, content_type: str | None, path: str, shape: Any) -> Decoded | None: ...


def shaped_decoder(protocol: str) -> ShapedDecodeFn | None:
    """`protocol`'s `decode_shaped`, when it has one: its common body with the records decoded
    straight into a mapping's record Struct (`shape`, relay.mapping.shape: only the keys the
    mapping reads), or None for `decode` to take the body. Same records, for what they hold."""
    module = importlib.import_module(f"{__name__}.{protocol}")
    fn: ShapedDecodeFn | None = getattr(module, "decode_shaped", None)
    return fn


def media_type(content_type: str | None) -> str:
    """`Application/X-NDJSON; charset=utf-8` -> `application/x-ndjson`; None -> ``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def split_query(path: str) -> tuple[str, dict[str, str]]:
    """`/api/v2/logs?ddsource=nginx` -> ("/api/v2/logs", {"ddsource": "nginx"}); the last of a repeated key wins."""
    path, _, query = path.partition("?")
    return path, dict(urllib.parse.parse_qsl(query, keep_blank_values=True)) if query else {}


class Collected:
    """Records kept and rejected one by one, in request order: what Decoded needs (its indexes
    name each kept record's place in the request once some were rejected)."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.errors: list[Rejection] = []
        self.indexes: list[int] = []
        self.seen = 0

    def keep(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.indexes.append(self.seen)
        self.seen += 1

    def reject(self, field: str, reason: str, message: str) -> None:
        self.errors.append(Rejection(self.seen, field, reason, message))
        self.seen += 1

    def decoded(self, fmt: str) -> Decoded:
        if not self.errors:
            return Decoded(records=self.records, format=fmt)
        return Decoded(records=self.records, format=fmt, errors=self.errors, indexes=self.indexes)

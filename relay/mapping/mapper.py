"""A compiled mapping: records of one request -> validated entries, rejections, repairs."""

from __future__ import annotations

from typing import Any

from relay.mapping.codegen import Batch, compile_spec
from relay.mapping.parsers import PARSERS
from relay.mapping.shape import RecordShape, record_shape
from relay.mapping.spec import MISSING, MappingSpec
from relay.models import MapResult, RecordContext, Rejection
from relay.stages.schema import FIELDS, Validator


class Mapper:
    """One mapping, compiled once; `map_records` is called once per request."""

    def __init__(self, spec: MappingSpec, origin: str = "config") -> None:
        self.name = spec.name
        self.spec = spec
        self.origin = origin  # "preset" or "config"
        self._batch, self.source = compile_spec(spec)
        # JSON records decoded with just the keys the mapping reads, and its twin reading them (shape.py)
        self.shape: RecordShape | None = record_shape(spec)
        self._typed_batch = compile_spec(spec, self.shape.attrs)[0] if self.shape is not None else None
        # the strict Struct's records try the lane first (lane.py)
        self._lane_batch: Batch | None = None
        self.lane_source: str | None = None  # for `relay map --show-code`
        if self.shape is not None and self.shape.lane is not None:
            self._lane_batch, self.lane_source = compile_spec(spec, self.shape.attrs, lane=self.shape.lane)
        rule = spec.fields.get("host")
        # some record may carry no host (`-` in a host column): the source's `host = "..."` fills it
        # then, and without one check-config and start-up warn; reads_host: a record can bring its own
        sure = rule is not None and (rule.default is not MISSING or any(
            source.parse is None or not PARSERS[source.parse].may_miss for source in rule.sources))
        self.needs_host = not sure and "host" not in spec.derived(sure=True)
        self.reads_host = rule is not None

    def map_records(
        self, records: list[Any], ctx: RecordContext, validator: Validator, indexes: list[int] | None = None,
        *, shaped: bool = False,
    ) -> MapResult:
        """Map and validate one batch. `indexes`: the records' positions in the request, when
        some were dropped before mapping (`Decoded.indexes`), so rejections still name the right one.
        `shaped`: the records came from `self.shape.decode`, not dicts."""
        validator.begin()
        repairs: dict[str, int] = {}
        batch = self._typed_batch if shaped else self._batch
        if shaped and records and records[0].__class__ is self.shape.strict_type:  # type: ignore[union-attr]
            batch = self._lane_batch
        assert batch is not None, "shaped records for a mapping without a shape"
        entries, rejections, filtered = batch(records, ctx, validator.check, repairs, validator.fast_parts())
        if indexes is not None and rejections:
            rejections = [Rejection(indexes[r.index], r.field, r.reason, r.message)
                          if r.index < len(indexes) else r for r in rejections]
        return MapResult(entries, rejections, filtered, repairs)

    def host_warning(self, source: str, host: str | None) -> str | None:
        """Why the source needs `host = "..."`, or None: it has one, or the mapping always finds a host."""
        if host or not self.needs_host:
            return None
        fix = 'set host = "www.example.com" on it (the default config reads RELAY_DEFAULT_HOST)'
        if self.reads_host:
            return (f"sources.{source}: mapping {self.name!r} takes the virtual host from records that carry one; "
                    f"records without one (`-`, empty, an IP address) will be rejected: {fix}")
        return f"sources.{source}: mapping {self.name!r} finds no virtual host in the logs, so every record will be rejected: {fix}"

    def describe(self) -> str:
        """What fills each target field, in a few lines (for `relay check-config` and `relay map`)."""
        spec = self.spec
        head = f"{self.origin} {self.name}" + (f" (extends {spec.extends})" if spec.extends else "")
        head += f": {spec.description}" if spec.description else ""
        derived = spec.derived()
        parts = []
        if spec.line is not None:
            parts.append(f"line <- {spec.line.describe()}")
        for target in FIELDS:
            rule = spec.fields.get(target)
            sources = [s.describe() for s in rule.sources] if rule else []
            sources += [f"[{d}]" for d in derived.get(target, [])]
            if target == "host":
                sources.append("source `host` setting")
            if rule and rule.default is not MISSING:
                sources.append(f"default {rule.default!r}")
            if sources:
                parts.append(f"{target} <- {' or '.join(sources)}")
        lines = [head, "  " + "; ".join(parts)]
        if spec.drop_if:
            lines.append("  drop_if: " + " or ".join(c.text for c in spec.drop_if))
        return "\n".join(lines)

"""A `[mappings.NAME]` table, checked and turned into a `MappingSpec` (no code yet).

Every problem is a `ConfigError` whose key names the mapping and the field
(`mappings.myapp.status_code`), so `relay check-config` can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from relay.errors import ConfigError
from relay.mapping import lines  # noqa: F401  (registers the whole-line parsers)
from relay.mapping.drop import Condition, parse_conditions
from relay.mapping.parsers import PARSERS
from relay.mapping.paths import Path, parse_path
from relay.stages.schema import FIELDS
from relay.stages.timestamps import reader
from relay.stages.values import SIZE_UNITS, TIME_UNITS

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
KIND = {
    "timestamp": "timestamp", "method": "str", "host": "str", "path": "str", "query_params": "query",
    "status_code": "int", "ip": "str", "user_agent": "str", "referer": "str", "bytes_sent": "int",
    "duration_ms": "num",
}  # fmt: skip
NEEDED = ("timestamp", "method", "path", "status_code", "ip", "user_agent")  # required; host may come from the source
OPTIONS = ("from", "value", "default", "format", "parse", "scale", "unit", "type", "unescape")
META_KEYS = ("extends", "description", "drop_if", "line")
LINE_FORMATS = tuple(name for name, parser in PARSERS.items() if len(parser.outputs) > 1)
TIMESTAMP_UNITS = {"s": "unix_s", "ms": "unix_ms", "us": "unix_us", "µs": "unix_us", "ns": "unix_ns"}


@dataclass(frozen=True)
class Source:
    """One way to fill a target: read paths (first present wins) or take a constant, then convert."""

    paths: tuple[Path, ...] = ()
    const: Any = MISSING
    parse: str | None = None
    format: str | None = None
    scale: float | None = None  # combined factor of `scale` and `unit`
    type: str | None = None
    unescape: bool = False
    unless: tuple[Path, ...] = ()  # line only: skip it when the record has any of these

    def describe(self) -> str:
        text = repr(self.const) if self.const is not MISSING else " | ".join(p.text for p in self.paths)
        notes = [f"parse {self.parse}"] if self.parse else []
        notes += [f"format {self.format}"] if self.format else []
        notes += [f"x{self.scale:g}"] if self.scale not in (None, 1) else []
        notes += [f"as {self.type}"] if self.type else []
        notes += ["unescape"] if self.unescape else []
        notes += [f"unless {' | '.join(p.text for p in self.unless)}"] if self.unless else []
        return text + (f" ({', '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class FieldRule:
    target: str
    sources: tuple[Source, ...]
    default: Any = MISSING


@dataclass
class MappingSpec:
    name: str
    fields: dict[str, FieldRule | None]  # None: explicitly not mapped (`field = false`)
    line: Source | None = None
    drop_if: list[Condition] = field(default_factory=list)
    description: str = ""
    extends: str | None = None
    no_line: bool = False  # `line = false`: drop the line parser of the mapping extended

    def derived(self, *, sure: bool = False) -> dict[str, list[str]]:
        """target -> the parsers that may fill it besides its own rule, in the order they are tried;
        `sure`: only those that normally do (url finds a host only in absolute URLs)."""
        out: dict[str, list[str]] = {}
        producers = [(self.line, "line")] + [(src, name) for name, rule in self.fields.items() if rule for src in rule.sources]
        for source, owner in producers:
            if source is None or source.parse is None:
                continue
            parser = PARSERS[source.parse]
            for target in parser.outputs:
                if target != owner and (target in parser.fills or (target == "host" and not sure)):
                    out.setdefault(target, []).append(f"{owner}:{source.parse}")
        return out


def parse_spec(name: str, raw: Any, *, file: str | None = None) -> MappingSpec:
    """Check one raw mapping table; `extends` is recorded, not resolved (see `merge`)."""
    base = f"mappings.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"a mapping is a table of target fields, got {type(raw).__name__}", key=base, file=file)
    spec = MappingSpec(name, {})
    for key, value in raw.items():
        where = f"{base}.{key}"
        if key == "extends":
            if not isinstance(value, str) or not value:
                raise ConfigError("extends names one mapping or preset", key=where, file=file)
            spec.extends = value
        elif key == "description":
            spec.description = str(value)
        elif key == "drop_if":
            try:
                spec.drop_if = parse_conditions(value)
            except ValueError as exc:
                raise ConfigError(str(exc), key=where, file=file) from None
        elif key == "line":
            if value is False:
                spec.no_line = True
            else:
                spec.line = _line(value, where, file)
        elif key in KIND:
            spec.fields[key] = None if value is False else _rule(key, value, where, file)
        else:
            raise ConfigError(
                f"unknown target field {key!r}: the upstream fields are {', '.join(FIELDS)} "
                f"(and {', '.join(META_KEYS)})",
                key=where, file=file,
            )  # fmt: skip
    return spec


def merge(parent: MappingSpec, child: MappingSpec) -> MappingSpec:
    """`extends`: the child's fields replace the parent's one by one; drop_if rules add up."""
    fields = dict(parent.fields)
    fields.update(child.fields)
    return replace(
        child,
        fields=fields,
        line=None if child.no_line else child.line if child.line is not None else parent.line,
        drop_if=parent.drop_if + child.drop_if,
        description=child.description or parent.description,
    )


def check_complete(spec: MappingSpec, *, file: str | None = None) -> None:
    """Every required field needs a source (host may come from the source's `host` setting);
    `$line.FIELD` needs a line parser."""
    for target, rule in spec.fields.items():
        for path in (p for src in (rule.sources if rule else ()) for p in src.paths if p.kind == "line"):
            where = f"mappings.{spec.name}.{target}"
            if spec.line is None:
                raise ConfigError(f"{path.text} reads the line, but the mapping has no `line` parser", key=where, file=file)
            if path.steps[0] not in KIND:
                raise ConfigError(f"{path.text}: a line fills target fields ({', '.join(FIELDS)})", key=where, file=file)
    derived = spec.derived(sure=True)
    for target in NEEDED:
        if spec.fields.get(target) is None and target not in derived:
            raise ConfigError(
                f"required field {target!r} has no source: map it ({target} = \"<path in the record>\", "
                f"or {target} = {{ value = ... }}) or parse a line that carries it",
                key=f"mappings.{spec.name}.{target}", file=file,
            )  # fmt: skip


def _line(value: Any, where: str, file: str | None) -> Source:
    if not isinstance(value, dict) or "parse" not in value:
        raise ConfigError(f'line = {{ from = ["log", "message"], parse = "combined" }} (parse: {", ".join(LINE_FORMATS)})', key=where, file=file)
    if value["parse"] not in LINE_FORMATS:
        raise ConfigError(f"unknown line parser {value['parse']!r}: use one of {', '.join(LINE_FORMATS)}", key=where, file=file)
    extra = set(value) - {"from", "parse", "unless"}
    if extra:
        raise ConfigError(f"unknown option {sorted(extra)[0]!r} for line: it takes from, parse and unless",
                          key=where, file=file)  # fmt: skip
    unless = _paths(value["unless"], where, file) if "unless" in value else ()
    return Source(paths=_paths(value.get("from", ["log", "message"]), where, file), parse=value["parse"], unless=unless)


def _rule(target: str, value: Any, where: str, file: str | None) -> FieldRule:
    if isinstance(value, str):
        return FieldRule(target, (Source(paths=_paths(value, where, file)),))
    if isinstance(value, list):
        if not value:
            raise ConfigError("an empty list maps nothing: write false to leave a field out", key=where, file=file)
        if all(isinstance(item, str) for item in value):
            return FieldRule(target, (Source(paths=_paths(value, where, file)),))
        sources, default = [], MISSING
        for item in value:
            if isinstance(item, str):
                sources.append(Source(paths=_paths(item, where, file)))
            else:
                source, item_default = _table(target, item, where, file)
                sources.append(source)
                default = item_default if default is MISSING else default
        return FieldRule(target, tuple(sources), default)
    if isinstance(value, dict):
        source, default = _table(target, value, where, file)
        return FieldRule(target, (source,) if source.paths or source.const is not MISSING else (), default)
    raise ConfigError(
        f"expected a source path, a list of paths or a table {{ from = ..., ... }}, got {value!r}", key=where, file=file
    )


def _paths(value: Any, where: str, file: str | None) -> tuple[Path, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"from is a path or a list of paths, got {value!r}", key=where, file=file)
    try:
        return tuple(parse_path(item) for item in items)
    except ValueError as exc:
        raise ConfigError(f"bad source path: {exc}", key=where, file=file) from None


def _table(target: str, table: Any, where: str, file: str | None) -> tuple[Source, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"expected a path or a table, got {table!r}", key=where, file=file)
    for option in table:
        if option not in OPTIONS:
            raise ConfigError(f"unknown option {option!r}: a rule takes {', '.join(OPTIONS)}", key=where, file=file)
    if "from" in table and "value" in table:
        raise ConfigError("use either from (read the record) or value (a constant), not both", key=where, file=file)
    if not ("from" in table or "value" in table or "default" in table):
        raise ConfigError("a rule needs from, value or default", key=where, file=file)
    kind = KIND[target]
    parse, fmt, type_ = table.get("parse"), table.get("format"), table.get("type")
    if parse is not None:
        parser = PARSERS.get(parse)
        if parser is None:
            raise ConfigError(f"unknown parser {parse!r}: use one of {', '.join(PARSERS)}", key=where, file=file)
        if target not in parser.outputs:
            raise ConfigError(f"parser {parse!r} fills {', '.join(parser.outputs)}, not {target}", key=where, file=file)
    unit = table.get("unit")
    scale = table.get("scale")
    if scale is not None and (kind not in ("int", "num") or isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise ConfigError("scale is a number, for bytes_sent and duration_ms", key=where, file=file)
    factor = float(scale) if scale is not None else None
    if unit is not None:
        factor = _unit(target, unit, where, file) * (factor or 1.0) if target != "timestamp" else factor
        if target == "timestamp":
            if fmt is not None:
                raise ConfigError("give the timestamp a format or a unit, not both", key=where, file=file)
            fmt = TIMESTAMP_UNITS.get(str(unit).lower()) or _bad_unit(target, unit, where, file)
    if fmt is not None:
        if target != "timestamp":
            raise ConfigError("format applies to timestamp only", key=where, file=file)
        try:
            reader(str(fmt))
        except ValueError as exc:
            raise ConfigError(str(exc), key=where, file=file) from None
    if type_ is not None and type_ not in ("int", "float", "str"):
        raise ConfigError(f"unknown type {type_!r}: use int, float or str", key=where, file=file)
    unescape = table.get("unescape", False)
    if not isinstance(unescape, bool):
        raise ConfigError("unescape is true or false", key=where, file=file)
    source = Source(
        paths=_paths(table["from"], where, file) if "from" in table else (),
        const=table.get("value", MISSING), parse=parse, format=fmt, scale=factor, type=type_, unescape=unescape,
    )  # fmt: skip
    return source, table.get("default", MISSING)


def _unit(target: str, unit: Any, where: str, file: str | None) -> float:
    table = TIME_UNITS if target == "duration_ms" else SIZE_UNITS if target == "bytes_sent" else None
    if table is None:
        raise ConfigError("unit applies to duration_ms, bytes_sent and timestamp", key=where, file=file)
    factor = table.get(str(unit).lower()) if isinstance(unit, str) else None
    return float(factor) if factor is not None else _bad_unit(target, unit, where, file)


def _bad_unit(target: str, unit: Any, where: str, file: str | None) -> Any:
    known: Any = {"duration_ms": TIME_UNITS, "bytes_sent": SIZE_UNITS, "timestamp": TIMESTAMP_UNITS}[target]
    raise ConfigError(f"unknown unit {unit!r} for {target}: use one of {', '.join(known)}", key=where, file=file)


def is_passthrough(spec: MappingSpec) -> bool:
    """Does `spec` copy each SPEC §2 field from the key of its name, and do nothing else? Such a
    mapping lets upstream-form bodies take the typed route (relay.stages.typed)."""
    if spec.line is not None or spec.drop_if or set(spec.fields) - set(FIELDS):
        return False
    for target in FIELDS:
        rule = spec.fields.get(target)
        if rule is None or rule.default is not MISSING or len(rule.sources) != 1:
            return False
        source = rule.sources[0]
        if (source.const is not MISSING or source.parse or source.format not in (None, "auto") or source.scale
                or source.type or source.unescape or len(source.paths) != 1):
            return False
        path = source.paths[0]
        if path.kind != "record" or path.steps != (target,):
            return False
    return True

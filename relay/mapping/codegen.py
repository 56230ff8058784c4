"""Compile a `MappingSpec` into one Python function that maps a whole batch.

The function is generated as source and `compile()`d once per mapping: every
rule becomes straight-line code on local variables (plain `record.get(key)`
for plain keys, no per-record dicts; `r.k3` when the records are the mapping's
record Struct, see shape.py), then `Validator.check`'s fast path inline
(fused.py), which builds the `Entry`, or a call to `check` for the rest. Its shape:

    def map_batch(records, ctx, check, repairs, fast=None):
        ...per-batch values: ctx.host, $tag, $header.X, the validator's fast parts...
        for i, r in enumerate(records):
            ...one block per target field (rule, then parser fallbacks, the
               source's host, the default), drop_if, then the fused check
        return entries, rejected, filtered

`Mapper.source` keeps the generated text for debugging (`relay map --show-code`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.mapping import fused
from relay.mapping import lane as lanes
from relay.mapping.lines import unescape
from relay.mapping.parsers import PARSERS, parse_query
from relay.mapping.paths import Path, header, resolve
from relay.mapping.spec import KIND, MISSING, MappingSpec, Source
from relay.models import Rejection
from relay.stages import timestamps
from relay.stages.decode import unwrap_event
from relay.stages.schema import FIELDS, Entry
from relay.stages.values import (
    RuleError,
    scaled,
    show,
    to_float,
    to_int,
    to_num,
    to_str,
)

BLANK = 'is None or {v} == "" or {v} == "-"'
_CONVERT = {"str": "_to_str", "int": "_to_int", "float": "_to_float"}
# "0".."999" -> 0..999: status codes arrive as such strings (Fluent Bit's nginx parser, syslog
# templates), and a lookup costs ~100 ns here where int() of a str costs ~300. Not for sizes: most
# miss a small table, and a big one misses the CPU cache (measured slower than int()).
_STATUS_CODES = {str(n): n for n in range(1_000)}


def _not_object(index: int, record: Any) -> Rejection:
    return Rejection(index, None, "not_object", f"record is not a JSON object (got {type(record).__name__} {show(record, 60)})")


def _fail(index: int, field: str | None, exc: Exception) -> Rejection:
    if isinstance(exc, RuleError):
        return Rejection(index, field, exc.reason, exc.message)
    what = f"rule for {field}" if field else "validation"
    return Rejection(index, field, "mapping_error", f"{what} failed: {type(exc).__name__}: {exc}")


class _Writer:
    """Collects generated lines and the constants they refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "Entry": Entry, "_unwrap": unwrap_event, "_not_object": _not_object, "_fail": _fail, "_get": resolve,
            "_header": header, "_to_str": to_str, "_to_int": to_int, "_to_num": to_num, "_to_float": to_float,
            "_scaled": scaled, "_query": parse_query, "_unescape": unescape, "_status_code": _STATUS_CODES.get,
            "_BELOW_1E11": lanes.BELOW_1E11,
        }  # fmt: skip
        self._ids: dict[int, str] = {}

    def const(self, value: Any, prefix: str = "_c") -> str:
        """A name in the generated module's globals bound to `value` (reused for the same object)."""
        key = id(value)
        if key not in self._ids:
            name = f"{prefix}{len(self.names)}"
            self.names[name] = value
            self._ids[key] = name
        return self._ids[key]

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)


class _Compiler:
    def __init__(self, spec: MappingSpec, *, track: bool, attrs: dict[str, str] | None = None,
                 fuse: bool = True, lane: lanes.Lane | None = None) -> None:
        self.spec = spec
        self.lane = lane if fuse and not track and attrs is not None else None  # records of the strict Struct
        self.track = track  # keep `f` = the field being mapped, for the rejection when a rule raises
        self.fuse = fuse and not track  # check's fast path inline (fused.py); the tracking twin calls check
        self.attrs = attrs  # records are a RecordShape Struct: key -> attribute (None: records are dicts)
        self.w = _Writer()
        self.headers: dict[str, str] = {}  # header name -> local
        self.derived: dict[str, list[str]] = {}  # target -> locals holding parser outputs, in order
        self.line_locals: dict[str, str] = {}  # target -> local holding the line parser's output
        self.parse_count = 0
        self.none: set[str] = set()  # targets nothing fills: None in every record

    def mark(self, depth: int, field: str | None) -> None:
        if self.track:
            self.w.emit(depth, f"f = {field!r}")

    # -- lookups ------------------------------------------------------------------------

    def lookup(self, path: Path) -> str:
        if path.kind == "tag":
            return "tag"
        if path.kind == "time":
            return "et"
        if path.kind == "line":
            return self.line_locals[path.steps[0]]  # type: ignore[index]
        if path.kind == "header":
            name = str(path.steps[0])
            if name not in self.headers:
                self.headers[name] = f"hdr{len(self.headers)}"
            return self.headers[name]
        if path.simple:
            if self.attrs is not None:
                return f"r.{self.attrs[str(path.steps[0])]}"
            return f"r.get({path.steps[0]!r})"
        return f"_get(r, {self.w.const(path.steps, '_steps')}, {path.joinable})"

    def fetch(self, depth: int, var: str, path: Path) -> None:
        """`var` = the value at `path`. Nested keys are inlined as dict.get() chains; anything off
        that road (an array, a Mapping that is not a dict, a flattened dotted key) goes to the resolver."""
        steps = path.steps
        if path.kind != "record" or path.simple or not all(step.__class__ is str for step in steps):
            self.w.emit(depth, f"{var} = {self.lookup(path)}")
            return
        resolver = self.lookup(path)
        emit = self.w.emit
        emit(depth, f"{var} = r.get({steps[0]!r})")
        for n, step in enumerate(steps[1:]):
            emit(depth + n, f"if {var}.__class__ is dict:")
            emit(depth + n + 1, f"{var} = {var}.get({step!r})")
        if path.joinable:  # found nothing at the end of the road: the fully flattened key, at the top
            emit(depth + len(steps) - 1, f"if {var} is None:")
            emit(depth + len(steps), f"{var} = r.get({'.'.join(map(str, steps))!r})")
        for n in range(len(steps) - 2, -1, -1):
            emit(depth + n, "else:")
            if path.joinable and n == 0:  # no such key at the top: the fully flattened key, or nothing
                emit(depth + 1, f"{var} = {resolver} if {var} is not None else r.get({'.'.join(map(str, steps))!r})")
            elif path.joinable:
                emit(depth + n + 1, f"{var} = {resolver}")
            else:
                emit(depth + n + 1, f"if {var} is not None:")
                emit(depth + n + 2, f"{var} = {resolver}")

    def first_present(self, depth: int, var: str, paths: tuple[Path, ...]) -> None:
        """`var` = the first present, non-empty, non-"-" value of `paths`, else None."""
        for n, path in enumerate(paths):
            self.fetch(depth + n, var, path)
            self.w.emit(depth + n, f"if {var} {BLANK.format(v=var)}:")
        self.w.emit(depth + len(paths), f"{var} = None")

    def read(self, depth: int, var: str, source: Source, target: str) -> None:
        """`var` = the first present value of the source's paths, converted; else None."""
        emit, paths = self.w.emit, source.paths
        self.first_present(depth, var, paths)
        if len(paths) == 1:
            emit(depth, "else:")
            self.convert(depth + 1, var, target, source)
        else:
            emit(depth, f"if {var} is not None:")
            self.convert(depth + 1, var, target, source)

    # -- conversions --------------------------------------------------------------------

    def convert(self, depth: int, var: str, target: str, source: Source) -> None:
        """Turn the (present) value in `var` into what `target` wants; parsers also fill derived locals."""
        emit, kind = self.w.emit, KIND.get(target, "line")
        if kind == "line":
            emit(depth, f"{var} = _to_str({var})")
            self.parse(depth, var, target, source.parse or "")
            return
        if source.type is not None:
            emit(depth, f"{var} = {_CONVERT[source.type]}({var})")
        elif kind == "str":
            emit(depth, f"if {var}.__class__ is not str:")
            emit(depth + 1, f"{var} = _to_str({var})")
        elif kind == "int":  # int() inline for the usual decimal string ("200"), the helper for the rest
            emit(depth, f"if {var}.__class__ is str:")
            if target == "status_code":  # "200" looked up (_STATUS_CODES), the helper on a miss
                emit(depth + 1, f"num = _status_code({var})")
                emit(depth + 1, f"{var} = num if num is not None else _to_int({var})")
            else:
                emit(depth + 1, "try:")
                emit(depth + 2, f"{var} = int({var})")
                emit(depth + 1, "except ValueError:")
                emit(depth + 2, f"{var} = _to_int({var})")
            emit(depth, f"elif {var}.__class__ is not int:")
            emit(depth + 1, f"{var} = _to_int({var})")
        elif kind == "num":
            emit(depth, f"if {var}.__class__ is not float and {var}.__class__ is not int:")
            emit(depth + 1, f"{var} = _to_num({var})")
        elif kind == "timestamp":
            read = self.w.const(timestamps.reader(source.format), "_ts")
            if source.format in (None, "auto"):
                emit(depth, f"if {var}.__class__ is not float or {var} >= 1e11:")
                emit(depth + 1, f"{var} = {read}({var})")
            else:
                emit(depth, f"{var} = {read}({var})")
        elif kind == "query" and source.parse is None:
            emit(depth, f"if {var}.__class__ is str:")
            emit(depth + 1, f"{var} = _query({var})")
        if source.scale is not None and source.scale != 1:
            emit(depth, f"{var} = _scaled({var}, {source.scale!r}, {kind == 'int'})")
        if source.unescape:
            emit(depth, f'if {var}.__class__ is str and "\\\\" in {var}:')
            emit(depth + 1, f"{var} = _unescape({var})")
        if source.parse is not None:
            self.parse(depth, var, target, source.parse)

    def parse(self, depth: int, var: str, target: str, name: str) -> None:
        parser = PARSERS[name]
        func = self.w.const(parser.func, "_parse")
        out = f"p{self.parse_count}"
        self.parse_count += 1
        emit = self.w.emit
        if name == "url" and target == "path":  # the common case costs one `in` when there is no query
            emit(depth, f'if {var}.__class__ is str and ("?" in {var} or {var}[0] != "/"):')
        else:
            emit(depth, f"if {var}.__class__ is str:")
        emit(depth + 1, f"{out} = {func}({var})")
        for pos, produced in enumerate(parser.outputs):
            if produced == target:
                emit(depth + 1, f"{var} = {out}[{pos}]")
            elif produced in parser.fills or produced == "host" or target == "line":  # (host: in absolute URLs)
                local = f"d_{produced}_{out}"
                if produced in parser.fills or produced == "host":
                    self.derived.setdefault(produced, []).append(local)
                if target == "line":
                    self.line_locals[produced] = local
                emit(depth + 1, f"{local} = {out}[{pos}]")

    # -- one target field ---------------------------------------------------------------

    def field(self, depth: int, target: str) -> None:
        var = f"v_{target}"
        emit = self.w.emit
        self.mark(depth, target)
        rule = self.spec.fields.get(target)
        chain: list[Source] = list(rule.sources) if rule else []
        if rule and rule.default is not MISSING:
            default = Source(const=rule.default)
        else:
            default = None
        for n, source in enumerate(chain):
            inner = depth if n == 0 else depth + 1
            if n:
                emit(depth, f"if {var} is None:")
            if source.const is not MISSING:
                emit(inner, f"{var} = {self.w.const(source.const)}")
                self.convert(inner, var, target, source)
                continue
            self.read(inner, var, source, target)
        fallbacks = [*self.derived.get(target, []), *(["ctx_host"] if target == "host" else [])]
        for n, local in enumerate(fallbacks):
            if n == 0 and not chain:
                emit(depth, f"{var} = {local}")
            else:
                emit(depth, f"if {var} is None:")
                emit(depth + 1, f"{var} = {local}")
        if not chain and not fallbacks:
            emit(depth, f"{var} = None")
            if default is None:
                self.none.add(target)
        if default is not None:
            emit(depth, f"if {var} is None:")
            emit(depth + 1, f"{var} = {self.w.const(default.const)}")
            self.convert(depth + 1, var, target, default)

    # -- the function ---------------------------------------------------------------------

    def order(self) -> list[str]:
        """Fields whose rules parse come first, so that their by-products can fill the others."""
        parsing = [t for t in FIELDS if (r := self.spec.fields.get(t)) and any(s.parse for s in r.sources)]
        return parsing + [t for t in FIELDS if t not in parsing]

    def build(self) -> tuple[str, dict[str, Any]]:
        emit = self.w.emit
        spec = self.spec
        # the loop body first, into self.w; the prologue needs the header names it used
        if spec.line is not None:
            self.mark(3, "line")
            depth = 3
            if spec.line.unless:  # a record the shipper already parsed: leave its line alone
                self.first_present(3, "x_unless", spec.line.unless)
                emit(3, "if x_unless is None:")
                depth = 4
            self.read(depth, "x_line", spec.line, "line")
        for target in self.order():
            self.field(3, target)
        for cond in spec.drop_if:
            test = self.w.const(cond.test, "_drop")
            subject = f"v_{cond.subject}" if cond.subject else self.lookup(cond.path)  # type: ignore[arg-type]
            self.mark(3, "drop_if")
            emit(3, f"if {test}({subject}):")
            emit(4, "filtered += 1")
            emit(4, "continue")
        self.mark(3, None)
        if not self.fuse:  # the twin that names a field only runs for a record that raised: no need to be quick
            args = ", ".join(f"v_{t}" for t in FIELDS)
            emit(3, f"e = check(i, {args}, repairs)")
        else:  # check's fast path inline, check itself for the rest (fused.py)
            self.w.lines += fused.fused_check(3, self.none)
            self.w.names.update(fused.NAMES)
        loop = self.w.lines
        derived_locals = sorted({local for locals_ in self.derived.values() for local in locals_}
                                | set(self.line_locals.values()))
        head = [
            "def map_batch(records, ctx, check, repairs, fast=None):",
            *([fused.PROLOGUE] if self.fuse else []),
            *(["    lane_hi = hi if hi < 1e11 else _BELOW_1E11"] if self.lane is not None else []),
            "    entries = []",
            "    rejected = []",
            "    filtered = 0",
            "    add = entries.append",
            "    ctx_host = ctx.host",
            "    tag = ctx.tag",
        ]
        head += [f"    {local} = _header(ctx.headers, {name!r})" for name, local in self.headers.items()]
        head += ["    for i, r in enumerate(records):"]
        if self.lane is not None:  # the lane first; a record it does not take, the full code below (lane.py)
            assert self.attrs is not None
            head += ["        try:"]
            head += ["    " * 3 + line for line in lanes.lines(self.lane, self.attrs, self.w.const)]
            head += [f"            {local} = None" for local in ["et", *derived_locals]]
        else:
            head += ["        et = None"]
            if self.attrs is None:  # a Struct record is an object by construction, and has no event time
                head += [
                    "        if r.__class__ is not dict:",
                    "            r, et = _unwrap(r)",
                    "            if r is None:",
                    "                rejected.append(_not_object(i, records[i]))",
                    "                continue",
                ]
            head += [f"        {local} = None" for local in derived_locals]
            head += ["        try:"]
        tail = [
            "        except Exception as exc:",
            "            rejected.append(_fail(i, f, exc))" if self.track else
            "            rejected.append(_diagnose(i, records[i], ctx, check, exc))",
            "            continue",
            "        if e.__class__ is Entry:",
            "            add(e)",
            "        else:",
            "            rejected.append(e)",
            "    return entries, rejected, filtered",
        ]
        return "\n".join(head + loop + tail) + "\n", self.w.names


Batch = Callable[..., tuple[list[Any], list[Rejection], int]]


def _diagnoser(tracked: Batch) -> Callable[..., Rejection]:
    """When a rule raises, map that one record again with the field-tracking twin to name the field."""

    def diagnose(index: int, record: Any, ctx: Any, check: Callable[..., Any], exc: Exception) -> Rejection:
        try:
            _, rejected, _ = tracked([record], ctx, check, {})
        except Exception:
            rejected = []
        if rejected:
            first = rejected[0]
            return Rejection(index, first.field, first.reason, first.message)
        return _fail(index, None, exc)

    return diagnose


def _build(spec: MappingSpec, *, track: bool, extra: dict[str, Any], attrs: dict[str, str] | None = None,
           fuse: bool = True, lane: lanes.Lane | None = None) -> tuple[Batch, str]:
    source, names = _Compiler(spec, track=track, attrs=attrs, fuse=fuse, lane=lane).build()
    code = compile(source, f"<mapping {spec.name}>", "exec")
    namespace = {**names, **extra}
    exec(code, namespace)
    return namespace["map_batch"], source


def compile_spec(spec: MappingSpec, attrs: dict[str, str] | None = None, *, fuse: bool = True,
                 lane: lanes.Lane | None = None) -> tuple[Batch, str]:
    """The batch function for `spec`, and its source text. The fast version does not track which
    field it is on; when a rule raises, its twin (same code, tracking) names the field.
    `attrs`: the function takes RecordShape Structs (key -> attribute), not dicts.
    `lane`: those Structs are the strict twin, and each record tries the lane first (lane.py).
    `fuse=False`: call `check` for every record instead of running its fast path inline (for
    tests and measurements: the outcome is the same)."""
    tracked, _ = _build(spec, track=True, extra={}, attrs=attrs)
    return _build(spec, track=False, extra={"_diagnose": _diagnoser(tracked)}, attrs=attrs, fuse=fuse, lane=lane)

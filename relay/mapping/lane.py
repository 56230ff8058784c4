"""The lane: a clean record mapped with the fewest tests, ahead of the full per-record code.

Most bodies a shipper sends are alike: every record carries the keys the mapping reads,
strings where strings belong, a float timestamp, nothing blank where a value is required.
The full per-record code (codegen.py) cannot count on any of that: each key is tested for
None, "" and "-", for its type, for escapes, then again by the fused check (fused.py). On the
bench's Fluent Bit traffic those tests were ~0.5 µs of the mapping's ~1.5 µs an entry.

When every rule of a mapping is of the kinds below, its record Struct (shape.py) gets a
strict twin: each key a rule reads first as a string is typed `str`, so msgspec turns away in
C a body with a number, a null or an object there (that body is decoded as before), and the
compiled mapping starts each record with the lane. The lane reads the keys, tests in one
condition what would make the full code do anything but take the value as it is (a blank, an
escape, a method, IP or timestamp the validator has not seen, a value over its limit, an
absolute URL), and builds the Entry. A record it does not take goes on to the full code, which
maps it exactly as before: the lane only ever takes a record whose outcome it is sure of, so
outcomes cannot change (tests/unit/mapping/test_lane.py maps records both ways).

What a lane rule is: the first path of its first source is one plain record key, with no
`type`, `scale` or default, and
- a timestamp (format auto), taken in the lane when it is a float inside the window;
- a string field, optionally `unescape`d; `path` may `parse = "url"` and `host` `parse = "vhost"`;
- an integer field read as a plain integer (shape.int_keys: typed `int` already);
- no rule at all, for a field nothing else fills (left unset) or that the source's host or the
  path's query string fills.
A mapping with a line parser, a drop rule, or any other rule has no lane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from relay.mapping import fused, parsers
from relay.mapping.parsers import PARSERS
from relay.mapping.spec import KIND, MISSING, MappingSpec
from relay.stages.schema import FIELDS, MAX_LENGTH, OPTIONAL

# the lane takes a float timestamp only below 1e11: the full code reads a larger one as milliseconds
BELOW_1E11 = math.nextafter(1e11, 0)


@dataclass(frozen=True)
class LaneField:
    target: str
    key: str | None  # the record key its rule reads first; None: no rule
    unescape: bool = False
    parse: str | None = None
    blank_unset: bool = False  # a blank (missing, "", "-") goes upstream unset: optional, one source, one path


@dataclass(frozen=True)
class Lane:
    fields: dict[str, LaneField]  # every target, in FIELDS order
    strings: frozenset[str]  # the record keys typed `str` in the strict Struct

    @property
    def url(self) -> bool:
        return self.fields["path"].parse == "url"


def plan(spec: MappingSpec, int_keys: set[str]) -> Lane | None:
    """The lane of `spec`, or None when some rule is not of a kind the lane knows."""
    if spec.line is not None or spec.drop_if:
        return None
    fields: dict[str, LaneField] = {}
    strings: set[str] = set()
    for target in FIELDS:
        rule = spec.fields.get(target)
        if rule is None or not rule.sources:
            if rule is not None and rule.default is not MISSING:
                return None
            # a required field nothing fills is always mapped by the full code (a repair or a rejection)
            if target not in OPTIONAL and target != "host":
                return None
            fields[target] = LaneField(target, None)
            continue
        source = rule.sources[0]
        path = source.paths[0] if source.paths else None
        if (rule.default is not MISSING or source.const is not MISSING or path is None or not path.simple
                or source.type is not None or source.scale not in (None, 1)):
            return None
        key, kind = str(path.steps[0]), KIND[target]
        if kind == "timestamp":
            if source.format not in (None, "auto") or source.parse or source.unescape:
                return None
        elif kind == "str":
            if source.parse not in (None, {"path": "url", "host": "vhost"}.get(target)):
                return None
            strings.add(key)
        elif kind != "int" or key not in int_keys:
            return None  # query_params and duration_ms rules, integers read as text
        single = len(rule.sources) == 1 and len(source.paths) == 1
        fields[target] = LaneField(target, key, source.unescape, source.parse,
                                   single and (target in OPTIONAL or target == "host"))
    if strings & int_keys:
        return None
    if fields["query_params"].key is None and fields["path"].parse != "url" and spec.derived().get("query_params"):
        return None  # filled by a parser the lane does not run
    return Lane(fields, frozenset(strings))


def lines(lane: Lane, attrs: dict[str, str], const: Any) -> list[str]:
    """The lane's code, at the loop body's depth (inside its `try`): adds the Entry and goes on to
    the next record, or falls through to the full code. `const(value, prefix)` names a value in the module."""
    f = lane.fields
    out: list[str] = []

    pre: list[str] = []  # on the values as read
    post: list[str] = []  # after the transforms
    steps: list[str] = []  # the transforms, at the depth of the first test's body
    args: dict[str, str] = {}
    blank = "not {v} or {v} == \"-\""
    escape = ' and "\\\\" not in {v}'

    for target, spec in f.items():
        v = f"l_{target}"
        if spec.key is None:
            if target == "host":
                args[target] = "ctx_host"
                post.append(fused.TESTS["host"].format(v="ctx_host"))
            elif target == "query_params" and lane.url:
                args[target] = "l_query or _unset"
                post.append(fused.TESTS["query_params"].format(v="l_query"))
            else:
                args[target] = "_unset"
            continue
        out.append(f"{v} = r.{attrs[spec.key]}")
        esc = escape.format(v=v) if spec.unescape else ""
        if target == "timestamp":
            pre.append(f"{v}.__class__ is float and lo <= {v} <= lane_hi")
            steps += [f"ts = {v}", *fused.iso_lines()]
            post.append("iso is not None")
            args[target] = "iso"
        elif target == "method":
            pre.append(f"{v} in _methods")  # never blank, never escaped
            args[target] = v
        elif target == "ip":
            pre.append(f"{v} in ips")  # IPs the validator took as they are: never blank, never escaped
            args[target] = v
        elif target in ("status_code", "bytes_sent"):  # typed int: an int or None (missing)
            test = f"100 <= {v} <= 599" if target == "status_code" else f"0 <= {v} <= _INT_MAX"
            pre.append(f"({v} is None or {test})" if target == "bytes_sent" and spec.blank_unset
                       else f"{v} is not None and {test}")
            args[target] = f"_unset if {v} is None else {v}" if target == "bytes_sent" else v
        elif target == "host":
            parse = const(PARSERS["vhost"].func, "_parse") if spec.parse == "vhost" else None
            if spec.blank_unset:  # a blank host, or one vhost finds none, is the source's (the full code's fallback)
                if esc:
                    pre.append(f"({v} is None or \"\\\\\" not in {v})")
                steps.append(f"if {blank.format(v=v)}:")
                steps.append(f"    {v} = ctx_host")
                if parse:
                    steps.append("else:")
                    steps.append(f"    {v} = {parse}({v})[0]")
                    steps.append(f"    if {v} is None:")
                    steps.append(f"        {v} = ctx_host")
            else:
                pre.append(f"{v} and {v} != \"-\"{esc}")
                if parse:  # finding none, the full code goes on to the next source: not the lane's
                    steps.append(f"{v} = {parse}({v})[0]")
            post.append(fused.TESTS["host"].format(v=v))
            args[target] = v
        elif target == "path":
            pre.append(f"{v} and {v} != \"-\"{esc}")
            if spec.parse == "url":
                parse = const(PARSERS["url"].func, "_parse")
                memo, limit = const(parsers.remembered_query, "_memo"), parsers.QUERY_MEMO_TEXT
                steps += [
                    f"if \"?\" in {v} or {v}[0] != \"/\":",
                    f"    if {v}[0] == \"/\" and \"#\" not in {v}:  # parse_url's common case, its memo called at once",
                    f"        {v}, _, lq = {v}.partition(\"?\")",
                    f"        l_query = {memo}(lq) if 0 < len(lq) <= {limit} and lq[0] != \"?\" else _query(lq) if lq else None",
                    "        l_urlhost = None",
                    "    else:",
                    f"        {v}, l_query, l_urlhost = {parse}({v})",
                    "else:",
                    "    l_query = l_urlhost = None",
                ]
                # an absolute URL's host may fill the host: the full code decides that
                post.append(f"l_urlhost is None and {v} is not None and len({v}) <= {MAX_LENGTH['path']}")
            else:
                post.append(f"len({v}) <= {MAX_LENGTH['path']}")
            args[target] = v
        elif target in ("user_agent", "referer"):
            limit = MAX_LENGTH[target]
            if spec.blank_unset:
                unescaped = f'"\\\\" not in {v} and ' if spec.unescape else ""
                pre.append(f"({blank.format(v=v)} or ({unescaped}len({v}) <= {limit}))")
                steps.append(f"if {blank.format(v=v)}:")
                steps.append(f"    {v} = _unset")
            else:
                pre.append(f"{v} and {v} != \"-\"{esc} and len({v}) <= {limit}")
            args[target] = v
        else:  # plan() lets no other target through
            raise AssertionError(target)
    values = ", ".join(args[target] for target in FIELDS)
    out.append("if (" + "\n        and ".join(pre) + "):")
    out += [f"    {line}" for line in steps]
    out.append("    if (" + "\n            and ".join(post or ["True"]) + "):")
    out.append(f"        add(Entry({values}))")
    out.append("        continue")
    return [line for text in out for line in text.split("\n")]

"""`drop_if`: records the user does not want upstream (health checks, internal IPs).

A mapping's `drop_if` is a list of conditions; a record is dropped (counted as
filtered, not rejected) when any condition holds. A condition is a table with
a subject and one or more tests, all of which must hold:

- subject: `field = "path"` (the mapped value of a target field, before
  validation) or `from = "kubernetes.namespace"` (a source path in the record);
- tests: `equals = v`, `in = [v, ...]`, `prefix = "s" | [...]`, `suffix = ...`,
  `contains = ...`, `matches = "regex"` (search), `cidr = "10.0.0.0/8" | [...]`,
  `missing = true|false`; `not = true` inverts the whole condition.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay.mapping.paths import Path, parse_path
from relay.stages.schema import FIELDS
from relay.stages.values import strip_ip_port

TESTS = ("equals", "in", "prefix", "suffix", "contains", "matches", "cidr", "missing")


@dataclass(frozen=True)
class Condition:
    subject: str  # a target field, or "" when `path` is set
    path: Path | None
    test: Callable[[Any], bool]
    text: str  # for describe()


def _strings(name: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{name} takes a string or a list of strings, got {value!r}")
    return tuple(items)


def _test(name: str, arg: Any) -> Callable[[Any], bool]:
    if name == "equals":
        return lambda v: v == arg
    if name == "in":
        if not isinstance(arg, list):
            raise ValueError(f"in takes a list, got {arg!r}")
        return lambda v: v is not None and any(v == item for item in arg)
    if name == "missing":
        if not isinstance(arg, bool):
            raise ValueError("missing is true or false")
        return (lambda v: v is None) if arg else (lambda v: v is not None)
    if name == "cidr":
        try:
            networks = tuple(ipaddress.ip_network(net, strict=False) for net in _strings(name, arg))
        except ValueError as exc:
            raise ValueError(f"cidr: {exc}") from None
        return _cidr_test(networks)
    texts = _strings(name, arg)
    if name == "prefix":
        return lambda v: v.__class__ is str and v.startswith(texts)
    if name == "suffix":
        return lambda v: v.__class__ is str and v.endswith(texts)
    if name == "contains":
        return lambda v: v.__class__ is str and any(t in v for t in texts)
    try:
        patterns = [re.compile(t) for t in texts]
    except re.error as exc:
        raise ValueError(f"matches: bad regular expression: {exc}") from None
    return lambda v: v.__class__ is str and any(p.search(v) for p in patterns)


def _cidr_test(networks: tuple[Any, ...]) -> Callable[[Any], bool]:
    memo: dict[str, bool] = {}

    def test(value: Any) -> bool:
        if value.__class__ is not str:
            return False
        hit = memo.get(value)
        if hit is None:
            try:
                address = ipaddress.ip_address(strip_ip_port(value))
                mapped = getattr(address, "ipv4_mapped", None)
                hit = any(address in net or (mapped is not None and mapped in net) for net in networks)
            except ValueError:
                hit = False
            if len(value) <= 64:  # an address; anything longer is not remembered
                if len(memo) > 65536:
                    memo.clear()
                memo[value] = hit
        return hit

    return test


def parse_conditions(raw: Any) -> list[Condition]:
    """The raw `drop_if` value -> conditions; raises ValueError naming the entry at fault."""
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise ValueError("drop_if is a list of conditions like { field = \"path\", in = [\"/healthz\"] }")
    out = []
    for n, item in enumerate(items):
        try:
            out.append(_condition(item))
        except ValueError as exc:
            raise ValueError(f"drop_if[{n}]: {exc}") from None
    return out


def _condition(item: Any) -> Condition:
    if not isinstance(item, dict):
        raise ValueError(f"a condition is a table, got {item!r}")
    subject, path = item.get("field"), None
    if ("field" in item) == ("from" in item):
        raise ValueError("give a condition either field = \"<target field>\" or from = \"<source path>\"")
    if subject is not None and subject not in FIELDS:
        raise ValueError(f"unknown field {subject!r}: use one of {', '.join(FIELDS)}")
    if "from" in item:
        path = parse_path(item["from"])
    negate = item.get("not", False)
    if not isinstance(negate, bool):
        raise ValueError("not is true or false")
    tests = []
    for key, arg in item.items():
        if key in ("field", "from", "not"):
            continue
        if key not in TESTS:
            raise ValueError(f"unknown test {key!r}: use {', '.join(TESTS)}")
        tests.append(_test(key, arg))
    if not tests:
        raise ValueError(f"a condition needs a test: {', '.join(TESTS)}")
    if len(tests) == 1 and not negate:
        test = tests[0]
    else:
        test = lambda v, _t=tuple(tests), _n=negate: all(t(v) for t in _t) is not _n  # type: ignore[misc]
    text = ", ".join(f"{k} = {v!r}" for k, v in item.items())
    return Condition(subject or "", path, test, "{ " + text + " }")

"""`Validator.check`'s fast path, written into the compiled mapping instead of called.

A mapped record used to cost one Python call of 13 arguments into `check`, whose fast
path then tested every value's type and limits. The generated loop now runs the same
tests inline on its own locals and builds the `Entry` itself; anything that fast path
would not take as it is (a repair, a rejection, a timestamp or IP not seen before) still
goes to `check`, which runs its rules field by field exactly as before. The tests here
must accept exactly what `check`'s fast path accepts and build the same Entry, so
outcomes cannot change, only cost: keep the two in step (tests/unit/mapping/test_fused.py
maps the same records both ways).

What the code reads of the validator (`Validator.fast_parts`) is bound once per batch:
the timestamp window and the memo tables. A field the mapping never fills (no rule, no
fallback: a constant None) has its test left out and goes upstream unset.
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from relay.stages.schema import (
    _FLOAT_MAX,
    _INT_MAX,
    _METHODS,
    _MS_TAIL,
    _US_HEAD,
    _US_TAIL,
    FIELDS,
    MAX_LENGTH,
    Query,
    _query_ok,
)

NAMES: dict[str, Any] = {"_methods": _METHODS, "_unset": UNSET, "_query_ok": _query_ok, "_Query": Query,
                         "_INT_MAX": _INT_MAX, "_FLOAT_MAX": _FLOAT_MAX,
                         "_ms_tail": _MS_TAIL, "_us_head": _US_HEAD, "_us_tail": _US_TAIL}
PROLOGUE = "    lo, hi, iso_get, second_get, iso_of, ips = fast"

# per target: the test of `check`'s fast path, on the local `{v}`
TESTS = {
    "method": "{v}.__class__ is str and {v} in _methods",
    "host": f"{{v}}.__class__ is str and 0 < len({{v}}) <= {MAX_LENGTH['host']}",
    "path": f"{{v}}.__class__ is str and 0 < len({{v}}) <= {MAX_LENGTH['path']}",
    "status_code": "{v}.__class__ is int and 100 <= {v} <= 599",
    "ip": "{v}.__class__ is str and {v} in ips",
    "user_agent": f"{{v}}.__class__ is str and len({{v}}) <= {MAX_LENGTH['user_agent']}",
    "query_params": "({v} is None or {v}.__class__ is _Query or _query_ok({v}))",
    "referer": f"({{v}} is None or ({{v}}.__class__ is str and len({{v}}) <= {MAX_LENGTH['referer']}))",
    "bytes_sent": "({v} is None or ({v}.__class__ is int and 0 <= {v} <= _INT_MAX))",
    "duration_ms": "({v} is None or (({v}.__class__ is float or {v}.__class__ is int) and 0 <= {v} <= _FLOAT_MAX))",
}
# per optional target: its Entry argument (None, and an empty query, go upstream unset)
_ARGS = {"query_params": "_unset if {v} is None or not {v} else {v}"}


def iso_lines() -> list[str]:
    """`iso` = the ISO text of the float `ts`, known to be inside the window."""
    return [
        "iso = iso_get(ts)",
        "if iso is None:  # a new fraction of a known second?",
        "    sec = int(ts)",
        "    micros = round((ts - sec) * 1_000_000)",
        "    base = second_get(sec)",
        "    if base is None or not 0 < micros < 1_000_000:",
        "        iso = iso_of(ts)",
        "    elif micros % 1000:  # format_timestamp's tables",
        "        iso = base + _us_head[micros // 1000] + _us_tail[micros % 1000]",
        "    else:",
        "        iso = base + _ms_tail[micros // 1000]",
    ]


def fused_check(depth: int, none: set[str]) -> list[str]:
    """Lines (at `depth`) that set `e` from the `v_<field>` locals as `check(...)` would.
    `none`: targets whose local is None in every record."""
    pad = "    " * depth
    args = ", ".join(f"v_{t}" for t in FIELDS)
    lines = [
        "ts = v_timestamp",
        "iso = None",
        "if ts.__class__ is float and lo <= ts <= hi:",
        *[f"    {line}" for line in iso_lines()],
    ]
    tests = ["iso is not None"] + [TESTS[t].format(v=f"v_{t}") for t in FIELDS[1:] if t not in none]
    values = ["iso"]
    for target in FIELDS[1:]:
        var = f"v_{target}"
        if target in none:
            values.append("_unset")
        elif target in _ARGS:
            values.append(_ARGS[target].format(v=var))
        elif target in ("referer", "bytes_sent", "duration_ms"):
            values.append(f"_unset if {var} is None else {var}")
        else:
            values.append(var)
    lines.append("if (" + "\n        and ".join(tests) + "):")
    lines.append(f"    e = Entry({', '.join(values)})")
    lines.append("else:")
    lines.append(f"    e = check(i, {args}, repairs)")
    return [pad + line for text in lines for line in text.split("\n")]

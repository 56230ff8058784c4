"""The lane (mapping/lane.py) takes only records whose outcome it is sure of.

Every comparison runs one body through `prepare` by the shaped route, whose strict records
try the lane first, and by the dict path, twice each with the same validator: the first pass
meets every IP and timestamp for the first time (the lane hands those to the full code), the
second finds them known (the lane takes what it can). Entries as queued bytes, rejections,
repairs and filtered counts must agree in both passes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config import SourceConfig
from relay.mapping import Mapper, MappingLibrary
from relay.mapping.codegen import compile_spec
from relay.mapping.lane import plan
from relay.mapping.shape import int_keys
from relay.mapping.spec import MappingSpec, parse_spec
from relay.models import RecordContext
from relay.stages.pipeline import Route
from relay.stages.schema import MAX_LENGTH, ValidationPolicy, Validator
from tests.support import FIXTURES
from tests.unit.mapping.test_shape import NOW, outcome, routes

LIBRARY = MappingLibrary()
LANED = [name for name in LIBRARY.names() if (shape := LIBRARY.get(name).shape) is not None and shape.lane is not None]
CLEAN = {"date": NOW - 60, "remote": "192.0.2.1", "host": "-", "user": "-", "method": "GET", "path": "/a?b=1",
         "code": "200", "size": "512", "referer": "-", "agent": "Mozilla/5.0 (X11; Linux x86_64)"}
BASE = {"timestamp": "t", "method": "m", "path": {"from": "p", "parse": "url"}, "status_code": "s", "ip": "i",
        "user_agent": "u", "host": {"from": "h", "parse": "vhost"}, "referer": {"from": "r", "unescape": True},
        "bytes_sent": "b"}


def lane_of(raw: dict[str, Any]) -> Any:
    spec = parse_spec("t", raw, file=None)
    return plan(spec, int_keys(spec))


def strict(name: str, body: bytes, *, lines: bool = False) -> bool:
    """Whether a fresh shape decodes `body` into the strict Struct (whose records try the lane)."""
    shape = Mapper(LIBRARY.get(name).spec).shape
    assert shape is not None
    records = shape.decode(body, lines=lines)
    return bool(records) and records[0].__class__ is shape.strict_type  # type: ignore[index]


def twice(name: str, body: bytes, content_type: str = "application/json", on_invalid: str = "repair") -> Any:
    laned, plain = routes(name, on_invalid)
    for _ in range(2):
        got = outcome(laned, body, content_type)
        assert got == outcome(plain, body, content_type)
    return got


def test_the_fluent_bit_presets_have_a_lane() -> None:
    assert LANED == ["fluentbit-apache2", "fluentbit-gelf", "fluentbit-nginx"]
    lane = LIBRARY.get("fluentbit-nginx").shape.lane  # type: ignore[union-attr]
    assert lane is not None and lane.strings == {"agent", "host", "method", "path", "referer", "remote"}


def test_a_mapping_has_a_lane_only_when_every_rule_is_one_the_lane_knows() -> None:
    assert lane_of(BASE) is not None
    assert lane_of({**BASE, "timestamp": {"from": ["t", "time"]}}) is not None  # later paths: the full code's
    not_laned = {
        "a default": {"method": {"from": "m", "default": "GET"}},
        "a type": {"path": {"from": "p", "type": "str"}},
        "a scale": {"bytes_sent": {"from": "b", "unit": "kb"}},
        "a time format": {"timestamp": {"from": "t", "format": "unix_ms"}},
        "another parser": {"ip": {"from": "i", "parse": "first_ip"}},
        "a nested key": {"method": "req.m"},
        "a header": {"host": "$header.Host"},
        "a query rule": {"query_params": "q"},
        "a duration rule": {"duration_ms": "d"},
        "an integer read as text": {"referer": "s"},
        "a required field left out": {"user_agent": False},
        "a drop rule": {"drop_if": [{"from": "m", "equals": "HEAD"}]},
        "a line parser": {"line": {"from": "msg", "parse": "combined"}},
    }
    for why, change in not_laned.items():
        assert lane_of({**BASE, **change}) is None, why


def test_a_clean_body_is_decoded_strict_and_a_number_where_text_belongs_is_not() -> None:
    assert strict("fluentbit-nginx", json.dumps([CLEAN, CLEAN]).encode())
    assert strict("fluentbit-nginx", (json.dumps(CLEAN) + "\n").encode(), lines=True)
    for key, value in [("agent", 5), ("method", None), ("referer", ["x"]), ("path", True)]:
        body = json.dumps([CLEAN, {**CLEAN, key: value}]).encode()
        assert not strict("fluentbit-nginx", body), key
        twice("fluentbit-nginx", body)  # decoded as before, mapped as before


def _entry_lines(name: str) -> tuple[int, int]:
    """Line numbers of the Entry the lane adds and of the one the full code builds."""
    mapper = LIBRARY.get(name)
    source = compile_spec(mapper.spec, mapper.shape.attrs, lane=mapper.shape.lane)[1].split("\n")  # type: ignore[union-attr]
    return (next(n for n, line in enumerate(source, 1) if "add(Entry(" in line),
            next(n for n, line in enumerate(source, 1) if "e = Entry(" in line))


def _lines_run(name: str, records: list[Any]) -> dict[int, int]:
    """Line number -> times run, of the lane mapping's code, mapping `records` the second time."""
    mapper = Mapper(LIBRARY.get(name).spec)
    shape = mapper.shape
    assert shape is not None and shape.lane is not None
    body = json.dumps(records).encode()
    validator = Validator(ValidationPolicy(now=NOW))
    ctx = RecordContext(source="s", host="fallback.example.com")
    mapper.map_records(shape.decode(body, lines=False) or [], ctx, validator, shaped=True)  # IPs met
    counts: dict[int, int] = {}
    filename = f"<mapping {name}>"

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != filename:
            return None
        if event == "line":
            counts[frame.f_lineno] = counts.get(frame.f_lineno, 0) + 1
        return tracer

    decoded = shape.decode(body, lines=False) or []
    sys.settrace(tracer)
    try:
        result = mapper.map_records(decoded, ctx, validator, shaped=True)
    finally:
        sys.settrace(None)
    assert len(result.entries) == len(records) and not result.rejections
    return counts


def test_the_lane_takes_a_real_fluent_bit_body_but_its_escaped_records() -> None:
    records = [json.loads(line) for line in
               (FIXTURES / "fluent-bit" / "nginx-combined.json" / "records.jsonl").read_text().splitlines()]
    lane_entry, full_entry = _entry_lines("fluentbit-nginx")
    counts = _lines_run("fluentbit-nginx", records)
    # nginx's \xHH escapes (the unescape rule's work) are the full code's: 2 of the 200
    escaped = sum(any("\\" in record[key] for key in ("path", "agent", "referer")) for record in records)
    assert escaped == 2 and counts.get(full_entry) == escaped
    assert counts.get(lane_entry) == len(records) - escaped


@pytest.mark.parametrize("change", [
    {}, {"host": "192.0.2.9"}, {"host": "shop.example.com:8443"}, {"host": "[2001:db8::1]:80"}, {"referer": ""},
    {"referer": "https://r.example.com/?q=1"}, {"referer": None}, {"size": None}, {"path": "/plain"},
    {"path": "/a?b=1&b=2&c"}, {"path": "/a?"}, {"date": NOW - 59.25}, {"user": 5},
], ids=repr)  # fmt: skip
def test_the_lane_takes_the_usual_kinds_of_clean_record(change: dict[str, Any]) -> None:
    record = {key: value for key, value in {**CLEAN, **change}.items() if value is not None}
    lane_entry, full_entry = _entry_lines("fluentbit-nginx")
    counts = _lines_run("fluentbit-nginx", [CLEAN, record])
    assert counts.get(lane_entry) == 2 and full_entry not in counts


# strings a Fluent Bit record may carry where the mapping reads one, the awkward ones included
_TEXT = st.one_of(
    st.text(max_size=8),
    st.sampled_from([
        "-", "", "GET", "get", "POST", "BREW", "/", "/a", "/a?b=c&d=", "/a?b=c#frag", "/a#f", "/a?", "/a??b=1",
        "?x=1", "a", "//x", "http://h.example.com/x?y=1", "https://u@h.example.com:8443/p", "/wiki/na\\xC3\\xAFve",
        "/a?" + "&".join(f"k{n}=v" for n in range(60)), "/a?k=" + "v" * 1001, "/a?" + "q" * 600,
        "/" + "p" * (MAX_LENGTH["path"] - 1), "/" + "p" * MAX_LENGTH["path"], "x" * MAX_LENGTH["user_agent"],
        "x" * (MAX_LENGTH["user_agent"] + 1), "r" * (MAX_LENGTH["referer"] + 1), "192.0.2.1", "192.0.2.7:8080",
        "::1", "[2001:db8::1]:443", "2001:db8::1", "999.1.1.1", "www.example.com", "www.example.com:8443",
        "h" * 256, " 200", "200", "404", "2e2", "-5", "caf\u00e9", "\\", "a\\\"b", "\u2028",
    ]),
)  # fmt: skip
_DATES = st.one_of(
    st.floats(NOW - 40 * 86400, NOW + 2 * 86400), st.sampled_from([NOW - 60, NOW - 59.5, NOW - 0.001, NOW * 1000]),
    st.integers(int(NOW) - 100, int(NOW)), _TEXT, st.sampled_from(["2026-11-25T09:00:00Z", "1795598000"]),
)


@pytest.mark.parametrize("name", LANED)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mostly_clean_records_map_the_same_through_the_lane(name: str, data: st.DataObject) -> None:
    keys = LIBRARY.get(name).shape.keys  # type: ignore[union-attr]
    ints = LIBRARY.get(name).shape.ints  # type: ignore[union-attr]
    clean = {key: CLEAN.get(key, "x") for key in keys}
    clean.update({key: "200" for key in ints})
    clean.update({key: NOW - 60 for key in keys if key in ("date", "timestamp")})
    clean.update({key: "192.0.2.1" for key in keys if key in ("remote", "_remote")})
    records = []
    for _ in range(data.draw(st.integers(1, 5))):
        record = dict(clean)
        for key in data.draw(st.lists(st.sampled_from(keys), max_size=3)):
            if data.draw(st.booleans()):
                record.pop(key, None)
            else:
                record[key] = data.draw(_DATES if key in ("date", "timestamp") else _TEXT)
        records.append(record)
    body = json.dumps(records).encode()
    twice(name, body)
    twice(name, body, on_invalid="reject")
    twice(name, b"\n".join(json.dumps(r).encode() for r in records), "application/x-ndjson")


@pytest.mark.parametrize(("key", "value"), [
    ("host", "-"), ("host", ""), ("host", "192.0.2.9"), ("host", "shop.example.com:8443"), ("host", "h" * 256),
    ("path", "http://abs.example.com/x?y=1"), ("path", "/x#top"), ("path", "/x?a=1#top"), ("path", "?a=1"),
    ("path", "/x?k=" + "v" * 1001), ("path", "/x??k=1"), ("path", "-"), ("referer", ""), ("referer", "https://r.example.com/"),
    ("agent", "-"), ("agent", ""), ("method", "get"), ("remote", "192.0.2.1:8080"), ("date", NOW - 0.25),
    ("date", NOW * 1000), ("date", NOW + 5 * 86400), ("date", "25/Nov/2026:09:00:00 +0000"), ("size", "-"),
], ids=repr)  # fmt: skip
def test_each_kind_of_record_the_lane_turns_away_maps_the_same(key: str, value: Any) -> None:
    body = json.dumps([CLEAN, {**CLEAN, key: value}, {k: v for k, v in CLEAN.items() if k != key}]).encode()
    for on_invalid in ("repair", "reject"):
        twice("fluentbit-nginx", body, on_invalid=on_invalid)


@pytest.mark.parametrize("path", ["http://abs.example.com/x?y=1", "https://abs.example.com", "/x?y=1"])
def test_an_absolute_url_fills_the_host_where_no_rule_does(path: str) -> None:
    record = {"date": NOW - 60, "host": "192.0.2.1", "method": "GET", "path": path, "code": "200", "size": "5",
              "referer": "-", "agent": "ua"}
    body = json.dumps([record, record]).encode()
    assert strict("fluentbit-apache2", body)
    lines = twice("fluentbit-apache2", body)[0]
    host = "abs.example.com" if "://" in path else "fallback.example.com"
    assert lines.count(f'"host":"{host}"'.encode()) == 2


def test_a_window_reaching_past_1e11_still_reads_milliseconds_as_the_full_code_does() -> None:
    body = json.dumps([{**CLEAN, "date": (NOW - 60) * 1000}, CLEAN]).encode()
    got = []
    for laned in (True, False):
        mapper = Mapper(LIBRARY.get("fluentbit-nginx").spec)
        if not laned:
            mapper.shape = None
        validator = Validator(ValidationPolicy(now=NOW, max_future=1e13))
        route = Route("s", SourceConfig(mapping="fluentbit-nginx", host="fallback.example.com"), mapper, validator, [])
        route.typed = None
        got.append([outcome(route, body, "application/json") for _ in range(2)])
    assert got[0] == got[1] and got[0][0][0].count(b'"timestamp":"2026-11-25T09:29:00Z"') == 2


def test_a_mapping_without_a_lane_compiles_as_before() -> None:
    spec: MappingSpec = LIBRARY.get("nginx-json").spec
    shape = LIBRARY.get("nginx-json").shape
    assert shape is not None and shape.lane is None and shape.strict_type is None
    assert "l_" not in compile_spec(spec, shape.attrs)[1]

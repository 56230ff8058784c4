"""Records decoded into a mapping's Struct (mapping/shape.py) map exactly as the dict records do.

Every comparison runs one body through `prepare` twice: once by the shaped route and once
with the shape switched off (the dict path every body took before). Entries, queued bytes,
rejections (index, field, rule, message), repairs and filtered counts must all agree.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config import SourceConfig
from relay.mapping import Mapper, MappingLibrary
from relay.mapping.shape import _BACKOFF, int_keys, record_keys
from relay.mapping.spec import parse_spec
from relay.stages import pipeline
from relay.stages.pipeline import Route
from relay.stages.schema import ValidationPolicy, Validator
from tests.support import FIXTURES

NOW = 1795599000.0  # 2026-11-25T09:30:00Z: the fixtures and the values below are of that day
LIMIT = 16 * 2**20
# the presets, and one config mapping that drops by a record key and by a mapped field
DROPPER = {"extends": "fluentbit-nginx", "drop_if": [{"from": "user", "in": ["-", "bot"]},
                                                     {"field": "path", "prefix": "/health"}]}
LIBRARY = MappingLibrary({"dropper": DROPPER})
SHAPED = [name for name in LIBRARY.names() if LIBRARY.get(name).shape is not None]


def routes(name: str, on_invalid: str = "repair") -> tuple[Route, Route]:
    """(shaped, dict) routes of mapping `name`; the typed passthrough route off in both."""
    spec = LIBRARY.get(name).spec
    out = []
    for shaped in (True, False):
        mapper = Mapper(spec)
        if not shaped:
            mapper.shape = None
        validator = Validator(ValidationPolicy(on_invalid=on_invalid, now=NOW))  # type: ignore[arg-type]
        route = Route(name, SourceConfig(mapping=name, host="fallback.example.com"), mapper, validator, [])
        route.typed = None
        out.append(route)
    return out[0], out[1]


def outcome(route: Route, body: bytes, content_type: str, encoding: str | None = None) -> Any:
    try:
        prepared = pipeline.prepare(route, body, content_type=content_type, content_encoding=encoding,
                                    headers={"X-Tag": "t"}, max_size=LIMIT)
    except Exception as exc:  # a 400 must be the same 400 both ways
        return ("raised", type(exc).__name__, str(exc))
    result = prepared.result
    return (prepared.lines, prepared.received, [(r.index, r.field, r.reason, r.message) for r in prepared.rejections],
            result.repairs, result.filtered)


def same(name: str, body: bytes, content_type: str = "application/json", encoding: str | None = None,
         on_invalid: str = "repair") -> Any:
    shaped, plain = routes(name, on_invalid)
    got = outcome(shaped, body, content_type, encoding)
    assert got == outcome(plain, body, content_type, encoding)
    return got


def test_keys_are_the_plain_keys_a_mapping_reads() -> None:
    assert LIBRARY.get("fluentbit-nginx").shape.keys == [  # type: ignore[union-attr]
        "date", "@timestamp", "time", "method", "host", "path", "code", "remote", "agent", "referer", "size"]
    nested = parse_spec("n", {"timestamp": "t", "method": "http.method", "path": "p", "status_code": "s",
                              "ip": "i", "user_agent": "u"}, file=None)
    assert record_keys(nested) is None  # a nested (or flattened dotted) path: the dict path, always
    indexed = parse_spec("x", {"timestamp": "t", "method": "m[0]", "path": "p", "status_code": "s",
                               "ip": "i", "user_agent": "u", "host": "$header.Host"}, file=None)
    assert record_keys(indexed) is None
    headers = parse_spec("h", {"timestamp": "$time", "method": "m", "path": "p", "status_code": "s", "ip": "i",
                               "user_agent": "u", "host": "$header.Host",
                               "drop_if": [{"from": "probe", "equals": "1"}]}, file=None)
    assert record_keys(headers) == ["m", "p", "s", "i", "u", "probe"]  # drop_if paths count, specials do not


def test_the_fluentbit_workload_takes_the_shaped_route(monkeypatch: pytest.MonkeyPatch) -> None:
    shaped, _ = routes("fluentbit-nginx")
    body = (FIXTURES / "fluent-bit" / "nginx-combined.json" / "body.bin").read_bytes()

    def refuse(*args: Any) -> Any:
        raise AssertionError("took the dict path")

    monkeypatch.setattr(pipeline, "decode_data", refuse)
    prepared = pipeline.prepare(shaped, body, content_type="application/json", content_encoding=None,
                                headers={}, max_size=LIMIT)
    assert prepared.accepted and not prepared.rejections


FLUENT_BIT_JSON = sorted(p for p in (FIXTURES / "fluent-bit").iterdir()
                         if p.name.startswith("nginx-") and "msgpack" not in p.name and (p / "body.bin").exists())


@pytest.mark.parametrize("folder", FLUENT_BIT_JSON, ids=lambda p: p.name)
def test_fluent_bit_fixtures_map_the_same(folder: Any) -> None:
    request = json.loads((folder / "request.json").read_text())
    headers = {name.lower(): value for name, value in request["headers"]}
    mapping = "nginx-json" if folder.name.startswith("nginx-json") else "fluentbit-nginx"
    got = same(mapping, (folder / "body.bin").read_bytes(), headers.get("content-type", "application/json"),
               headers.get("content-encoding"))
    assert got[1] == request["record_count"] and got[0], got[2]


def test_a_body_with_a_rejection_is_mapped_again_from_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    shaped, _ = routes("fluentbit-nginx")
    ok = {"date": NOW - 60, "remote": "192.0.2.1", "method": "GET", "path": "/", "code": "200", "agent": "ua",
          "user": "kept"}
    calls: list[Any] = []
    real = pipeline.decode_data
    monkeypatch.setattr(pipeline, "decode_data", lambda *args: calls.append(args) or real(*args))
    assert not pipeline.prepare(shaped, json.dumps([ok, ok]).encode(), content_type="application/json",
                                content_encoding=None, headers={}, max_size=LIMIT).rejections and not calls
    prepared = pipeline.prepare(shaped, json.dumps([ok, {**ok, "code": "999"}]).encode(),
                                content_type="application/json", content_encoding=None, headers={}, max_size=LIMIT)
    assert [r.index for r in prepared.rejections] == [1] and len(calls) == 1  # the record, whole, from dicts


def test_a_body_with_a_non_object_takes_the_dict_path_and_its_rejection() -> None:
    ok = {"date": NOW - 60, "remote": "192.0.2.1", "method": "GET", "path": "/", "code": "200", "agent": "ua"}
    got = same("fluentbit-nginx", json.dumps([ok, "oops", [1, 2], ok]).encode())
    assert [r[:3] for r in got[2]] == [(1, None, "not_object"), (2, None, "not_object")]
    lines = json.dumps(ok) + "\n7\n" + json.dumps(ok) + "\n"
    assert same("fluentbit-nginx", lines.encode(), "application/x-ndjson")[2][0][:3] == (1, None, "not_object")


def test_duplicate_keys_and_nulls_read_as_dicts_read_them() -> None:
    body = (b'[{"date": 1795598000.25, "date": 1795598900.5, "remote": "192.0.2.1:80", "method": "get",'
            b' "path": "/a?b=c", "code": null, "agent": "ua", "host": "-"},'
            b' {"remote": "2001:db8::1", "method": "GET", "path": "/", "code": 200, "agent": null}]')
    got = same("fluentbit-nginx", body)
    assert got[2][0][:3] == (0, "status_code", "required")
    assert same("fluentbit-nginx", body, on_invalid="reject") != got


def test_keys_read_only_as_plain_integers_are_typed_int() -> None:
    assert int_keys(LIBRARY.get("fluentbit-nginx").spec) == {"code", "size"}
    spec = {"timestamp": "t", "method": "m", "path": "p", "ip": "i", "user_agent": "u",
            "status_code": "s", "bytes_sent": {"from": "b", "scale": 1024}}
    assert int_keys(parse_spec("scaled", spec, file=None)) == {"s"}  # a scale, type or parse keeps it as sent
    dropped = {**spec, "drop_if": [{"from": "s", "equals": "404"}]}
    assert int_keys(parse_spec("dropped", dropped, file=None)) == set()  # a drop rule tests the text sent
    twice = {**spec, "referer": "s"}
    assert int_keys(parse_spec("twice", twice, file=None)) == set()  # read as a string elsewhere too


def test_integer_keys_are_converted_in_c_and_a_failed_body_backs_off() -> None:
    shape = Mapper(LIBRARY.get("fluentbit-nginx").spec).shape
    assert shape is not None
    code, size = shape.attrs["code"], shape.attrs["size"]
    good = json.dumps([{"code": "200", "size": "512", "path": "/"}]).encode()
    bad = json.dumps([{"code": "200", "size": "-", "path": "/"}]).encode()
    first = shape.decode(good, lines=False)[0]  # type: ignore[index]
    assert (getattr(first, code), getattr(first, size)) == (200, 512)
    loose = shape.decode(bad, lines=False)[0]  # type: ignore[index]
    assert (getattr(loose, code), getattr(loose, size)) == ("200", "-")  # every key as sent, as before
    for _ in range(_BACKOFF):  # the next bodies skip the typed try
        assert getattr(shape.decode(good, lines=False)[0], code) == "200"  # type: ignore[index]
    assert getattr(shape.decode(good, lines=False)[0], code) == 200  # type: ignore[index]
    assert getattr(shape.decode(good.replace(b"[", b"").replace(b"]", b""), lines=True)[0], size) == 512  # type: ignore[index]


@pytest.mark.parametrize("value", ["200", "2e2", "200.0", "-0", "0200", " 200", "+200", "200 ", "null", "", "-",
                                   "1_000", "\uff12\uff10\uff10", "1e400", "9" * 25, "0x10", "1.5", 200.0, 200.5,
                                   True, None, -5, 10**20, 1e20, 1e300, -0.0, [200], {"v": 200}], ids=repr)
def test_an_integer_converted_in_c_maps_as_to_int_reads_it(value: Any) -> None:
    base = {"date": NOW - 60, "remote": "192.0.2.1", "method": "GET", "path": "/", "code": "200", "size": "5",
            "agent": "ua"}
    body = json.dumps([base, {**base, "code": value}, {**base, "size": value}]).encode()
    same("fluentbit-nginx", body)
    same("fluentbit-nginx", body, on_invalid="reject")


# Values of the kinds real records carry, and the awkward ones: placeholders, wrong types, ports,
# ISO/CLF/epoch times as strings and numbers, nested values, text with escapes.
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False, allow_infinity=False),
    st.floats(NOW - 40 * 86400, NOW + 2 * 86400), st.text(max_size=12),
    st.sampled_from(["-", "", "GET", "get", "POST", "200", "404", " 200", "999", "/", "/a?b=c&d=",
                     "http://h.example.com/x?y=1", "192.0.2.1", "192.0.2.1:8080", "[2001:db8::1]:443", "::1",
                     "www.example.com", "www.example.com:8443", "25/Nov/2026:09:00:00 +0100",
                     "2026-11-25T09:00:00.5Z", "2026-11-25 09:00:00", "1795598000", "1795598000123",
                     "/wiki/na\\xC3\\xAFve", "GET /x?q=1 HTTP/1.1", "0.123", "1.5k"]),
    st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.sampled_from(["a", "b"]), st.text(max_size=3), max_size=2),
)  # fmt: skip


@pytest.mark.parametrize("name", SHAPED)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_records_map_the_same(name: str, data: st.DataObject) -> None:
    keys = [*LIBRARY.get(name).shape.keys, "user", "extra"]  # type: ignore[union-attr]
    record = st.dictionaries(st.sampled_from(keys), _VALUES, max_size=len(keys))
    records = data.draw(st.lists(record, min_size=1, max_size=4))
    body = json.dumps(records).encode()
    same(name, body)
    same(name, body, on_invalid="reject")
    same(name, b"\n".join(json.dumps(r).encode() for r in records), "application/x-ndjson")


def test_the_structs_take_the_key_order_of_the_first_body() -> None:
    shape = Mapper(LIBRARY.get("fluentbit-nginx").spec).shape
    assert shape is not None and shape.order == shape.keys
    record = {"agent": "ua", "size": "5", "code": "200", "path": "/", "method": "GET", "remote": "192.0.2.1",
              "date": NOW - 60}
    first = shape.decode(json.dumps([record]).encode(), lines=False)[0]  # type: ignore[index]
    assert shape.order[:7] == list(record) and sorted(shape.order) == sorted(shape.keys)
    assert [name for name in first.__struct_fields__][:7] == [shape.attrs[key] for key in record]
    assert (getattr(first, shape.attrs["agent"]), getattr(first, shape.attrs["size"])) == ("ua", 5)
    shape.decode(json.dumps([dict(reversed(record.items()))]).encode(), lines=False)
    assert shape.order[:7] == list(record)  # learnt once: a later body in another order changes nothing

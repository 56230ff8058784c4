"""The typed fast route for upstream-form bodies (relay.stages.typed): same outcome as the
per-record path on every body, entry for entry, rejection for rejection, repair for repair."""

from __future__ import annotations

import gzip
import json
from typing import Any

import msgspec
import pytest

from relay.config import SourceConfig
from relay.errors import IngestError
from relay.mapping import MappingLibrary
from relay.mapping.spec import is_passthrough
from relay.stages.pipeline import Prepared, Route, prepare
from relay.stages.schema import ValidationPolicy, Validator
from relay.stages.typed import TypedRoute
from relay.tools.bench.stages import route_for
from relay.tools.bench.workloads import build_bodies, workload
from tests.support import FIXTURES

NOW = 1795599000.0  # 2026-11-25T09:30:00Z
MAX = 64 * 1024 * 1024


def routes(on_invalid: str = "repair", mapping: str = "profound", now: float = NOW) -> tuple[Route, Route]:
    """(with the typed route, without it): the same source twice."""
    made = []
    for typed in (True, False):
        route = Route("custom", SourceConfig(mapping=mapping, host="fallback.example.com"),
                      MappingLibrary().get(mapping), Validator(ValidationPolicy(on_invalid=on_invalid, now=now)), [])
        if not typed:
            route.typed = None
        made.append(route)
    return made[0], made[1]


def run(route: Route, body: bytes, content_type: str = "application/json", encoding: str | None = None) -> Any:
    try:
        out: Prepared = prepare(route, body, content_type=content_type, content_encoding=encoding,
                                headers={}, max_size=MAX)
    except IngestError as exc:
        return type(exc).__name__, str(exc)
    return out.lines, out.rejections, out.result.repairs, out.result.filtered, out.received


def same(body: bytes, content_type: str = "application/json", encoding: str | None = None,
         on_invalid: str = "repair") -> Any:
    fast, slow = routes(on_invalid)
    expected = run(slow, body, content_type, encoding)
    assert run(fast, body, content_type, encoding) == expected
    return expected


def entry(**changes: Any) -> dict[str, Any]:
    base = {"timestamp": "2026-11-25T09:00:00.123Z", "method": "GET", "host": "www.example.com",
            "path": "/a/b", "status_code": 200, "ip": "203.0.113.9", "user_agent": "curl/8.5",
            "query_params": {"q": "x"}, "referer": "https://example.org/", "bytes_sent": 512, "duration_ms": 1.5}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def test_profound_is_the_passthrough_and_shipper_presets_are_not() -> None:
    library = MappingLibrary()
    assert is_passthrough(library.get("profound").spec)
    assert not is_passthrough(library.get("fluentbit-nginx").spec)
    assert routes()[0].typed is not None
    assert routes(mapping="fluentbit-nginx")[0].typed is None


@pytest.mark.parametrize("name", ["passthrough", "ndjson"])
def test_generated_traffic_takes_the_typed_route_with_the_same_entries(name: str) -> None:
    load = workload(name)
    fast, slow = route_for(name), route_for(name)
    slow.typed = None
    for body in build_bodies(load, 3):
        plain = prepare(slow, body, content_type=load.content_type, content_encoding="gzip", headers={}, max_size=MAX)
        # the typed route takes the whole body (None would mean: per record)
        from relay.stages.compression import decompress

        assert fast.typed is not None
        assert fast.typed.entries(decompress(body, "gzip", MAX), lines=name == "ndjson",
                                  validator=fast.validator) is not None
        typed = prepare(fast, body, content_type=load.content_type, content_encoding="gzip", headers={}, max_size=MAX)
        assert typed.lines == plain.lines
        assert (typed.rejections, typed.result.repairs, typed.received) == ([], {}, 1000)
        assert plain.rejections == [] and plain.result.repairs == {}


def _fixtures() -> list[Any]:
    found = []
    for request in sorted(FIXTURES.glob("*/*/request.json")):
        found.append(pytest.param(request.parent, id=f"{request.parent.parent.name}/{request.parent.name}"))
    return found


@pytest.mark.parametrize("folder", _fixtures())
@pytest.mark.parametrize("on_invalid", ["repair", "reject"])
def test_every_shipper_fixture_has_the_same_outcome(folder: Any, on_invalid: str) -> None:
    request = json.loads((folder / "request.json").read_text())
    headers = {k.lower(): v for k, v in request["headers"]}
    same((folder / "body.bin").read_bytes(), headers.get("content-type", ""), headers.get("content-encoding"),
         on_invalid)


def test_one_bad_entry_falls_back_and_is_named_as_before() -> None:
    body = msgspec.json.encode([entry(), entry(), entry(), entry(status_code=99), entry()])
    lines, rejections, repairs, _, received = same(body)
    assert received == 5 and lines.count(b"\n") == 4 and repairs == {}
    assert [(r.index, r.field, r.reason, r.message) for r in rejections] == [
        (3, "status_code", "range", "must be an integer 100..599, got 99")]


@pytest.mark.parametrize("change", [
    {"method": "get"}, {"ip": "203.0.113.9:443"}, {"user_agent": ""}, {"user_agent": "-"}, {"host": "-"},
    {"host": ...}, {"referer": "-"}, {"referer": ""}, {"path": "x" * 3000}, {"query_params": {}},
    {"query_params": {"k": 1}}, {"query_params": {"k" * 101: "v"}}, {"timestamp": 1795597200},
    {"timestamp": "2026-11-25T09:00:00.000Z"}, {"timestamp": "2026-11-25T09:00:00.120000Z"},
    {"timestamp": "2026-11-25T09:00:00.000000Z"}, {"timestamp": "2026-11-25T09:00:00.123456Z"},
    {"timestamp": "2026-11-25T09:00:00+01:00"}, {"timestamp": "2026-11-25T09:00:00.12Z"},
    {"timestamp": "2026-02-30T09:00:00Z"}, {"timestamp": "2026-11-25T09:00: 1Z"},
    {"timestamp": "2025-11-25T09:00:00Z"}, {"timestamp": "2026-11-26T09:30:00Z"},
    {"timestamp": "2026-11-26T09:29:59.999Z"}, {"status_code": 200.0}, {"status_code": "200"},
    {"bytes_sent": -1}, {"bytes_sent": 2**63}, {"duration_ms": 3}, {"duration_ms": -0.5}, {"duration_ms": None},
    {"ip": "not-an-ip"}, {"ip": "[::1]:80"}, {"ip": "::1"}, {"host": "é" * 255}, {"host": "é" * 256},
    {"extra": "ignored"}, {"query_params": ...}, {"method": "PURGE"}, {"method": "FOO"},
])  # fmt: skip
@pytest.mark.parametrize("on_invalid", ["repair", "reject"])
def test_edge_values_have_the_same_outcome(change: dict[str, Any], on_invalid: str) -> None:
    records = [entry(), entry(**change), entry()]
    same(msgspec.json.encode(records), on_invalid=on_invalid)
    same(gzip.compress(msgspec.json.encode(records)), encoding="gzip", on_invalid=on_invalid)  # may go as it came
    ndjson = b"\n".join(msgspec.json.encode(r) for r in records) + b"\n"
    same(ndjson, "application/x-ndjson", on_invalid=on_invalid)


def test_zero_fractions_are_written_back_as_the_per_record_path_writes_them() -> None:
    body = msgspec.json.encode([entry(timestamp="2026-11-25T09:00:00.000Z"),
                                entry(timestamp="2026-11-25T09:00:00.120000Z")])
    fast, _ = routes()
    assert fast.typed is not None
    found = fast.typed.entries(body, lines=False, validator=fast.validator)
    assert found is not None and [e.timestamp for e in found] == ["2026-11-25T09:00:00Z", "2026-11-25T09:00:00.120Z"]
    assert same(body)[0] == run(fast, body)[0]


def test_a_gzip_array_of_untouched_entries_is_kept_as_it_came() -> None:
    fast, slow = routes()
    records = [entry(), entry(timestamp="2026-11-25T09:00:00.000Z"), entry(user_agent="caf\u00e9 \u2603")]
    text = json.dumps(records, indent=1).encode()  # the client's spacing and escapes are its own
    body = gzip.compress(text)
    out = prepare(fast, body, content_type="application/json", content_encoding="gzip", headers={}, max_size=MAX)
    assert out.as_received is body and out.encoded is None  # nothing encoded unless a commit asks
    assert out.result.entries == [] and out.accepted == 3  # let go at once, counted
    expected = prepare(slow, body, content_type="application/json", content_encoding="gzip", headers={},
                       max_size=MAX)
    assert out.lines == expected.lines and out.encoded is not None
    # what upstream reads from the body as it came is what the relay would have sent
    sent = json.loads(gzip.decompress(out.as_received))
    assert [msgspec.json.decode(line) for line in expected.lines.splitlines()] == [
        {**e, "timestamp": "2026-11-25T09:00:00Z"} if e["timestamp"].endswith(".000Z") else e for e in sent]


_ARRAY = msgspec.json.encode([entry(), entry(path="/c")])


@pytest.mark.parametrize(("body", "content_type", "encoding"), [
    (gzip.compress(msgspec.json.encode([entry(), entry(extra="not for upstream")])), "application/json", "gzip"),
    (_ARRAY, "application/json", None),  # not compressed: the sink compresses it
    (gzip.compress(b"\n".join(msgspec.json.encode(e) for e in [entry(), entry()])), "application/x-ndjson", "gzip"),
    (gzip.compress(_ARRAY[:100]) + gzip.compress(_ARRAY[100:]), "application/json", "gzip"),  # two members
])
def test_other_bodies_are_encoded_by_the_relay(body: bytes, content_type: str, encoding: str | None) -> None:
    fast, _ = routes()
    assert fast.typed is not None
    out = prepare(fast, body, content_type=content_type, content_encoding=encoding, headers={}, max_size=MAX)
    assert out.accepted and not out.rejections
    assert out.as_received is None
    # and the typed route took it, all the same
    plain = gzip.decompress(body) if encoding else body
    assert fast.typed.entries(plain, lines=content_type.endswith("ndjson"), validator=fast.validator) is not None


def test_empty_and_odd_bodies_go_the_per_record_way() -> None:
    typed = TypedRoute()
    validator = Validator(ValidationPolicy(now=NOW))
    for body in (b"[]", b"[1]", b"[{}]", b"{", b"[" + msgspec.json.encode(entry())[:-1]):
        assert typed.entries(body, lines=False, validator=validator) is None
        same(body)

"""The compiled mapping's inline copy of `check`'s fast path (mapping/fused.py) decides as `check` does.

Each comparison maps the same records with the fused function and with the same mapping
compiled to call `check` for every record (`fuse=False`, how every mapping ran before),
each with a fresh Validator: entries (as queued bytes), rejections, repairs and filtered
counts must be identical.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.mapping import MappingLibrary
from relay.mapping.codegen import compile_spec
from relay.mapping.spec import MappingSpec
from relay.models import RecordContext
from relay.stages.decode import decode_data
from relay.stages.schema import ValidationPolicy, Validator
from relay.tools.bench.workloads import build_bodies, workload
from tests.support import FIXTURES
from tests.unit.mapping.test_shape import _VALUES

NOW = 1795599000.0  # 2026-11-25T09:30:00Z
LIBRARY = MappingLibrary({"dropper": {"extends": "fluentbit-nginx", "drop_if": [{"field": "path", "prefix": "/api"}]}})
CTX = RecordContext(source="s", tag="app.nginx", headers={"Host": "hdr.example.com"}, host="fallback.example.com")


def run(spec: MappingSpec, records: list[Any], *, fuse: bool, on_invalid: str) -> Any:
    batch = compile_spec(spec, fuse=fuse)[0]
    validator = Validator(ValidationPolicy(on_invalid=on_invalid, now=NOW))  # type: ignore[arg-type]
    validator.begin()
    repairs: dict[str, int] = {}
    entries, rejected, filtered = batch(records, CTX, validator.check, repairs, validator.fast_parts())
    return msgspec.json.encode(entries), [(r.index, r.field, r.reason, r.message) for r in rejected], repairs, filtered


def same(name: str, records: list[Any]) -> Any:
    spec = LIBRARY.get(name).spec
    for on_invalid in ("repair", "reject"):
        got = run(spec, records, fuse=True, on_invalid=on_invalid)
        assert got == run(spec, records, fuse=False, on_invalid=on_invalid), (name, on_invalid)
    return got


def test_fused_code_is_what_runs() -> None:
    source = LIBRARY.get("fluentbit-nginx").source
    assert "e = Entry(iso, " in source and "_unset)" in source  # duration_ms: nothing fills it, left unset


@pytest.mark.parametrize(("name", "mapping"), [("fluentbit", "fluentbit-nginx"), ("passthrough", "profound"),
                                               ("fluentbit", "dropper")])
def test_generated_traffic_maps_the_same(name: str, mapping: str) -> None:
    body = gzip.decompress(next(iter(build_bodies(workload(name), 1))))
    records = decode_data("json", body).records
    entries, rejected, _, filtered = same(mapping, records)
    assert entries.count(b'"timestamp"') + len(rejected) + filtered == len(records) == 1000
    assert filtered or mapping != "dropper"


@pytest.mark.parametrize("folder", sorted(p for p in (FIXTURES / "fluent-bit").iterdir() if (p / "body.bin").exists()),
                         ids=lambda p: p.name)
def test_fluent_bit_fixtures_map_the_same(folder: Any) -> None:
    request = json.loads((folder / "request.json").read_text())
    headers = {name.lower(): value for name, value in request["headers"]}
    body = (folder / "body.bin").read_bytes()
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    kind = "msgpack" if "msgpack" in folder.name else "lines" if "json_lines" in folder.name else "json"
    records = decode_data(kind, body).records
    mapping = "nginx-json" if folder.name.startswith("nginx-json") else \
        "nginx-combined" if folder.name.startswith("raw-line") else "fluentbit-nginx"
    assert same(mapping, records)[0] != b"[]"


@pytest.mark.parametrize("name", LIBRARY.names())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_records_map_the_same(name: str, data: st.DataObject) -> None:
    spec = LIBRARY.get(name).spec
    keys = sorted({str(p.steps[0]) for rule in spec.fields.values() if rule for s in rule.sources for p in s.paths
                   if p.kind == "record" and p.steps} | {"user"})
    record = st.dictionaries(st.sampled_from(keys), _VALUES, max_size=len(keys))
    same(name, data.draw(st.lists(st.one_of(record, st.integers()), min_size=1, max_size=4)))


def _edges() -> list[dict[str, Any]]:
    """One record per limit of `check`'s fast path, on each side of it."""
    base = {"timestamp": NOW - 60.5, "method": "GET", "host": "h.example.com", "path": "/", "status_code": 200,
            "ip": "192.0.2.1", "user_agent": "ua"}
    out = [base]
    for key, values in {
        "timestamp": [NOW - 60.1234, NOW - 60.1, NOW - 60.0, NOW - 60.0000004, NOW - 31 * 86400, NOW + 86399.5,
                      NOW + 2 * 86400, 1795598000],
        "method": ["get", "PURGE", "FETCH", "GETGETGETGET"],
        "host": ["h" * 255, "h" * 256],
        # a query in the path (fluentbit-nginx parses it): the parser's shared Query within the limits,
        # a dict of its own over them
        "path": ["/" * 2048, "/" * 2049, "/p?k=v", f"/p?{'k' * 100}=v", f"/p?{'k' * 101}=v", f"/p?k={'v' * 1000}",
                 f"/p?k={'v' * 1001}&a=b"],
        "status_code": [99, 100, 599, 600, 200.0, True],
        "ip": ["192.0.2.1:80", "2001:db8::1", "not-an-ip", "192.0.2.300"],
        "user_agent": ["", "u" * 1024, "u" * 1025, 7],
        "referer": ["r" * 2048, "r" * 2049, 5, ""],
        "bytes_sent": [0, -1, 2**63 - 1, 2**63, 1.0, "12"],
        "duration_ms": [0, 0.5, -0.1, 1.8e308, "3", True],
        "query_params": [{}, {"k": "v"}, {"k" * 101: "v"}, {"k": "v" * 1001}, {"k": 1}, {"k": None}, "a=b"],
    }.items():
        out += [{**base, key: value} for value in values]
    return out


@pytest.mark.parametrize("name", ["profound", "fluentbit-nginx", "nginx-json"])
def test_every_limit_of_the_fast_path_decides_as_check_does(name: str) -> None:
    records = _edges()
    if name != "profound":  # the same values under the keys these mappings read
        keys = {"fluentbit-nginx": {"timestamp": "date", "host": "host", "path": "path", "status_code": "code",
                                    "ip": "remote", "user_agent": "agent", "referer": "referer", "bytes_sent": "size"},
                "nginx-json": {"timestamp": "msec", "method": "request_method", "host": "host", "path": "uri",
                               "status_code": "status", "ip": "remote_addr", "user_agent": "http_user_agent",
                               "referer": "http_referer", "bytes_sent": "body_bytes_sent",
                               "duration_ms": "request_time"}}[name]
        records = [{keys.get(k, k): v for k, v in r.items()} for r in records]
    entries, rejected, _, _ = same(name, records)
    assert rejected and entries.count(b'"timestamp"') > len(records) // 2


def test_a_parsed_query_over_a_limit_is_still_repaired() -> None:
    """The parser's shared Query skips the pair-by-pair test; one over a limit must not be a Query."""
    spec = LIBRARY.get("fluentbit-nginx").spec
    base = {"date": NOW - 60.5, "method": "GET", "path": "/p?k=v", "code": "200", "remote": "192.0.2.1", "agent": "ua"}
    records = [base, {**base, "path": f"/p?{'k' * 101}=v"}, {**base, "path": f"/p?k={'v' * 1001}"}]
    rejected = same("fluentbit-nginx", records)[1]  # the last mode: reject
    assert [(index, field) for index, field, _, _ in rejected] == [(1, "query_params"), (2, "query_params")]
    entries, rejected, repairs, _ = run(spec, records, fuse=True, on_invalid="repair")
    assert repairs == {"query_params:truncated": 2} and not rejected
    assert entries.count(b'"query_params":{"k":"v"}') == 1 and b'"' + b"k" * 100 + b'":"v"' in entries

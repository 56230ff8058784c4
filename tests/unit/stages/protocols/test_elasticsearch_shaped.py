"""`_bulk` bodies decoded into the mapping's record Struct (elasticsearch.decode_shaped) give what
the dict path gives: the same entries, rejections, repairs and per-item answers, or None."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config import SourceConfig
from relay.mapping import MappingLibrary
from relay.stages.compression import decompress
from relay.stages.pipeline import Prepared, Route, prepare
from relay.stages.protocols.elasticsearch import decode_shaped
from relay.stages.schema import ValidationPolicy, Validator
from relay.tools.bench.processes import PINNED_NOW
from relay.tools.bench.workloads import build_bodies, workload

FIXTURE = Path(__file__).parents[3] / "fixtures" / "fluent-bit-native" / "es.gzip" / "body.bin"
FIXTURE_NOW = datetime.fromisoformat("2026-11-25T09:00:00+00:00").timestamp()
NDJSON = "application/x-ndjson"
MAX = 64 * 2**20


def routes(mapping: str, now: float) -> tuple[Route, Route]:
    """The same source twice: with its protocol's shaped decoder, and without it (the dict path)."""
    config = msgspec.convert({"mapping": mapping, "host": "www.example.com", "protocol": "elasticsearch"}, SourceConfig)
    library = MappingLibrary()
    shaped = Route("es", config, library.get(mapping), Validator(ValidationPolicy(now=now)), [])
    plain = Route("es", config, library.get(mapping), Validator(ValidationPolicy(now=now)), [])
    plain.shaped = None
    return shaped, plain


def outcome(prepared: Prepared) -> tuple[Any, ...]:
    return (prepared.lines, prepared.received, [(r.index, r.field, r.reason, r.message) for r in prepared.rejections],
            prepared.meta, prepared.result.repairs, prepared.result.filtered,
            [(r.index, what) for r, what in prepared.rejected])


def both(mapping: str, body: bytes, now: float, encoding: str | None = None, path: str = "/_bulk") -> tuple[Any, Any]:
    out = []
    for route in routes(mapping, now):
        out.append(outcome(prepare(route, body, content_type=NDJSON, content_encoding=encoding, headers={},
                                   max_size=MAX, path=path)))
    return out[0], out[1]


@pytest.mark.parametrize("mapping", ["nginx-json", "fluentbit-nginx"])
def test_fluent_bits_es_output_maps_the_same_both_ways(mapping: str) -> None:
    shaped, plain = both(mapping, FIXTURE.read_bytes(), FIXTURE_NOW, "gzip")
    assert shaped == plain


def test_the_bench_bodies_take_the_shaped_route_and_map_the_same() -> None:
    load = workload("es_bulk")
    now = datetime.fromisoformat(PINNED_NOW.replace("Z", "+00:00")).timestamp()
    route, _ = routes("fluentbit-nginx", now)
    for body in build_bodies(load, 3):
        data = decompress(body, "gzip" if load.gzip else None, MAX)
        found = decode_shaped(data, content_type=NDJSON, path=load.path, shape=route.mapper.shape)
        assert found is not None and len(found.records) == load.per_body  # the route is taken, not skipped
        shaped, plain = both("fluentbit-nginx", body, now, "gzip" if load.gzip else None, load.path)
        assert shaped == plain and not shaped[2]


def test_what_the_shaped_decoder_leaves_to_decode() -> None:
    route, _ = routes("fluentbit-nginx", FIXTURE_NOW)
    shape = route.mapper.shape
    doc = b'{"remote":"192.0.2.1"}'
    assert decode_shaped(b'{"index":{}}\n' + doc + b"\n", content_type=NDJSON, path="/_bulk", shape=shape) is not None
    for body in (b'{"index":{}}\n' + doc + b'\n{"create":{}}\n' + doc,  # two different action lines
                 b'{"index":{}}\n[1]\n',  # a document that is not an object
                 b'{"delete":{}}\n{"index":{}}\n',  # an action without a document
                 b'{"index":{}}\n' + doc + b"\n\n"):  # an action line short
        assert decode_shaped(body, content_type=NDJSON, path="/_bulk", shape=shape) is None, body
    assert decode_shaped(b'{"index":{}}\n' + doc, content_type="text/csv", path="/_bulk", shape=shape) is None

    class ReadsIndex:  # a mapping that reads `_index`, which decode merges into each document
        keys = ("_index", "remote")
    assert decode_shaped(b'{"index":{}}\n' + doc, content_type=NDJSON, path="/_bulk", shape=ReadsIndex()) is None


_value = st.one_of(st.none(), st.sampled_from(["", "-", "GET", "200", "www.example.com:8443", "10.0.0.1",
                                               "/a?b=1&b=2", "x" * 3000, "2026-11-25T09:00:00Z"]),
                   st.integers(-5, 700), st.floats(allow_nan=False, min_value=1.7e9, max_value=1.8e9),
                   st.lists(st.integers(), max_size=2))
_doc = st.fixed_dictionaries({}, optional={key: _value for key in
                                           ("date", "remote", "host", "method", "path", "code", "size", "agent",
                                            "referer", "extra")})
_good = st.fixed_dictionaries({"date": st.floats(min_value=1764000000, max_value=1764100000),
                               "remote": st.sampled_from(["192.0.2.1", "2001:db8::7"]), "host": st.just("-"),
                               "method": st.sampled_from(["GET", "post"]), "path": st.sampled_from(["/a", "/b?c=d"]),
                               "code": st.sampled_from(["200", "404", 301]), "size": st.sampled_from(["12", "-", 7]),
                               "agent": st.just("curl/8"), "referer": st.sampled_from(["-", "https://x/"])})


_action = st.sampled_from([b'{"create":{"_index":"nginx"}}', b'{"index":{}}', b'{"create":{"_id":"x1"}}'])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_good, _doc), min_size=1, max_size=8), st.booleans(), _action,
       st.sampled_from(["/_bulk", "/logs/_bulk"]))
def test_random_documents_map_the_same_both_ways(docs: list[dict[str, Any]], reject: bool, action: bytes,
                                                 path: str) -> None:
    body = b"".join(action + b"\n" + json.dumps(doc).encode() + b"\n" for doc in docs)
    outcomes = []
    for route in routes("fluentbit-nginx", 1764050000.0):
        route.validator.repair = not reject
        outcomes.append(outcome(prepare(route, body, content_type=NDJSON, content_encoding=None, headers={},
                                        max_size=MAX, path=path)))
    assert outcomes[0] == outcomes[1]

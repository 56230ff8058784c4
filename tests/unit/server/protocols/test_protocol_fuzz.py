"""Property test of the native protocols through the real `relay serve`: no input gets a 500.

Hostile bodies (the ingest fuzz's shapes, `_bulk` NDJSON with odd action lines, HEC events,
Datadog arrays; compressed, truncated, bombs) under random Content-Type / Content-Encoding /
auth headers, methods and protocol paths. Every answer is one the protocol gives for client
input, in the protocol's own error shape, and /healthz still answers after each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.support import MockUpstream, http_request
from tests.unit.server.test_ingest_fuzz import (
    COMPRESSORS,
    CONTENT_TYPES,
    ENCODING_HEADERS,
    MAX_BODY,
    bodies,
    entry_like,
    json_values,
)

KEY = "test-key"
TOKEN = "fuzz-token"
ALLOWED = {200, 202, 400, 401, 403, 404, 405, 413, 415}
SOURCES = f"""
[sources.es]
protocol = "elasticsearch"
tokens = ["{TOKEN}"]

[sources.hec]
protocol = "splunk_hec"
tokens = ["{TOKEN}"]

[sources.dd]
protocol = "datadog"
tokens = ["{TOKEN}"]
"""
PATHS = ["/_bulk", "/web/_bulk", "/_bulk/", "/ingest/es/_bulk", "/", "/_license", "/_index_template/x",
         "/services/collector", "/services/collector/event", "/services/collector/raw?channel=c&host=h",
         "/services/collector/health", "/services/collector/ack", "/ingest/hec/services/collector/event",
         "/api/v2/logs", "/api/v2/logs?ddsource=x&ddtags=a:b", "/v1/input", "/ingest/dd/api/v2/logs", "/nope"]
ACTIONS = st.sampled_from([{"index": {}}, {"create": {"_index": "x"}}, {"delete": {"_id": "1"}}, {"update": {}},
                           {"index": 5}, {"bogus": {}}, {}, [], "x"]) | json_values


def _json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def protocol_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["any", "bulk", "hec", "datadog"]))
    if kind == "any":
        return draw(bodies())
    docs = draw(st.lists(entry_like() | json_values, max_size=6))
    if kind == "bulk":
        lines = [line for doc in docs for line in (_json(draw(ACTIONS)), _json(doc))]
        if draw(st.booleans()) and lines:
            lines.pop(draw(st.integers(0, len(lines) - 1)))  # a missing line: everything after shifts
        return b"\n".join(lines) + b"\n" * draw(st.integers(0, 2))
    if kind == "hec":
        events = [draw(st.sampled_from([{"event": d}, {"time": "x", "event": d}, {"fields": d}, d])) for d in docs]
        return b"".join(_json(e) for e in events)
    return _json(docs if draw(st.booleans()) else (docs[0] if docs else {}))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    body = draw(protocol_bodies())
    headers: dict[str, str] = {}
    compression = draw(st.sampled_from([None, "gzip", "deflate", "zstd", "snappy"]))
    if compression is not None:
        body = COMPRESSORS[compression](body)
        if draw(st.booleans()):
            body = body[: draw(st.integers(0, len(body)))]
        if draw(st.booleans()):
            headers["Content-Encoding"] = compression
    if draw(st.integers(0, 9)) == 0:  # a bomb past the limit
        body = COMPRESSORS["gzip"](bytes(MAX_BODY * 4))
        headers["Content-Encoding"] = "gzip"
    encoding = draw(st.sampled_from([None, *ENCODING_HEADERS]))
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    content_type = draw(st.sampled_from([None, *CONTENT_TYPES, "application/vnd.elasticsearch+x-ndjson; "
                                         "compatible-with=9", "application/x-protobuf"]))
    if content_type is not None:
        headers["Content-Type"] = content_type
    auth = draw(st.sampled_from([None, f"Splunk {TOKEN}", f"Bearer {TOKEN}", "Splunk wrong", "ApiKey !!",
                                 "Basic Zm9vOmZ1enotdG9rZW4="]))
    if auth is not None:
        headers["Authorization"] = auth
    if draw(st.booleans()):
        headers["DD-API-KEY"] = draw(st.sampled_from([TOKEN, "wrong"]))
    method = draw(st.sampled_from(["POST", "POST", "POST", "PUT", "GET", "HEAD", "DELETE"]))
    return method, draw(st.sampled_from(PATHS)), body, headers


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    tmp = tmp_path_factory.mktemp("protocol-fuzz")
    with MockUpstream(tmp, api_keys=[KEY], extra_args=["--now", PINNED_NOW], verbose=False) as upstream:
        relay = Relay(tmp, sink_toml("up", upstream.url, KEY), sources=SOURCES, max_body_size="64KiB",
                      queue_max_size="1MiB")
        with relay:
            yield relay


@settings(max_examples=int(os.environ.get("RELAY_FUZZ_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=requests())
def test_no_protocol_input_gets_a_500_and_the_relay_stays_up(relay: Relay,
                                                             request: tuple[str, str, bytes, dict[str, str]]) -> None:
    method, path, body, headers = request
    response = http_request(relay.base_url + path, method, body if method in ("POST", "PUT") else None,
                            headers=headers, timeout=30)
    assert response.status in ALLOWED, (method, path, headers, body[:200], response.status, response.body[:300])
    if method != "HEAD" and response.body:
        answer = response.json()
        if path.endswith("_bulk") or path.endswith("_bulk/") or path in ("/", "/_license"):
            assert response.headers.get("x-elastic-product") == "Elasticsearch" or response.status in (404, 405)
        if "collector" in path and response.status not in (404, 405):  # unserved method: the router's answer
            assert "code" in answer or "acks" in answer, answer
    assert http_request(relay.base_url + "/healthz", timeout=10).status == 200, relay.log_tail()

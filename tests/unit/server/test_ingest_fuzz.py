"""Property test of the ingest path through the real server: no input gets a 500.

One `relay serve` (and a mock upstream) per module; hypothesis POSTs bodies of
every shape (arbitrary bytes, JSON-ish values, upstream-like entries with wrong
types, NDJSON, MessagePack), compressed or not, truncated or not, under random
Content-Type / Content-Encoding / token headers and paths. Every answer must be
one SPEC §3 names for client input, and /healthz must still answer after each.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import urllib.parse
import zlib
from collections.abc import Iterator
from typing import Any

import cramjam
import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.support import MockUpstream, http_request, wait_until

KEY = "test-key"
TOKEN = "fuzz-token"
ALLOWED = {200, 400, 401, 404, 413, 415}
MAX_BODY = 64 * 1024  # the relay's max_body_size here, so that bombs are cheap to make

EXTRA = f"""
[sources.secure]
mapping = "profound"
tokens = ["{TOKEN}"]
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, MockUpstream]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with MockUpstream(tmp, api_keys=[KEY], extra_args=["--now", PINNED_NOW], verbose=False) as upstream:
        relay = Relay(tmp, sink_toml("profound", upstream.url, KEY), extra=EXTRA)
        config = relay.config_path.read_text()
        relay.config_path.write_text(config.replace("[server]\n", '[server]\nmax_body_size = "64KiB"\n', 1))
        with relay:
            yield relay, upstream


@pytest.fixture(scope="module")
def relay(servers: tuple[Relay, MockUpstream]) -> Relay:
    return servers[0]


# ---- strategies ----------------------------------------------------------------------------------

ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=25)

FIELD_VALUES = {
    "timestamp": st.sampled_from(["2026-11-25T09:00:00Z", 1795593600, 1795593600123, "yesterday", ""]),
    "method": st.sampled_from(["GET", "post", "X" * 20, ""]),
    "host": st.sampled_from(["www.example.com", "h" * 300, "", "exa mple"]),
    "path": st.sampled_from(["/", "/a?b=c&d=%ZZ", "p" * 3000, "", "no-slash"]),
    "status_code": st.sampled_from([200, 599, 600, 99, "404", "2xx", 200.5]),
    "ip": st.sampled_from(["192.0.2.1", "2001:db8::1", "1.2.3.4:80", "not-an-ip", "9" * 60]),
    "user_agent": st.sampled_from(["curl", "u" * 2000, ""]),
    "query_params": st.sampled_from([{"a": "b"}, {"k" * 200: "v"}, {"a": 1}, "a=b", []]),
    "referer": st.sampled_from(["https://x/", "r" * 3000, 5]),
    "bytes_sent": st.sampled_from([0, -1, 2**40, "12", 1.5]),
    "duration_ms": st.sampled_from([0, 0.5, -3, "fast", 1e300]),
}


@st.composite
def entry_like(draw: st.DrawFn) -> dict[str, Any]:
    """An upstream-shaped record: each field valid-ish, wrong-typed, odd or missing."""
    record: dict[str, Any] = {}
    for name, values in FIELD_VALUES.items():
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue  # missing
        record[name] = draw(json_values) if choice == 1 else draw(values)
    return record


url_ish = st.lists(st.sampled_from(["/", "a", "?", "&", "=", "#", "%", "%2", "%zz", "%00", "%ff", "+", ";",
                                    "..", "é", "\u2028", " ", "\x00", "q" * 120, "v" * 1100]),
                   max_size=30).map("".join)
nginx_values = st.text(max_size=20) | url_ish | json_values


@st.composite
def fluentbit_like(draw: st.DrawFn) -> dict[str, Any]:
    """A record of Fluent Bit's nginx parser (all strings there), with odd values in any key."""
    record: dict[str, Any] = {"date": draw(st.sampled_from([1795593600.25, "1795593600", None, -1, 1e30])),
                              "remote": "192.0.2.9", "host": "-", "user": "-", "method": "GET",
                              "path": draw(url_ish), "code": "200", "size": "12", "referer": "-", "agent": "fb"}
    for key in draw(st.lists(st.sampled_from(sorted(record)), max_size=4)):
        record[key] = draw(nginx_values)
    return record


def _to_json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _to_msgpack(value: Any) -> bytes:
    try:
        return msgpack.packb(value)  # type: ignore[no-any-return]
    except (OverflowError, ValueError, TypeError):
        return b"\xc1"  # an int too big for MessagePack: send the never-used byte instead


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "entries", "ndjson", "stream", "msgpack", "msgpack-events"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2048))
    if kind == "json":
        return _to_json(draw(json_values))
    records = draw(st.lists(entry_like() | fluentbit_like() | json_values, max_size=8))
    if kind == "entries":
        return _to_json(records)
    if kind == "ndjson":
        return b"\n".join(_to_json(r) for r in records)
    if kind == "stream":
        return b"".join(_to_json(r) for r in records)
    if kind == "msgpack":
        return b"".join(_to_msgpack(r) for r in records)
    stamp = draw(st.integers(0, 2**32 - 1) | st.floats(allow_nan=True))
    return b"".join(_to_msgpack([[stamp, {}], r]) for r in records)


COMPRESSORS = {
    "gzip": lambda data: gzip.compress(data, 1),
    "deflate": lambda data: zlib.compress(data, 1),
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "snappy": lambda data: bytes(cramjam.snappy.compress_raw(data)),
    "snappy-framed": lambda data: bytes(cramjam.snappy.compress(data)),
}
ENCODING_HEADERS = ["gzip", "x-gzip", "deflate", "zstd", "snappy", "x-snappy-framed", "identity", "br",
                    "gzip, zstd", "gzip,gzip,gzip,gzip,gzip", ""]
CONTENT_TYPES = ["application/json", "application/x-ndjson", "application/msgpack", "text/plain",
                 "application/octet-stream", "application/json; charset=utf-8", "application/ld+json",
                 "application/json-seq", "image/png", "", "*/*", "multipart/form-data; boundary=x"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    body = draw(bodies())
    headers: dict[str, str] = {}
    compression = draw(st.sampled_from([None, *COMPRESSORS]))
    if compression is not None:
        body = COMPRESSORS[compression](body)
        if draw(st.booleans()):
            body = body[: draw(st.integers(0, len(body)))]  # truncated stream
    if compression == "zstd" and draw(st.booleans()):  # a bomb that would inflate past the limit
        body = zstandard.ZstdCompressor().compress(bytes(MAX_BODY * 4))
    encoding = draw(st.sampled_from([None, "match", *ENCODING_HEADERS]) | ascii_text)
    if encoding == "match":
        encoding = {"snappy-framed": "x-snappy-framed"}.get(compression or "", compression)
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    content_type = draw(st.sampled_from([None, *CONTENT_TYPES]) | ascii_text)
    if content_type is not None:
        headers["Content-Type"] = content_type
    auth = draw(st.sampled_from([None, f"Bearer {TOKEN}", "Bearer wrong", "Basic !!", "Basic Zm9vOmZ1enotdG9rZW4="]))
    if auth is not None:
        headers["Authorization"] = auth
    path = draw(st.sampled_from(["/v1/logs/custom", "/ingest/custom", "/ingest/fluentbit", "/ingest/secure",
                                 "/ingest/nope", "/healthz"])
                | ascii_text.map(lambda s: "/ingest/" + urllib.parse.quote(s)))
    return path, body, headers


# ---- the property ----------------------------------------------------------------------------------


@settings(max_examples=int(os.environ.get("RELAY_FUZZ_EXAMPLES", "200")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=requests())
def test_no_client_input_gets_a_500_and_the_relay_stays_up(relay: Relay, request: tuple[str, bytes, dict[str, str]]) -> None:
    path, body, headers = request
    response = http_request(relay.base_url + path, "POST", body, headers=headers, timeout=30)
    assert response.status in ALLOWED, (path, headers, body[:200], response.status, response.body[:300])
    if response.status != 200:
        answer = response.json()
        assert answer["status"] == "error" and answer["error"], answer
    else:
        answer = response.json()
        assert answer["accepted"] + answer["rejected"] + answer.get("filtered", 0) >= 0
        assert all(re.match(r"\$\[\d+\]", error) or error.startswith("...") for error in answer["errors"]), answer
    assert http_request(relay.base_url + "/healthz", timeout=10).status == 200, relay.log_tail()
    assert relay.running, relay.log_tail()


def test_zz_what_the_fuzz_got_accepted_upstream_accepts_too(servers: tuple[Relay, MockUpstream]) -> None:
    """Runs after the property: every entry the relay took is one upstream takes, and no traceback."""
    relay, upstream = servers
    wait_until(lambda: 'relay_queue_entries{sink="profound"} 0.0' in relay.metrics(), timeout=30,
               message=lambda: f"queue not drained\n{relay.log_tail()}")
    # Read the record file by "\n" only: paths may hold U+2028, which str.splitlines splits on.
    lines = upstream.record_path.read_bytes().split(b"\n")
    refused = [error for line in lines if line for error in json.loads(line)["errors"]]
    assert not refused, f"upstream refused {len(refused)} entries the relay accepted, e.g. {refused[:5]}"
    assert upstream.stats()["by_status"].keys() <= {"200"}, upstream.stats()
    log = relay.log_text()
    assert not re.search(r'File ".*/relay/[^"]+\.py"', log), "a traceback from relay code\n" + relay.log_tail(100)

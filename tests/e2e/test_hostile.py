"""Hostile input against a running relay: each case gets the status SPEC §3 names.

One relay (read_timeout 1s, max_body_size 16MiB, a token-protected source) takes
the whole battery. Around every hostile request it is sent valid entries; the
last test checks that every one of them reached upstream, that the relay never
answered 500, and that it stayed up and small (RSS) throughout.
"""

from __future__ import annotations

import base64
import collections
import gzip
import itertools
import json
import re
import select
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cramjam
import msgpack
import pytest
import zstandard

from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.support import HttpResponse, MockUpstream, http_request, wait_until

KEY = "test-key"
TOKEN = "s3cret-token"
LIMIT = 16 * 2**20  # max_body_size
READ_TIMEOUT = 1.0  # server.read_timeout, seconds
RSS_LIMIT_KB = 300 * 1024
JSON = {"Content-Type": "application/json"}
CUSTOM = "/v1/logs/custom"

EXTRA = f"""
[sources.secure]
mapping = "profound"
tokens = ["{TOKEN}"]
"""


def entry(path: str, **overrides: Any) -> dict[str, Any]:
    return {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "host": "www.example.com",
            "path": path, "status_code": 200, "ip": "192.0.2.1", "user_agent": "hostile", **overrides}


@dataclass
class Battery:
    relay: Relay
    upstream: MockUpstream
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    cases: list[tuple[str, int | None]] = field(default_factory=list)  # (case, status) for the report
    valid_sent: set[str] = field(default_factory=set)
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return self.relay.base_url + CUSTOM

    def post(self, body: bytes, headers: dict[str, str] | None = None, path: str = CUSTOM,
             timeout: float = 30) -> HttpResponse:
        response = http_request(self.relay.base_url + path, "POST", body, headers=headers or JSON,
                                timeout=timeout)
        self.statuses[response.status] += 1
        return response

    def valid(self, n: int = 5) -> None:
        """Valid entries around the hostile ones: every one must reach upstream."""
        tag = next(self._numbers)
        batch = [entry(f"/hostile/valid/{tag}/{i}") for i in range(n)]
        response = self.post(json.dumps(batch).encode())
        assert response.status == 200 and response.json()["accepted"] == n, response.body
        self.valid_sent.update(e["path"] for e in batch)

    def alive(self) -> None:
        assert self.relay.running, f"the relay died\n{self.relay.log_tail()}"
        assert http_request(self.relay.base_url + "/healthz", timeout=5).status == 200

    def rss_kb(self, field_name: str = "VmRSS") -> int:
        status = Path(f"/proc/{self.relay.pid}/status").read_text()
        return int(re.search(rf"^{field_name}:\s+(\d+) kB", status, re.M)[1])  # type: ignore[index]

    def raw(self, data: bytes | list[bytes], *, pause: float = 0.0, timeout: float = 10) -> tuple[int | None, bytes, float]:
        """Bytes straight onto a socket (pieces `pause` apart): (status or None if closed, head, seconds)."""
        started = time.monotonic()
        pieces = [data] if isinstance(data, bytes) else data
        with socket.create_connection(("127.0.0.1", self.relay.port), timeout=timeout) as sock:
            try:
                for i, piece in enumerate(pieces):
                    # A slow client on purpose: wait `pause` between pieces, unless the relay
                    # has answered or closed meanwhile (then read what it said).
                    if i and pause and select.select([sock], [], [], pause)[0]:
                        break
                    sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the relay gave up on us: read what it said, if anything
            head = _read_head(sock)
        match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        status = int(match[1]) if match else None
        if status is not None:
            self.statuses[status] += 1
        return status, head, time.monotonic() - started


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                break
            head += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return head


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Battery]:
    tmp = tmp_path_factory.mktemp("hostile")
    with MockUpstream(tmp, api_keys=[KEY], extra_args=["--now", PINNED_NOW], verbose=False) as upstream:
        relay = Relay(tmp, sink_toml("profound", upstream.url, KEY), extra=EXTRA)
        config = relay.config_path.read_text()
        relay.config_path.write_text(config.replace(
            "[server]\n", f'[server]\nread_timeout = "{READ_TIMEOUT:g}s"\nmax_body_size = "16MiB"\n', 1))
        with relay:
            yield Battery(relay, upstream)


@pytest.fixture
def b(battery: Battery, request: pytest.FixtureRequest) -> Iterator[Battery]:
    """The battery, with valid traffic sent before and after the case and a liveness check."""
    battery.valid()
    before = sum(battery.statuses.values())
    yield battery
    battery.alive()
    battery.valid()
    assert battery.statuses[500] == 0, f"{request.node.name}: the relay answered 500\n{battery.relay.log_tail()}"
    del before


def expect(b: Battery, case: str, response: HttpResponse | tuple[int | None, bytes, float], status: int | set[int],
           error: str | None = None) -> Any:
    """Assert the status (and the JSON error answer); record it for the report."""
    got = response.status if isinstance(response, HttpResponse) else response[0]
    body = response.body if isinstance(response, HttpResponse) else response[1]
    b.cases.append((case, got))
    allowed = {status} if isinstance(status, int) else status
    assert got in allowed, f"{case}: expected {sorted(allowed)}, got {got}: {body[:300]!r}"
    if isinstance(response, HttpResponse) and got != 200 and error is not None:
        answer = response.json()
        assert answer["status"] == "error" and re.search(error, answer["error"]), answer
    return response.json() if isinstance(response, HttpResponse) and got == 200 else None


# ---- malformed and truncated bodies -------------------------------------------------------------

VALID_ARRAY = json.dumps([entry(f"/hostile/dropped/{i}") for i in range(20)]).encode()


def _msgpack_records(n: int, prefix: str) -> bytes:
    return b"".join(msgpack.packb(entry(f"{prefix}/{i}")) for i in range(n))


MALFORMED = [
    ("json-truncated-array", VALID_ARRAY[: len(VALID_ARRAY) // 2], JSON, 400),
    ("json-garbage", b"{not json at all", JSON, 400),
    ("json-trailing-garbage", VALID_ARRAY + b"]]]", JSON, 400),
    ("json-unbalanced", b"[" + b"{}" * 10, JSON, 400),
    ("json-bare-word", b"undefined", JSON, 400),
    ("ndjson-every-line-bad", b"{bad\n{worse\n[}\n", {"Content-Type": "application/x-ndjson"}, 400),
    ("msgpack-truncated", _msgpack_records(5, "/x")[:-7][:7], {"Content-Type": "application/msgpack"}, 400),
    ("msgpack-reserved-byte", b"\xc1\xc1\xc1", {"Content-Type": "application/msgpack"}, 400),
    ("msgpack-huge-array-header", b"\xdd\xff\xff\xff\xff", {"Content-Type": "application/msgpack"}, 400),
    ("msgpack-huge-str-header", b"\x81\xdb\xff\xff\xff\xff", {"Content-Type": "application/msgpack"}, 400),
    ("json-invalid-utf8", b'[{"path": "/\xff\xfe\xfd"}]', JSON, 400),
    ("json-lone-surrogate-escape", b'[{"path": "\\ud800"}]', JSON, 400),
    ("json-nan-literal", b'[{"duration_ms": NaN}]', JSON, 400),
    ("json-infinity-literal", b'[{"duration_ms": Infinity}]', JSON, 400),
    ("json-number-out-of-range", b'[{"duration_ms": 1e400}]', JSON, 400),
    ("utf16-body", json.dumps([entry("/u16")]).encode("utf-16"), JSON, 400),
]


@pytest.mark.parametrize("case,body,headers,status", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_undecodable_body_is_400(b: Battery, case: str, body: bytes, headers: dict[str, str], status: int) -> None:
    expect(b, case, b.post(body, headers), status, error=".")


def test_ndjson_bad_lines_are_rejected_by_index_and_the_rest_kept(b: Battery) -> None:
    lines = [json.dumps(entry("/hostile/nd/0")).encode(), b'{"path": "/hostile/nd/bad", ',
             json.dumps(entry("/hostile/nd/2")).encode(), b'{"duration_ms": NaN}',
             b'{"path": "/\xff"}', json.dumps(entry("/hostile/nd/5")).encode()[:-9]]
    answer = expect(b, "ndjson-mixed", b.post(b"\n".join(lines), {"Content-Type": "application/x-ndjson"}), 200)
    assert answer["accepted"] == 2 and answer["rejected"] == 4, answer
    assert [e[:4] for e in answer["errors"]] == ["$[1]", "$[3]", "$[4]", "$[5]"], answer["errors"]
    b.valid_sent.update({"/hostile/nd/0", "/hostile/nd/2"})


def test_msgpack_cut_after_good_records_keeps_them(b: Battery) -> None:
    body = _msgpack_records(3, "/hostile/mp") + msgpack.packb(entry("/hostile/mp/cut"))[:-4]
    answer = expect(b, "msgpack-cut-tail", b.post(body, {"Content-Type": "application/msgpack"}), 200)
    assert answer["accepted"] == 3 and answer["rejected"] == 1, answer
    assert answer["errors"][0].startswith("$[3]"), answer["errors"]
    b.valid_sent.update(f"/hostile/mp/{i}" for i in range(3))


# ---- compression: truncated, wrong, bombs -------------------------------------------------------

GZ = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
PAYLOAD = json.dumps([entry(f"/hostile/z/{i}") for i in range(200)]).encode()
_snappy_raw = bytes(cramjam.snappy.compress_raw(PAYLOAD))
_snappy_framed = bytes(cramjam.snappy.compress(PAYLOAD))
_zstd = zstandard.ZstdCompressor().compress(PAYLOAD)

TRUNCATED = [
    ("gzip-truncated", gzip.compress(PAYLOAD)[:-30], "gzip", 400),
    ("gzip-no-trailer", gzip.compress(PAYLOAD)[:-8], "gzip", 400),
    ("gzip-header-only", gzip.compress(PAYLOAD)[:10], "gzip", 400),
    ("gzip-corrupt-middle", (lambda z: z[:40] + bytes(64) + z[104:])(gzip.compress(PAYLOAD)), "gzip", 400),
    ("gzip-label-not-gzip", PAYLOAD, "gzip", 400),
    ("deflate-truncated", zlib.compress(PAYLOAD)[:-20], "deflate", 400),
    ("zstd-truncated", _zstd[:-10], "zstd", 400),
    ("zstd-bad-frame-header", b"\x28\xb5\x2f\xfd" + b"\xff" * 20, "zstd", 400),
    ("snappy-raw-truncated", _snappy_raw[:-10], "snappy", 400),
    ("snappy-framed-truncated", _snappy_framed[:-10], "snappy", 400),
    ("snappy-garbage", b"\x80\x80\x80\x80\x80\x80", "snappy", 400),
    ("encoding-unknown-br", PAYLOAD, "br", 415),
    ("encoding-five-layers", PAYLOAD, "gzip, gzip, gzip, gzip, gzip", 415),
]


@pytest.mark.parametrize("case,body,encoding,status", TRUNCATED, ids=[c[0] for c in TRUNCATED])
def test_broken_compression_is_rejected(b: Battery, case: str, body: bytes, encoding: str, status: int) -> None:
    expect(b, case, b.post(body, {"Content-Type": "application/json", "Content-Encoding": encoding}), status,
           error=".")


def test_unsupported_content_type_is_415(b: Battery) -> None:
    expect(b, "content-type-image", b.post(PAYLOAD, {"Content-Type": "image/png"}), 415, error="image/png")


def _gzip_zeros_multi_member(gib: int = 1) -> bytes:
    member = gzip.compress(bytes(2**20), compresslevel=9)  # 1 MiB of zeros in ~1 KiB
    return member * (1024 * gib)


def _zstd_zeros(total: int) -> bytes:
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    block = bytes(2**20)
    return b"".join(compressor.compress(block) for _ in range(total // len(block))) + compressor.flush()


BOMBS = [
    ("gzip-bomb-1GiB", lambda: _gzip_zeros_multi_member(), "gzip"),
    ("gzip-bomb-single-member-128MiB", lambda: gzip.compress(bytes(128 * 2**20), compresslevel=9), "gzip"),
    ("deflate-bomb-128MiB", lambda: zlib.compress(bytes(128 * 2**20), 9), "deflate"),
    ("zstd-bomb-1GiB", lambda: _zstd_zeros(2**30), "zstd"),
    ("snappy-bomb-64MiB", lambda: bytes(cramjam.snappy.compress_raw(bytes(64 * 2**20))), "snappy"),
    ("snappy-framed-bomb-64MiB", lambda: bytes(cramjam.snappy.compress(bytes(64 * 2**20))), "snappy"),
    ("gzip-in-gzip-bomb-1GiB", lambda: gzip.compress(_gzip_zeros_multi_member(), 9), "gzip, gzip"),
]


@pytest.mark.parametrize("case,make,encoding", BOMBS, ids=[c[0] for c in BOMBS])
def test_decompression_bomb_is_413_fast_and_small(b: Battery, case: str, make: Any, encoding: str) -> None:
    body = make()
    assert len(body) < LIMIT
    started = time.monotonic()
    response = b.post(body, {"Content-Type": "application/json", "Content-Encoding": encoding})
    elapsed = time.monotonic() - started
    expect(b, case, response, 413, error="limit")
    assert elapsed < 5, f"{case}: 413 took {elapsed:.1f}s"
    rss, peak = b.rss_kb(), b.rss_kb("VmHWM")
    assert rss < RSS_LIMIT_KB and peak < RSS_LIMIT_KB, f"{case}: RSS {rss} kB, peak {peak} kB"


# ---- size limits ----------------------------------------------------------------------------------


def _request_head(path: str = CUSTOM, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: relay", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunked(data: bytes, size: int = 2**20) -> bytes:
    out = [b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size)]
    return b"".join(out) + b"0\r\n\r\n"


def test_body_over_the_limit_is_413(b: Battery) -> None:
    expect(b, "body-over-limit", b.post(b"[" + b" " * LIMIT + b"]"), 413, error="limit")


def test_lying_content_length_is_413_without_reading(b: Battery) -> None:
    result = b.raw(_request_head(Content_Length=str(100 * 2**30)) + b"[]")
    expect(b, "content-length-100GiB-body-2B", result, 413)
    assert result[2] < 2, result


def test_expect_100_continue_over_the_limit_is_413(b: Battery) -> None:
    status, head, _ = b.raw(_request_head(Content_Length=str(LIMIT + 1), Expect="100-continue"))
    if status == 100:  # told to go on, then refused: the final answer follows
        status = int(re.findall(rb"HTTP/1\.1 (\d{3})", head)[-1]) if head.count(b"HTTP/1.1") > 1 else status
    b.cases.append(("expect-100-continue-over-limit", status))
    assert status in (413, 100), head


def test_chunked_body_over_the_limit_is_413(b: Battery) -> None:
    body = b"[" + b" " * (LIMIT + 2**20) + b"]"
    expect(b, "chunked-over-limit", b.raw(_request_head(Transfer_Encoding="chunked") + _chunked(body)), 413)


def test_chunked_body_under_the_limit_is_accepted(b: Battery) -> None:
    batch = [entry(f"/hostile/chunked/{i}") for i in range(30)]
    result = b.raw(_request_head(Transfer_Encoding="chunked") + _chunked(json.dumps(batch).encode(), 97))
    expect(b, "chunked-valid", result, 200)
    b.valid_sent.update(e["path"] for e in batch)


def test_malformed_framing_is_400(b: Battery) -> None:
    bad_chunk = _request_head(Transfer_Encoding="chunked") + b"zz\r\nabc\r\n0\r\n\r\n"
    expect(b, "chunk-size-not-hex", b.raw(bad_chunk), 400)
    both = _request_head(Transfer_Encoding="chunked", Content_Length="5") + _chunked(b"[]")
    expect(b, "content-length-and-chunked", b.raw(both), 400)
    short = _request_head(Content_Length="2") + b"[]GARBAGE GARBAGE\r\n\r\n"
    status, head, _ = b.raw(short)  # the first request is whole: [] -> 200; the rest is a bad request
    b.cases.append(("content-length-shorter-than-body", status))
    assert status in (200, 400) and b" 500 " not in head, head


# ---- nesting, huge values -------------------------------------------------------------------------


DEEP = [
    ("deep-arrays-100k", b"[" * 100_000 + b"]" * 100_000, JSON, 400),
    ("deep-objects-100k", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, JSON, 400),
    ("deep-field-in-record", b'[{"path": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]", JSON, 400),
    ("deep-unclosed-100k", b"[" * 100_000, JSON, 400),
    ("deep-msgpack-100k", b"\x91" * 100_000 + b"\x01", {"Content-Type": "application/msgpack"}, 400),
]


@pytest.mark.parametrize("case,body,headers,status", DEEP, ids=[c[0] for c in DEEP])
def test_deep_nesting_is_400_not_a_crash(b: Battery, case: str, body: bytes, headers: dict[str, str],
                                         status: int) -> None:
    expect(b, case, b.post(body, headers), status, error=".")


def test_deep_line_among_good_ndjson_lines_is_rejected_alone(b: Battery) -> None:
    body = b"[" * 100_000 + b"]" * 100_000 + b"\n" + json.dumps(entry("/hostile/deep-ok")).encode()
    answer = expect(b, "deep-ndjson-line", b.post(body, {"Content-Type": "application/x-ndjson"}), 200)
    assert answer["accepted"] == 1 and answer["errors"][0].startswith("$[0]"), answer
    b.valid_sent.add("/hostile/deep-ok")


def test_huge_strings_are_repaired_or_rejected(b: Battery) -> None:
    big = "x" * (2 * 2**20)  # five of them: 10 MiB, under the limit
    batch = [entry("/hostile/huge-ua", user_agent=big), entry("/hostile/huge-ref", referer=big),
             entry("/hostile/huge-query", query_params={"q": big}), entry("/hostile/huge-method", method=big),
             entry("/hostile/huge-ip", ip=big)]
    answer = expect(b, "huge-strings-2MiB-each", b.post(json.dumps(batch).encode()), 200)
    assert answer["accepted"] + answer["rejected"] == len(batch), answer
    kept = {e["path"] for i, e in enumerate(batch) if not any(err.startswith(f"$[{i}]") for err in answer["errors"])}
    assert len(kept) == answer["accepted"]
    b.valid_sent.update(kept)


def test_huge_key_and_many_keys_are_ignored(b: Battery) -> None:
    batch = [{**entry("/hostile/huge-key"), "k" * (8 * 2**20): 1},
             {**entry("/hostile/many-keys"), **{f"k{i}": i for i in range(200_000)}}]
    answer = expect(b, "huge-key-and-200k-keys", b.post(json.dumps(batch).encode()), 200)
    assert answer["accepted"] == 2, answer
    b.valid_sent.update({"/hostile/huge-key", "/hostile/many-keys"})


def test_a_million_empty_records_are_rejected_with_a_bounded_answer(b: Battery) -> None:
    body = b"[" + b",".join([b"{}"] * 1_000_000) + b"]"
    # a million records each checked and rejected: ~9 s of CPU on a quiet core, more on a shared one
    response = b.post(body, timeout=120)
    answer = expect(b, "1M-empty-records", response, 200)
    assert answer["accepted"] == 0 and answer["rejected"] == 1_000_000
    assert len(answer["errors"]) <= 101 and len(response.body) < 64 * 1024, len(response.body)


# ---- values: NaN, duplicates, wrong types -----------------------------------------------------------


def test_nan_and_infinity_in_msgpack_are_rejected_or_dropped_by_field(b: Battery) -> None:
    records = [entry("/hostile/nan/ts", timestamp=float("nan")), entry("/hostile/nan/status", status_code=float("inf")),
               entry("/hostile/nan/duration", duration_ms=float("nan")),
               entry("/hostile/nan/bytes", bytes_sent=float("-inf"))]
    body = b"".join(msgpack.packb(r) for r in records)
    answer = expect(b, "msgpack-nan-inf", b.post(body, {"Content-Type": "application/msgpack"}), 200)
    assert answer["errors"][:2] == [answer["errors"][0], answer["errors"][1]]
    assert answer["errors"][0].startswith("$[0].timestamp") and answer["errors"][1].startswith("$[1].status_code"), answer
    assert answer["accepted"] == 2, answer  # an invalid optional field is dropped in repair mode
    b.valid_sent.update({"/hostile/nan/duration", "/hostile/nan/bytes"})


def test_duplicate_keys_take_one_value(b: Battery) -> None:
    body = (b'[{"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "host": "www.example.com", '
            b'"path": "/hostile/dup/a", "path": "/hostile/dup/b", "status_code": 999, "status_code": 200, '
            b'"ip": "192.0.2.1", "user_agent": "hostile"}]')
    answer = expect(b, "duplicate-keys", b.post(body), 200)
    assert answer["accepted"] == 1, answer
    b.valid_sent.add("/hostile/dup/b")  # the last value wins, as in every JSON parser shippers use


REQUIRED = ["timestamp", "method", "host", "path", "status_code", "ip", "user_agent"]
WRONG = [{"x": 1}, [1, 2], None, True, -5, "", "not-a-value-\u0000"]


def test_wrong_types_in_every_field_are_rejected_by_index_and_field(b: Battery) -> None:
    batch: list[Any] = [entry("/hostile/types/ok")]
    for name in REQUIRED:
        batch.append({**entry(f"/hostile/types/{name}"), name: {"x": 1}})
        batch.append({k: v for k, v in entry(f"/hostile/types/no-{name}").items() if k != name})
    answer = expect(b, "wrong-types-required", b.post(json.dumps(batch).encode()), 200)
    # README: in repair mode a missing user agent becomes ""; every other record here is rejected.
    repaired = {"/hostile/types/ok", "/hostile/types/no-user_agent"}
    assert answer["accepted"] == len(repaired) and answer["rejected"] == len(batch) - len(repaired), answer
    for i, record in enumerate(batch):
        if isinstance(record.get("path"), str) and record["path"] in repaired:
            continue
        name = next(n for n in REQUIRED if record.get(n) == {"x": 1} or n not in record)
        assert any(err.startswith(f"$[{i}].{name}") for err in answer["errors"]), (i, name, answer["errors"])
    b.valid_sent.update(repaired)


@pytest.mark.parametrize("name", [*REQUIRED, "query_params", "referer", "bytes_sent", "duration_ms"])
def test_every_odd_value_in_a_field_gets_200_and_a_named_rejection_or_a_valid_entry(b: Battery, name: str) -> None:
    batch = [{**entry(f"/hostile/odd/{name}/{i}"), name: value} for i, value in enumerate(WRONG)]
    answer = expect(b, f"odd-values-{name}", b.post(json.dumps(batch).encode()), 200)
    assert answer["accepted"] + answer["rejected"] == len(batch), answer
    rejected = {int(m[1]) for err in answer["errors"] for m in [re.match(r"\$\[(\d+)\]\.(\w+)", err)] if m}
    assert len(rejected) == answer["rejected"], answer["errors"]
    for err in answer["errors"]:
        assert re.match(rf"\$\[\d+\]\.{name}: ", err), err  # names the index and this field
    if name != "path":
        b.valid_sent.update(e["path"] for i, e in enumerate(batch) if i not in rejected)


def test_records_that_are_not_objects_are_rejected_by_index(b: Battery) -> None:
    answer = expect(b, "non-object-records", b.post(b'[1, "a", null, true, [], {}]'), 200)
    assert answer["rejected"] == 6 and [e[:4] for e in answer["errors"]] == [f"$[{i}]" for i in range(6)], answer


# ---- slow clients ---------------------------------------------------------------------------------


def test_body_trickled_slower_than_read_timeout_is_408_and_others_are_served(b: Battery) -> None:
    outcome: dict[str, Any] = {}
    head = _request_head(Content_Length="64")

    def slow() -> None:  # 64 bytes, one every 0.25s: 16s, far past read_timeout
        outcome["slow"] = b.raw([head] + [b" "] * 64, pause=0.25, timeout=20)

    trickler = threading.Thread(target=slow)
    trickler.start()
    try:
        # Meanwhile, others are answered at once.
        for _ in range(3):
            started = time.monotonic()
            b.valid()
            assert time.monotonic() - started < READ_TIMEOUT, "the relay stalled behind a slow client"
    finally:
        trickler.join(timeout=30)
    status, reply, elapsed = outcome["slow"]
    b.cases.append(("body-trickled-past-read-timeout", status))
    assert status in (408, None), reply  # 408, or the connection closed on us
    assert elapsed < READ_TIMEOUT + 3, f"the slow client was held {elapsed:.1f}s"


def test_headers_without_the_promised_body_get_408(b: Battery) -> None:
    status, reply, elapsed = b.raw(_request_head(Content_Length="100"), timeout=10)
    expect(b, "content-length-but-no-body", (status, reply, elapsed), 408)
    assert READ_TIMEOUT * 0.8 < elapsed < READ_TIMEOUT + 3, elapsed


def test_many_idle_and_half_sent_connections_do_not_block_others(b: Battery) -> None:
    socks = []
    try:
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", b.relay.port), timeout=5)
            sock.sendall(_request_head(Content_Length="1000")[: 20 + i % 40])  # stuck in the headers
            socks.append(sock)
        started = time.monotonic()
        b.valid()
        b.alive()
        assert time.monotonic() - started < 2, "the relay stalled behind half-sent requests"
    finally:
        for sock in socks:
            sock.close()
    b.cases.append(("200-half-sent-connections", 200))


def test_client_that_never_finishes_its_headers_is_cut_off(b: Battery) -> None:
    with socket.create_connection(("127.0.0.1", b.relay.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/logs/custom HTTP/1.1\r\nHost: relay\r\nContent-Type: appl")
        closed = select.select([sock], [], [], READ_TIMEOUT + 4)[0]  # bounded: readable = answered or closed
        head = _read_head(sock) if closed else b""
    b.cases.append(("headers-never-finished", int(head[9:12]) if head[:5] == b"HTTP/" else None))
    assert closed, f"a half-sent request was still held open {READ_TIMEOUT + 4:g}s later"
    assert head == b"" or head.startswith((b"HTTP/1.1 408", b"HTTP/1.0 408", b"HTTP/1.1 400")), head


# ---- header floods, routing, auth --------------------------------------------------------------------


def test_header_floods_are_refused_with_4xx(b: Battery) -> None:
    many = _request_head(Content_Length="2", **{f"X_Flood_{i}": "v" for i in range(20_000)}) + b"[]"
    expect(b, "20k-headers", b.raw(many), {400, 431})
    huge = _request_head(Content_Length="2", X_Big="v" * 100_000) + b"[]"
    expect(b, "100KB-header", b.raw(huge), {400, 431})
    long_line = f"POST /{'a' * 100_000} HTTP/1.1\r\nHost: relay\r\nContent-Length: 2\r\n\r\n[]".encode()
    expect(b, "100KB-request-line", b.raw(long_line), {400, 414, 431})
    garbage = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200)  # a TLS hello on the plain port
    expect(b, "tls-hello-on-http", b.raw(garbage), {400, None})


def test_a_hundred_ordinary_headers_are_fine(b: Battery) -> None:
    headers = {**JSON, **{f"X-Trace-{i}": "v" * 50 for i in range(100)}}
    batch = [entry("/hostile/headers/ok")]
    answer = expect(b, "100-headers", b.post(json.dumps(batch).encode(), headers), 200)
    assert answer["accepted"] == 1
    b.valid_sent.add("/hostile/headers/ok")


def test_unknown_source_is_404(b: Battery) -> None:
    expect(b, "unknown-source", b.post(PAYLOAD, path="/ingest/nope"), 404, error="nope")
    expect(b, "path-traversal", b.post(PAYLOAD, path="/ingest/../ingest/%2e%2e/custom"), {404, 400})


def test_token_protected_source(b: Battery) -> None:
    batch = json.dumps([entry("/hostile/secure/0")]).encode()
    expect(b, "token-missing", b.post(batch, path="/ingest/secure"), 401, error="token")
    expect(b, "token-wrong-bearer", b.post(batch, {**JSON, "Authorization": "Bearer nope"}, path="/ingest/secure"), 401)
    expect(b, "token-wrong-x-api-key", b.post(batch, {**JSON, "x-api-key": TOKEN + "x"}, path="/ingest/secure"), 401)
    expect(b, "token-prefix-only", b.post(batch, {**JSON, "x-api-key": TOKEN[:-1]}, path="/ingest/secure"), 401)
    expect(b, "basic-auth-not-base64", b.post(batch, {**JSON, "Authorization": "Basic !!!"}, path="/ingest/secure"), 401)
    expect(b, "basic-auth-no-colon", b.post(batch, {**JSON, "Authorization": "Basic " + base64.b64encode(
        TOKEN.encode()).decode()}, path="/ingest/secure"), 401)
    expect(b, "authorization-huge", b.post(batch, {**JSON, "Authorization": "Bearer " + "t" * 8000},
                                           path="/ingest/secure"), 401)
    answer = expect(b, "token-right-bearer", b.post(batch, {**JSON, "Authorization": f"Bearer {TOKEN}"},
                                                    path="/ingest/secure"), 200)
    assert answer["accepted"] == 1
    assert TOKEN not in b.relay.log_text(), "a token reached the log"
    b.valid_sent.add("/hostile/secure/0")


def test_wrong_methods_are_not_500(b: Battery) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = http_request(b.url, method, b"[]" if method != "GET" else None, headers=JSON)
        b.statuses[response.status] += 1
        b.cases.append((f"method-{method}", response.status))
        assert response.status == 405, (method, response.status)


# ---- the verdict ------------------------------------------------------------------------------------


def test_zz_valid_traffic_around_the_battery_arrived_and_the_relay_held(battery: Battery) -> None:
    """Runs last: everything valid that was acknowledged reached upstream; no 500 ever; RSS bounded."""
    b = battery
    b.alive()
    b.valid()
    wait_until(lambda: b.valid_sent <= {e["path"] for e in b.upstream.entries()}, timeout=30,
               message=lambda: f"{len(b.valid_sent - {e['path'] for e in b.upstream.entries()})} valid entries "
                               f"never arrived\n{b.relay.log_tail()}")
    assert b.statuses[500] == 0, b.statuses
    assert all(not r["errors"] for r in b.upstream.records()), "upstream refused entries the relay accepted"
    peak = b.rss_kb("VmHWM")
    log = b.relay.log_text()
    assert not re.search(r'File ".*/relay/[^"]+\.py"', log), "a traceback from relay code\n" + b.relay.log_tail(100)
    print(f"\nhostile battery: {len(b.cases)} cases, statuses {dict(sorted(b.statuses.items()))}, "
          f"{len(b.valid_sent)} valid entries delivered, relay peak RSS {peak // 1024} MiB")
    for case, status in b.cases:
        print(f"  {status}  {case}")

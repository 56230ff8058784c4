"""decode_body: captured shipper bodies, every encoding, limits and damaged input."""

from __future__ import annotations

import gzip
import json
import struct
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import cramjam
import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.errors import BadRequest, IngestError, PayloadTooLarge, UnsupportedMedia
from relay.models import Decoded
from relay.stages.compression import decompress_whole
from relay.stages.decode import decode_body, inflate
from tests.support import FIXTURES

FLUENT_BIT = sorted(p for p in (FIXTURES / "fluent-bit").glob("*") if p.is_dir())
MiB = 1 << 20
LIMIT = 16 * MiB

RECORDS = [{"n": i, "message": f"GET /page/{i} HTTP/1.1", "status": 200} for i in range(50)]
NDJSON = b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)
ARRAY = json.dumps(RECORDS).encode()


def decode(body: bytes, content_type: str | None = "application/json",
           content_encoding: str | None = None, max_size: int = LIMIT) -> Decoded:
    return decode_body(body, content_type=content_type, content_encoding=content_encoding,
                       max_size=max_size)


def event_time(seconds: int, nanos: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", seconds, nanos))


def packed(*events: Any) -> bytes:
    return b"".join(msgpack.packb(e) for e in events)


# --- Fluent Bit 4.2.8 captures, byte for byte ---------------------------------------------


def _expected(case: Path) -> list[Any]:
    lines = (case / "records.jsonl").read_text(encoding="utf-8").splitlines()
    values = [json.loads(line) for line in lines if line]
    if ".msgpack" not in case.name:
        return values
    # records.jsonl holds whole events; decode_body adds the EventTime as `date`, first.
    out = []
    for (header, record) in values:
        seconds, nanos = header[0]["EventTime"]
        out.append({"date": seconds + nanos / 1e9, **record})
    return out


@pytest.mark.parametrize("case", FLUENT_BIT, ids=[p.name for p in FLUENT_BIT])
def test_fluent_bit_capture_decodes_to_its_records(case: Path) -> None:
    request = json.loads((case / "request.json").read_text())
    headers = {name.lower(): value for name, value in request["headers"]}
    result = decode((case / "body.bin").read_bytes(), headers.get("content-type"),
                    headers.get("content-encoding"))
    expected = _expected(case)
    assert result.errors == []
    assert len(result.records) == request["record_count"]
    assert result.records == expected
    # Key order matters to anyone printing records: `date` first, as Fluent Bit does.
    assert [list(r) for r in result.records] == [list(r) for r in expected]
    fmt = case.name.split(".")[1]
    assert result.format == {"json": "json", "json_lines": "ndjson",
                             "json_stream": "json_stream", "msgpack": "msgpack"}[fmt]


def test_fixtures_are_present() -> None:
    assert len(FLUENT_BIT) >= 20, f"the Fluent Bit captures are missing from {FIXTURES}"


# --- Content-Encoding ---------------------------------------------------------------------


def _zlib(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", lambda d: _zlib(d, 15)),  # Vector's `compression = "zlib"`
        ("deflate", lambda d: _zlib(d, -15)),  # raw deflate
        ("deflate", gzip.compress),  # mislabelled gzip
        ("zstd", lambda d: zstandard.ZstdCompressor().compress(d)),
        ("zstd", lambda d: zstandard.ZstdCompressor(write_content_size=False).compress(d)),
        ("snappy", lambda d: bytes(cramjam.snappy.compress_raw(d))),  # Fluent Bit
        ("snappy", lambda d: bytes(cramjam.snappy.compress(d))),  # framed
        ("identity", lambda d: d),
        (" GZip ", gzip.compress),
    ],
)
def test_each_content_encoding_decodes(encoding: str, compress: Any) -> None:
    result = decode(compress(NDJSON), "application/x-ndjson", encoding)
    assert result.records == RECORDS
    assert (result.format, result.errors, result.indexes) == ("ndjson", [], None)


def test_multi_member_gzip_and_multi_frame_zstd_are_read_whole() -> None:
    half = len(NDJSON) // 2
    cut = NDJSON.rfind(b"\n", 0, half) + 1
    two_members = gzip.compress(NDJSON[:cut]) + gzip.compress(NDJSON[cut:])
    assert decode(two_members, "application/x-ndjson", "gzip").records == RECORDS
    zc = zstandard.ZstdCompressor(write_content_size=False)
    two_frames = zc.compress(NDJSON[:cut]) + zc.compress(NDJSON[cut:])
    assert decode(two_frames, "application/x-ndjson", "zstd").records == RECORDS


def test_layers_are_undone_last_applied_first() -> None:
    body = zstandard.ZstdCompressor().compress(gzip.compress(ARRAY))
    assert decode(body, "application/json", "gzip, zstd").records == RECORDS
    body = gzip.compress(bytes(cramjam.snappy.compress_raw(ARRAY)))
    assert decode(body, "application/json", "SNAPPY ,gzip").records == RECORDS


def test_gzip_without_content_encoding_is_sniffed() -> None:
    assert decode(gzip.compress(ARRAY), None, None).records == RECORDS


@pytest.mark.parametrize("encoding", ["br", "gzip, br", "compress", "lz4"])
def test_unknown_encoding_is_415_naming_it(encoding: str) -> None:
    with pytest.raises(UnsupportedMedia, match=r"Content-Encoding '(br|compress|lz4)' is not supported"):
        decode(gzip.compress(ARRAY), "application/json", encoding)


def test_too_many_layers_is_415() -> None:
    with pytest.raises(UnsupportedMedia, match="layers"):
        decode(ARRAY, "application/json", "gzip, gzip, gzip, gzip, gzip")


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(ARRAY)[:-12]),
        ("gzip", gzip.compress(ARRAY)[:40]),
        ("zstd", zstandard.ZstdCompressor().compress(ARRAY)[:-6]),
        ("zstd", zstandard.ZstdCompressor(write_content_size=False).compress(ARRAY)[:30]),
        ("snappy", bytes(cramjam.snappy.compress_raw(ARRAY))[:-9]),
        ("snappy", bytes(cramjam.snappy.compress(ARRAY))[:-9]),
        ("deflate", _zlib(ARRAY, 15)[:-8]),
        ("gzip", b"not gzip at all"),
        ("zstd", b"\x28\xb5\x2f\xfd" + b"\x00" * 20),
        ("gzip", gzip.compress(ARRAY) + b"trailing junk"),
    ],
    # gzip bytes carry the time: ids from the bytes would differ between pytest-xdist workers
    ids=lambda value: value if isinstance(value, str) else "body",
)
def test_truncated_or_corrupt_compression_is_400(encoding: str, body: bytes) -> None:
    with pytest.raises(BadRequest, match=encoding):
        decode(body, "application/json", encoding)


def test_gzip_trailing_zero_padding_is_ignored() -> None:
    assert decode(gzip.compress(ARRAY) + b"\0" * 8, content_encoding="gzip").records == RECORDS


@pytest.mark.parametrize(("body", "header", "whole"), [
    (gzip.compress(ARRAY), "gzip", True),
    (gzip.compress(ARRAY), " GZIP ", True),
    (gzip.compress(ARRAY[:9]) + gzip.compress(ARRAY[9:]), "gzip", False),  # some readers stop at the first
    (gzip.compress(b"") + gzip.compress(ARRAY), "gzip", False),
    (gzip.compress(ARRAY) + b"\0" * 8, "gzip", False),  # some readers refuse the padding
    (gzip.compress(ARRAY), None, False),  # sniffed: the client did not say gzip
    (gzip.compress(ARRAY), "identity, gzip", False),
    (zlib.compress(ARRAY), "deflate", False),
    (ARRAY, None, False),
])
def test_only_one_whole_gzip_member_may_go_upstream_as_it_came(body: bytes, header: str | None, whole: bool) -> None:
    assert decompress_whole(body, header, MiB) == (ARRAY, whole)


def test_a_bom_is_not_sent_on() -> None:
    assert inflate(gzip.compress(b"\xef\xbb\xbf" + ARRAY), content_type="application/json",
                   content_encoding="gzip", max_size=MiB) == ("json", ARRAY, False)


# --- size limits ---------------------------------------------------------------------------


def _bomb_is_stopped(body: bytes, encoding: str) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(PayloadTooLarge, match=str(MiB)):
            decode(body, "application/json", encoding, max_size=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 8 * MiB  # never inflated: 100 MB of output would show here


def test_gzip_bomb_is_413_without_inflating_it() -> None:
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = b"".join(zeros.compress(b"\0" * MiB) for _ in range(100)) + zeros.flush()
    assert len(body) < MiB // 4
    _bomb_is_stopped(body, "gzip")


def test_deflate_zstd_and_snappy_bombs_are_413() -> None:
    zeros = b"\0" * (100 * MiB)
    _bomb_is_stopped(_zlib(zeros, 15), "deflate")
    _bomb_is_stopped(zstandard.ZstdCompressor(write_content_size=False).compress(zeros), "zstd")
    _bomb_is_stopped(zstandard.ZstdCompressor().compress(zeros), "zstd")
    _bomb_is_stopped(bytes(cramjam.snappy.compress_raw(zeros[: 4 * MiB])), "snappy")
    _bomb_is_stopped(bytes(cramjam.snappy.compress(zeros[: 4 * MiB])), "snappy")


def test_limit_counts_decompressed_bytes_exactly() -> None:
    assert decode(gzip.compress(ARRAY), content_encoding="gzip", max_size=len(ARRAY)).records == RECORDS
    with pytest.raises(PayloadTooLarge):
        decode(gzip.compress(ARRAY), content_encoding="gzip", max_size=len(ARRAY) - 1)
    with pytest.raises(PayloadTooLarge):
        decode(ARRAY, max_size=len(ARRAY) - 1)


# --- Content-Type ---------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/xml", "image/png", "text/html",
                                          "multipart/form-data; boundary=x", "application/x-protobuf"])
def test_foreign_content_type_is_415_naming_it(content_type: str) -> None:
    media = content_type.split(";")[0]
    with pytest.raises(UnsupportedMedia, match=f"Content-Type '{media}' is not supported"):
        decode(ARRAY, content_type)


@pytest.mark.parametrize("content_type", [None, "", "application/octet-stream",
                                          "application/x-www-form-urlencoded",
                                          "Application/JSON; charset=utf-8",
                                          "application/vnd.api+json"])
def test_generic_or_parameterised_types_are_sniffed(content_type: str | None) -> None:
    assert decode(ARRAY, content_type).records == RECORDS
    assert decode(NDJSON, content_type).records == RECORDS
    events = packed(*[[[event_time(1, 0), {}], r] for r in RECORDS])
    assert decode(events, content_type).format == "msgpack"


def test_unrecognisable_binary_without_a_type_is_415() -> None:
    lz4_frame = b"\x04\x22\x4d\x18\x64\x40\xa7\x00\x00\x00\x80"
    with pytest.raises(UnsupportedMedia, match="04 22 4d 18"):
        decode(lz4_frame, None)


# --- JSON shapes -----------------------------------------------------------------------------


def test_array_object_scalar_and_empty_bodies() -> None:
    assert decode(ARRAY).format == "json"
    one = decode(b' {"a": 1} ')
    assert (one.records, one.format) == ([{"a": 1}], "json_object")
    assert decode(b"[1, \"x\", null]").records == [1, "x", None]  # mapping rejects non-objects
    assert decode(b"42").records == [42]
    for empty in (b"", b"  \n", b"[]"):
        assert decode(empty).records == []
        assert decode(empty).errors == []


def test_byte_order_mark_is_skipped() -> None:
    assert decode(b"\xef\xbb\xbf" + ARRAY).records == RECORDS
    assert decode(b"\xef\xbb\xbfline\n", "text/plain").records == [{"message": "line"}]


# The relay's own wording of where (never the JSON library's text, which changes by version).
@pytest.mark.parametrize("body, where", [
    (b'[{"a": 1}, {"b": }]', "(body byte 17)"),
    (b'{"a": 1', "ends at body byte 7 inside a value"),
    (b'[{"a": NaN}]', "(body byte 7)"),
    (b'[{"a": "\xff"}]', "invalid UTF-8 at body byte 8"),
    (b"[" * 100_000, "nested too deeply"),
])
def test_malformed_json_is_400_with_a_location(body: bytes, where: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode(body)
    assert where in caught.value.message


def test_invalid_utf8_in_one_ndjson_line_is_located_in_the_body() -> None:
    result = decode(b'{"a": "ok"}\n{"b": "\xc3("}\n')
    assert result.records == [{"a": "ok"}]
    assert [e.message for e in result.errors] == ["line 2 is not valid JSON: invalid UTF-8 at body byte 19"]


def test_one_bad_ndjson_line_is_rejected_and_the_rest_kept() -> None:
    lines = NDJSON.splitlines(keepends=True)
    lines[3] = b'{"n": 3, "message": "cut short\n'
    lines[7] = b'{"n": 7, "x": NaN}\n'
    result = decode(b"".join(lines), "application/x-ndjson")
    assert [r["n"] for r in result.records] == [i for i in range(50) if i not in (3, 7)]
    assert [(e.index, e.reason) for e in result.errors] == [(3, "invalid_json"), (7, "invalid_json")]
    assert result.errors[0].message.startswith("line 4 is not valid JSON")
    assert result.indexes == [i for i in range(50) if i not in (3, 7)]


def test_ndjson_tolerates_crlf_blank_lines_and_a_missing_final_newline() -> None:
    body = b'{"a": 1}\r\n\r\n  \n{"a": 2}'
    assert decode(body, "application/x-ndjson").records == [{"a": 1}, {"a": 2}]
    assert decode(body, "application/json").format == "ndjson"


def test_ndjson_where_nothing_decodes_is_400() -> None:
    with pytest.raises(BadRequest, match=r"line 1.*and 1 more"):
        decode(b"{oops\n{nope\n", "application/x-ndjson")


def test_json_stream_keeps_a_brace_pair_inside_a_string_intact() -> None:
    records = [{"path": "/a}{b", "n": 1}, {"ua": '}{"}{', "n": 2}, {"n": 3}]
    body = b"".join(json.dumps(r, separators=(",", ":")).encode() for r in records)
    result = decode(body)
    assert (result.records, result.format) == (records, "json_stream")


def test_json_stream_with_a_bad_object_keeps_the_others() -> None:
    body = b'{"n":1}{"n":2,"x":"}{"}{"n":bad}{"n":4}'
    result = decode(body)
    assert result.records == [{"n": 1}, {"n": 2, "x": "}{"}, {"n": 4}]
    assert [(e.index, e.reason) for e in result.errors] == [(2, "invalid_json")]
    assert "byte" in result.errors[0].message
    assert result.indexes == [0, 1, 3]


def test_json_seq_records_are_read() -> None:
    body = b"".join(b"\x1e" + json.dumps(r).encode() + b"\n" for r in RECORDS)
    assert decode(body, "application/json-seq").records == RECORDS


def test_gelf_objects_are_labelled_gelf() -> None:
    gelf = {"version": "1.1", "host": "web-1", "short_message": "GET / 200",
            "timestamp": 1795593600.5, "_status": 200}
    body = (json.dumps(gelf) + "\n") * 3
    result = decode(body.encode(), "application/json")
    assert (result.records, result.format) == ([gelf] * 3, "gelf")


def test_vector_json_array_of_events() -> None:
    events = [{"message": f'1.2.3.4 - - "GET /{i} HTTP/1.1" 200', "timestamp": "2026-11-25T08:00:00.123456789Z",
               "host": "web-1", "source_type": "file", "file": "/var/log/nginx/access.log"}
              for i in range(3)]
    body = json.dumps(events).encode()
    assert decode(body, "application/json").records == events
    assert decode(_zlib(body, 15), "application/json", "deflate").records == events
    ndjson = b"\n".join(json.dumps(e).encode() for e in events) + b"\n"
    assert decode(ndjson, "application/x-ndjson").records == events


# --- text ------------------------------------------------------------------------------------


def test_text_lines_become_messages() -> None:
    body = b'1.2.3.4 - - [25/Nov/2026:09:00:00 +0100] "GET / HTTP/1.1" 200 5\r\n\nsecond line\n'
    result = decode(body, "text/plain; charset=utf-8")
    assert result.format == "text"
    assert result.records == [{"message": '1.2.3.4 - - [25/Nov/2026:09:00:00 +0100] "GET / HTTP/1.1" 200 5'},
                              {"message": "second line"}]


def test_text_of_json_lines_is_ndjson_and_mixed_lines_stay_apart() -> None:
    assert decode(NDJSON, "text/plain").records == RECORDS
    assert decode(NDJSON, "text/plain").format == "ndjson"
    mixed = decode(b'{"a": 1}\nplain {words}\n\xffbad byte\n', "text/plain")
    assert mixed.records == [{"a": 1}, {"message": "plain {words}"}, {"message": "\ufffdbad byte"}]
    assert mixed.format == "text"


def test_text_without_content_type_is_sniffed_as_text() -> None:
    assert decode(b"hello\nworld\n", None).records == [{"message": "hello"}, {"message": "world"}]


# --- MessagePack -------------------------------------------------------------------------------


def test_msgpack_event_shapes() -> None:
    body = packed(
        [[event_time(1795593600, 500_000_000), {"meta": 1}], {"a": 1}],  # Fluent Bit 2.1+
        [event_time(1795593601, 0), {"a": 2}],  # older Fluent Bit
        [1795593602, {"a": 3}],  # integer seconds
        [1795593603.25, {"a": 4}],  # float seconds
        {"a": 5},  # a bare record (Fluentd's msgpack formatter)
        [1795593604, {"date": "kept", "a": 6}],  # a record that has its own date
    )
    result = decode(body, "application/x-msgpack")
    assert result.format == "msgpack"
    assert result.records == [
        {"date": 1795593600.5, "a": 1}, {"date": 1795593601.0, "a": 2},
        {"date": 1795593602.0, "a": 3}, {"date": 1795593603.25, "a": 4},
        {"a": 5}, {"date": "kept", "a": 6},
    ]
    assert all(type(r["date"]) is float for r in result.records[:4])
    assert list(result.records[0]) == ["date", "a"]


def test_msgpack_bad_events_are_rejected_and_the_rest_kept() -> None:
    good = [event_time(1, 0), {"a": 1}]
    body = packed(good, [1, 2, 3], good, "text", good) + msgpack.packb(good)[:-2]
    result = decode(body, "application/msgpack")
    assert len(result.records) == 3
    assert [(e.index, e.reason) for e in result.errors] == [
        (1, "invalid_event"), (3, "invalid_event"), (5, "invalid_msgpack")]
    assert "truncated" in result.errors[-1].message
    assert result.indexes == [0, 2, 4]


def test_msgpack_invalid_utf8_is_replaced_not_fatal() -> None:
    body = msgpack.packb([1, {"path": "x"}]).replace(b"\xa1x", b"\xa1\xff") + packed([2, {"a": 1}])
    assert decode(body, "application/msgpack").records == [
        {"date": 1.0, "path": "\ufffd"}, {"date": 2.0, "a": 1}]


def test_msgpack_garbage_is_400() -> None:
    with pytest.raises(BadRequest, match="MessagePack"):
        decode(b"\x92\xc1\xc1", "application/msgpack")


def test_msgpack_declared_but_json_sent_is_read_as_json() -> None:
    assert decode(ARRAY, "application/msgpack").records == RECORDS


# --- property: nothing but IngestError escapes ----------------------------------------------

_TYPES = st.sampled_from([None, "", "application/json", "application/x-ndjson", "text/plain",
                          "application/msgpack", "application/octet-stream", "application/json-seq",
                          "image/png"]) | st.text(max_size=30)
_ENCODINGS = st.sampled_from([None, "", "gzip", "deflate", "zstd", "snappy", "gzip, zstd",
                              "identity", "br"]) | st.text(max_size=20)
_PREFIXES = st.sampled_from([b"", b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xff\x06\x00\x00sNaPpY",
                             b"\x92", b"\xdd\x00\x00\x00\x02", b"{", b"[", b'{"a":1}{', b"\x78\x9c"])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=_PREFIXES, rest=st.binary(max_size=400), content_type=_TYPES,
       content_encoding=_ENCODINGS, max_size=st.integers(0, 4096))
def test_arbitrary_input_raises_only_ingest_errors(prefix: bytes, rest: bytes, content_type: str | None,
                                                   content_encoding: str | None, max_size: int) -> None:
    try:
        result = decode(prefix + rest, content_type, content_encoding, max_size)
    except IngestError as exc:
        assert exc.message
    else:
        assert isinstance(result.records, list)
        assert result.indexes is None or len(result.indexes) == len(result.records)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(st.dictionaries(st.text(max_size=8), st.text(max_size=12) | st.integers()),
                        max_size=8),
       encoding=st.sampled_from(["gzip", "deflate", "zstd", "snappy", "zstd, gzip"]))
def test_any_compressed_ndjson_round_trips(records: list[dict[str, Any]], encoding: str) -> None:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    for name in [e.strip() for e in encoding.split(",")]:
        body = {"gzip": gzip.compress, "deflate": lambda d: _zlib(d, 15),
                "zstd": zstandard.ZstdCompressor().compress,
                "snappy": lambda d: bytes(cramjam.snappy.compress_raw(d))}[name](body)
    assert decode(body, "application/x-ndjson", encoding).records == records

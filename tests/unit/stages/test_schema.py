"""SPEC §2 rules: what is valid, what repair mode fixes (and counts), what reject mode names."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from relay.models import Rejection
from relay.stages.schema import Entry, ValidationPolicy, Validator, format_timestamp
from relay.stages.values import strip_ip_port

NOW = 1795599000.0  # 2026-11-25T09:30:00Z: the fixtures' day, pinned
TS = 1795593600.0  # 2026-11-25T08:00:00Z


def good(**over: Any) -> dict[str, Any]:
    fields = {
        "timestamp": "2026-11-25T08:00:00Z", "method": "GET", "host": "www.example.com", "path": "/a",
        "status_code": 200, "ip": "203.0.113.10", "user_agent": "curl/8.5.0",
    }  # fmt: skip
    fields.update(over)
    return fields


def validator(mode: str = "repair", **policy: Any) -> Validator:
    return Validator(ValidationPolicy(on_invalid=mode, now=NOW, **policy))  # type: ignore[arg-type]


def check(v: Validator, repairs: dict[str, int] | None = None, **over: Any) -> Entry | Rejection:
    values = {"ts": TS, "method": "GET", "host": "h.example", "path": "/", "status": 200, "ip": "192.0.2.1",
              "ua": "ua", "qp": None, "referer": None, "nbytes": None, "duration": None}  # fmt: skip
    values.update(over)
    return v.check(0, *values.values(), repairs if repairs is not None else {})


def test_valid_entry_encodes_in_table_order_without_unset_fields() -> None:
    entry = validator().validate(good(referer="https://a.example/", bytes_sent=0), 0)
    assert isinstance(entry, Entry)
    assert msgspec.json.encode(entry) == (
        b'{"timestamp":"2026-11-25T08:00:00Z","method":"GET","host":"www.example.com","path":"/a",'
        b'"status_code":200,"ip":"203.0.113.10","user_agent":"curl/8.5.0","referer":"https://a.example/",'
        b'"bytes_sent":0}'
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        (1795593600, "2026-11-25T08:00:00Z"),
        (1795593600123, "2026-11-25T08:00:00.123Z"),  # milliseconds, by magnitude
        (1795593600123456789, "2026-11-25T08:00:00.123457Z"),  # nanoseconds, rounded to µs
        ("2026-11-25T09:00:00+01:00", "2026-11-25T08:00:00Z"),
        ("2026-11-25T08:00:00.000000Z", "2026-11-25T08:00:00Z"),
        ("2026-11-25 08:00:00.5", "2026-11-25T08:00:00.500Z"),
    ],
)
def test_timestamp_accepts_unix_or_iso_and_outputs_iso_utc(value: Any, expected: str) -> None:
    entry = validator().validate(good(timestamp=value), 0)
    assert isinstance(entry, Entry) and entry.timestamp == expected


def test_format_timestamp_rounds_to_microseconds_and_carries() -> None:
    assert format_timestamp(1795593600.0) == "2026-11-25T08:00:00Z"
    assert format_timestamp(1795684479.09638) == "2026-11-26T09:14:39.096380Z"
    assert format_timestamp(1795593600.9999999) == "2026-11-25T08:00:01Z"


@pytest.mark.parametrize("mode", ["repair", "reject"])
@pytest.mark.parametrize(
    "timestamp, words",
    [("2026-10-01T00:00:00Z", "too old"), ("2026-11-27T00:00:00Z", "in the future"), ("yesterday", "Unix or ISO")],
)
def test_timestamp_out_of_range_or_unreadable_rejects_in_both_modes(mode: str, timestamp: str, words: str) -> None:
    out = validator(mode).validate(good(timestamp=timestamp), 4)
    assert isinstance(out, Rejection) and out.field == "timestamp" and words in out.message
    assert out.render().startswith("$[4].timestamp: ")


def test_window_is_configurable() -> None:
    out = validator(max_age=3600).validate(good(timestamp="2026-11-25T08:00:00Z"), 0)
    assert isinstance(out, Rejection) and out.reason == "out_of_range"
    assert out.message.endswith("(accepted: 1h back, 1d ahead)")  # written as the config writes durations
    assert isinstance(validator(max_age=7200).validate(good(), 0), Entry)


@pytest.mark.parametrize("mode", ["repair", "reject"])
def test_status_code_must_be_100_to_599(mode: str) -> None:
    out = validator(mode).validate(good(status_code="abc"), 2)
    assert isinstance(out, Rejection)
    assert out.render() == '$[2].status_code: must be an integer 100..599, got "abc"'
    assert isinstance(validator(mode).validate(good(status_code=600), 0), Rejection)
    assert isinstance(validator(mode).validate(good(status_code=True), 0), Rejection)
    assert validator(mode).validate(good(status_code="404"), 0).status_code == 404  # type: ignore[union-attr]


@pytest.mark.parametrize("field", ["timestamp", "method", "host", "path", "status_code", "ip"])
def test_missing_required_field_rejects(field: str) -> None:
    fields = good()
    del fields[field]
    out = validator().validate(fields, 0)
    assert isinstance(out, Rejection) and out.field == field and out.reason == "required"


def test_missing_host_says_to_set_host_on_the_source() -> None:
    out = check(validator(), host=None)
    assert isinstance(out, Rejection) and out.field == "host" and "set `host` on the source" in out.message


def test_repair_mode_fixes_and_counts_by_field_and_action() -> None:
    repairs: dict[str, int] = {}
    out = check(
        validator(), repairs, method="get", path="/" + "p" * 3000, ip="[2001:db8::1]:443", ua=None,
        referer="r" * 3000, nbytes=-5, duration=float("nan"), qp={"k" * 150: "v", "n": 3},
    )  # fmt: skip
    assert isinstance(out, Entry)
    assert out.method == "GET" and len(out.path) == 2048 and out.ip == "2001:db8::1" and out.user_agent == ""
    assert len(out.referer) == 2048  # type: ignore[arg-type]
    assert out.bytes_sent is msgspec.UNSET and out.duration_ms is msgspec.UNSET
    assert out.query_params == {"k" * 100: "v", "n": "3"}
    assert repairs == {
        "method:uppercased": 1, "path:truncated": 1, "ip:port_stripped": 1, "user_agent:filled_empty": 1,
        "query_params:truncated": 1, "query_params:coerced": 1, "referer:truncated": 1,
        "bytes_sent:dropped": 1, "duration_ms:dropped": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    "over, field, reason, words",
    [
        ({"method": "get"}, "method", "uppercase", "upper case"),
        ({"path": "/" + "p" * 3000}, "path", "max_length", "longer than 2048"),
        ({"host": "h" * 256}, "host", "max_length", "longer than 255"),
        ({"ip": "1.2.3.4:5678"}, "ip", "invalid_ip", "without a port"),
        ({"ua": None}, "user_agent", "required", "missing"),
        ({"nbytes": -1}, "bytes_sent", "range", "integer >= 0"),
        ({"nbytes": 2**64}, "bytes_sent", "range", "64-bit"),
        ({"duration": -0.5}, "duration_ms", "range", "number >= 0"),
        ({"qp": {"a": ["x"]}}, "query_params", "type", "must be a string"),
        ({"referer": 12}, "referer", "type", "must be a string"),
    ],
)
def test_reject_mode_names_the_field_and_the_rule(over: dict[str, Any], field: str, reason: str, words: str) -> None:
    out = check(validator("reject"), **over)
    assert isinstance(out, Rejection), out
    assert (out.field, out.reason) == (field, reason) and words in out.message


def test_invalid_ip_rejects_even_in_repair_mode() -> None:
    out = check(validator(), ip="not-an-ip")
    assert isinstance(out, Rejection) and out.field == "ip" and 'got "not-an-ip"' in out.message


@pytest.mark.parametrize(
    "raw, bare",
    [("1.2.3.4:5678", "1.2.3.4"), ("[::1]:80", "::1"), ("2001:db8::1", "2001:db8::1"), ("1.2.3.4", "1.2.3.4")],
)
def test_strip_ip_port(raw: str, bare: str) -> None:
    assert strip_ip_port(raw) == bare


def test_fast_path_and_slow_path_agree() -> None:
    v = validator()
    first = check(v, ip="198.51.100.7", referer="https://x/", nbytes=5, duration=1.5, qp={"a": "b"})
    second = check(v, ip="198.51.100.7", referer="https://x/", nbytes=5, duration=1.5, qp={"a": "b"})  # cached
    assert first == second and isinstance(first, Entry) and first.query_params == {"a": "b"}


def test_empty_query_params_are_left_out() -> None:
    out = check(validator(), qp={})
    assert isinstance(out, Entry) and out.query_params is msgspec.UNSET


def test_validate_counts_repairs_into_running_totals_or_given_dict() -> None:
    v = validator()
    v.validate(good(method="post"), 0)
    mine: dict[str, int] = {}
    v.validate(good(method="put"), 1, mine)
    assert v.repairs == {"method:uppercased": 1} and mine == {"method:uppercased": 1}


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.123, 0.123456, 0.9999997, 0.0000004])
def test_fast_path_formats_fractions_like_format_timestamp(fraction: float) -> None:
    v = validator()
    check(v, ts=TS)  # the whole second is now known
    out = check(v, ts=TS + fraction)
    assert isinstance(out, Entry) and out.timestamp == format_timestamp(TS + fraction)

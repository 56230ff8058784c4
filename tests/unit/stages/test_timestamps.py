"""Timestamp readers: every shape shippers write -> Unix seconds."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

import msgpack
import msgspec
import pytest

from relay.stages.timestamps import from_number, reader, to_epoch
from relay.stages.values import RuleError

T = 1795593600.0  # 2026-11-25T08:00:00Z


@pytest.mark.parametrize(
    "value",
    [
        T, 1795593600, "1795593600", "1795593600.0", 1795593600000, 1795593600000000, 1795593600000000000,
        "1795593600000000000",
        "2026-11-25T08:00:00Z", "2026-11-25T08:00:00.000000Z", "2026-11-25t08:00:00z", "2026-11-25T09:00:00+01:00",
        "2026-11-25T09:00:00+0100", "2026-11-25T03:00:00-05", "2026-11-25T08:00:00.000000000Z",
        "2026-11-25 08:00:00.000000",  # Fluent Bit java_sql_timestamp
        "25/Nov/2026:09:00:00 +0100", "[25/Nov/2026:03:00:00 -0500]", "Wed, 25 Nov 2026 08:00:00 GMT",
        {"EventTime": [1795593600, 0]}, [1795593600, 0],
        msgspec.msgpack.Ext(0, struct.pack(">II", 1795593600, 0)), msgpack.ExtType(0, struct.pack(">II", 1795593600, 0)),
        datetime(2026, 11, 25, 8, tzinfo=UTC), datetime(2026, 11, 25, 8),
    ],
)  # fmt: skip
def test_auto_reads_every_shape(value: Any) -> None:
    assert to_epoch(value) == T


def test_fractions_keep_their_digits() -> None:
    assert to_epoch("2026-11-25T08:00:00.5Z") == T + 0.5
    assert to_epoch("2026-11-25T08:00:00,25+00:00") == T + 0.25
    assert to_epoch({"EventTime": [1795593600, 250000000]}) == T + 0.25
    assert to_epoch("25/Nov/2026:08:00:00.125 +0000") == T + 0.125


def test_magnitude_rule() -> None:
    assert [from_number(v) for v in (1e10, 1e13, 1e16, 1e19)] == [1e10, 1e10, 1e10, 1e10]


@pytest.mark.parametrize("value", ["", "yesterday", "2026-13-45T00:00:00Z", "32/Nov/2026:00:00:00 +0000", True, {"a": 1}])
def test_unreadable_values_raise_a_rule_error_naming_the_format(value: Any) -> None:
    with pytest.raises(RuleError) as caught:
        reader("auto")(value)
    assert caught.value.reason == "format" and 'format "auto"' in caught.value.message


def test_explicit_formats() -> None:
    assert reader("unix_ms")(1795593600000) == T
    assert reader("unix_us")("1795593600000000") == T
    assert reader("unix_s")("2026-11-25T08:00:00Z") == T  # not a number after all: read as what it is
    assert reader("%Y-%m-%d %H:%M:%S%z")("2026-11-25 09:00:00+0100") == T
    assert reader("%d/%m/%Y %H:%M")("25/11/2026 08:00") == T  # no zone: UTC
    with pytest.raises(RuleError):
        reader("clf")("2026-11-25T08:00:00Z")
    with pytest.raises(ValueError):
        reader("epoch")


def test_over_long_text_is_refused_before_parsing() -> None:
    with pytest.raises(RuleError):
        reader("auto")("2026-11-25T08:00:00." + "0" * 1_000_000 + "Z")
    with pytest.raises(RuleError):
        reader("clf")("25/Nov/2026:09:00:00 " + "+" * 100)

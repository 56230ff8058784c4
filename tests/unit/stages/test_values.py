"""relay.stages.values.is_ip: inet_pton first, ipaddress for what it refuses; same answers as ipaddress."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.stages.values import is_ip


def _ipaddress_says(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("text", "expected"), [
    ("203.0.113.10", True), ("0.0.0.0", True), ("255.255.255.255", True),
    ("2001:db8::1", True), ("::", True), ("::ffff:192.0.2.1", True), ("1:2:3:4:5:6:1.2.3.4", True),
    ("fe80::1%eth0", True),  # a zone id: inet_pton refuses it, ipaddress takes it
    ("01.2.3.4", False), ("256.1.1.1", False), ("1.2.3", False), ("1.2.3.4.5", False), ("1::2::3", False),
    ("1.2.3.4 ", False), (" 1.2.3.4", False), ("[::1]", False), ("1.2.3.4:80", False), ("", False),
    ("0x1.2.3.4", False), ("١.٢.٣.٤", False), ("1.2.3.4\x00", False), ("-", False), ("localhost", False),
])  # fmt: skip
def test_is_ip_known_cases(text: str, expected: bool) -> None:
    assert is_ip(text) is expected
    assert _ipaddress_says(text) is expected


_octet = st.one_of(st.integers(0, 300).map(str), st.integers(0, 99).map(lambda n: f"0{n}"), st.just(""))
_ipv4ish = st.lists(_octet, min_size=1, max_size=6).map(".".join)
_group = st.one_of(st.just(""), st.integers(0, 0xFFFFF).map(lambda n: f"{n:x}"), st.just("1.2.3.4"),
                   st.just("01.2.3.4"), st.just("FFFF"))
_ipv6ish = st.lists(_group, min_size=1, max_size=10).map(":".join)
_noise = st.text(alphabet="0123456789abcdefABCDEF:.%[] x\x00١", max_size=40)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_ipv4ish, _ipv6ish, _noise))
def test_is_ip_agrees_with_ipaddress(text: str) -> None:
    assert is_ip(text) is _ipaddress_says(text)

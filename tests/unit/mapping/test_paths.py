"""Source path syntax and lookup."""

from __future__ import annotations

from typing import Any

import pytest

from relay.mapping.paths import header, parse_path, resolve


@pytest.mark.parametrize(
    "text, kind, steps",
    [
        ("a", "record", ("a",)),
        ("req.headers.user-agent", "record", ("req", "headers", "user-agent")),
        ('request.headers["User-Agent"]', "record", ("request", "headers", "User-Agent")),
        ('attributes."http.request.method"', "record", ("attributes", "http.request.method")),
        ("a['x.y'][0]", "record", ("a", "x.y", 0)),
        ("a[-1]", "record", ("a", -1)),
        ("$tag", "tag", ()),
        ("$time", "time", ()),
        ("$header.Host", "header", ("Host",)),
        ('$header["X-Real-IP"]', "header", ("X-Real-IP",)),
    ],
)
def test_parse_path(text: str, kind: str, steps: tuple[Any, ...]) -> None:
    path = parse_path(text)
    assert (path.kind, path.steps) == (kind, steps)


@pytest.mark.parametrize("text", ["", "a.", ".a", "a..b", "a[", "a[x]", "$foo", "$tag.x", 'a"b"', "$header", "a[]"])
def test_bad_paths_say_why(text: str) -> None:
    with pytest.raises(ValueError):
        parse_path(text)


RECORD = {
    "http": {"version": "1.1", "request": {"method": "GET"}},
    "http.response.status_code": 200,
    "url": {"path.x": "/nested-flat"},
    "headers": {"User-Agent": ["ua1", "ua2"], "Empty": []},
    "list": [{"k": "first"}, {"k": "second"}],
}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("http.request.method", "GET"),
        ("http.response.status_code", 200),  # flattened key at the top
        ("url.path.x", "/nested-flat"),  # flattened below
        ('headers."User-Agent"', "ua1"),  # arrays: first element
        ('headers."User-Agent"[1]', "ua2"),
        ("headers.Empty", None),
        ("list.k", "first"),
        ("list[1].k", "second"),
        ("http.nope", None),
        ("http.version.x", None),
    ],
)
def test_resolve(text: str, expected: Any) -> None:
    path = parse_path(text)
    assert resolve(RECORD, path.steps, path.joinable) == expected


def test_quoted_segments_do_not_match_flattened_keys() -> None:
    path = parse_path('http."response".status_code')
    assert resolve(RECORD, path.steps, path.joinable) is None


def test_header_lookup_is_case_insensitive() -> None:
    assert header({"Host": "a"}, "host") == "a"
    assert header({"x-real-ip": "b"}, "X-Real-IP") == "b"
    assert header({}, "Host") is None and header(None, "Host") is None

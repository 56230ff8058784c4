"""Field and whole-line parsers."""

from __future__ import annotations

import copy
import pickle

import msgspec
import pytest

from relay.mapping.lines import parse_alb, parse_combined, parse_common, parse_envoy, unescape
from relay.mapping.parsers import first_ip, parse_query, parse_request_line, parse_url
from relay.stages.schema import QUERY_KEY_MAX, QUERY_VALUE_MAX, Query
from relay.stages.values import RuleError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a=1&b=x+y", {"a": "1", "b": "x y"}),
        ("q=caf%C3%A9%20cr%C3%A8me&lang=fr", {"q": "café crème", "lang": "fr"}),
        ("tag=red&tag=blue", {"tag": "red,blue"}),  # repeated keys: values joined by ","
        ("flag&empty=", {"flag": "", "empty": ""}),
        ("?a=1&&=x&b=%ZZ", {"a": "1", "b": "%ZZ"}),  # leading ?, empty parts and keys skipped, bad escapes kept
        ("to=https%3A%2F%2Fexample.org%2Fpath%3Fa%3D1%26b%3D2", {"to": "https://example.org/path?a=1&b=2"}),
        ("bad=%C3%28", {"bad": "\ufffd("}),
        ("", None),
    ],
)
def test_parse_query(text: str, expected: object) -> None:
    assert parse_query(text) == expected


def test_a_query_within_the_limits_is_one_shared_read_only_query() -> None:
    first = parse_query("sort=price&page=2")
    again = parse_url("/shop/item-123?sort=price&page=2")[1]
    assert type(first) is Query and again is first  # memoised: every entry holds the one object
    for change in (lambda q: q.__setitem__("page", "3"), lambda q: q.update(page="3"), lambda q: q.pop("page"),
                   lambda q: q.clear(), lambda q: q.setdefault("x", "1"), lambda q: q.__delitem__("page")):
        with pytest.raises(TypeError, match="shared between entries"):
            change(first)
    assert first == {"sort": "price", "page": "2"}
    # pickled (the rejected store, a worker's hand-over) and copied, it comes back whole
    assert pickle.loads(pickle.dumps(first)) == first and type(pickle.loads(pickle.dumps(first))) is Query
    assert copy.copy(first) == first and copy.deepcopy(first) == first
    assert msgspec.json.encode(first) == b'{"sort":"price","page":"2"}'


@pytest.mark.parametrize("text", [f"{'k' * (QUERY_KEY_MAX + 1)}=1", f"a={'v' * (QUERY_VALUE_MAX + 1)}"])
def test_a_query_over_a_limit_is_a_plain_dict_of_its_own_for_the_validator_to_repair(text: str) -> None:
    first, second = parse_query(text), parse_query(text)
    assert type(first) is dict and first == second and first is not second


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/a/b", ("/a/b", None, None)),
        ("/a?b=1", ("/a", {"b": "1"}, None)),
        ("https://u:p@shop.example:8443/x?y=2#frag", ("/x", {"y": "2"}, "shop.example:8443")),
        ("http://example.com", ("/", None, "example.com")),
        ("http://example.com?x=1", ("/", {"x": "1"}, "example.com")),
        ("*", ("*", None, None)),
        ("/p#frag", ("/p", None, None)),
    ],
)
def test_parse_url(text: str, expected: tuple[object, ...]) -> None:
    assert parse_url(text) == expected


def test_parse_request_line() -> None:
    assert parse_request_line("GET /a?b=1 HTTP/1.1") == ("GET", "/a", {"b": "1"}, None)
    assert parse_request_line("CONNECT example.com:443 HTTP/1.1")[1] == "example.com:443"
    with pytest.raises(RuleError, match="not an HTTP request line"):
        parse_request_line("\\x16\\x03\\x01")


@pytest.mark.parametrize(
    "text, ip",
    [
        ("203.0.113.10, 10.0.0.1", "203.0.113.10"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ("[2001:db8::1]:80", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ('for="[2001:db8::2]:4711";proto=https', "2001:db8::2"),
        ("unknown, 1.2.3.4", None),
        (" ", None),
    ],
)
def test_first_ip(text: str, ip: str | None) -> None:
    assert first_ip(text) == (ip,)


def test_nginx_unescaping() -> None:
    assert unescape('x \\"y\\" \\x22z\\x22') == 'x "y" "z"' and unescape("na\\xC3\\xAFve") == "naïve"
    assert unescape("plain") == "plain" and unescape("a\\\\b") == "a\\b" and unescape("cut\\") == "cut\\"
    line = '1.2.3.4 - - [25/Nov/2026:09:00:00 +0100] "GET /na\\xC3\\xAFve HTTP/1.1" 200 1 "-" "x \\"y\\""'
    assert parse_combined(line)[3] == "/naïve" and parse_combined(line)[7] == 'x "y"'


COMBINED = '203.0.113.10 - alice [25/Nov/2026:09:00:08 +0100] "GET /search?q=a HTTP/1.1" 200 11165 "https://claude.ai/" "UA"'


def test_combined_and_common() -> None:
    assert parse_combined(COMBINED) == (
        1795593608.0, "GET", None, "/search", {"q": "a"}, 200, "203.0.113.10", "UA", "https://claude.ai/", 11165, None,
    )  # fmt: skip
    common = parse_common(COMBINED.rsplit(' "https', 1)[0])
    assert common[5:10] == (200, "203.0.113.10", None, None, 11165)
    assert parse_combined(COMBINED.replace(" 11165 ", " - "))[9] is None
    with pytest.raises(RuleError, match='parse "combined"'):
        parse_combined("not a log line at all")


def test_alb_and_envoy_reject_other_lines() -> None:
    for parse in (parse_alb, parse_envoy):
        with pytest.raises(RuleError):
            parse(COMBINED)


@pytest.mark.parametrize(
    "text", ["caf%C3%A9%20cr%C3%A8me", "%22exact+phrase%22", "a%2Fb%3Dc", "%ZZ", "%", "a%c3", "été%20x", "%C3%28", "x%2"]
)
def test_unquote_matches_urllib(text: str) -> None:
    from urllib.parse import unquote_plus

    from relay.mapping.parsers import unquote

    assert unquote(text) == unquote_plus(text, errors="replace")


@pytest.mark.parametrize("client, ip", [("203.0.113.10:2817", "203.0.113.10"), ("2001:db8::7:52030", "2001:db8::7"),
                                        ("[2001:db8::7]:52030", "2001:db8::7")])  # fmt: skip
def test_alb_client_is_always_ip_and_port(client: str, ip: str) -> None:
    line = (f'http 2026-11-25T08:00:00.000000Z app/lb/1 {client} - -1 -1 -1 460 - 34 0 '
            '"GET http://a.example:80/x HTTP/1.1" "curl/8" - - - "-" "-" "-" 0 2026-11-25T08:00:00.000000Z "-"')  # fmt: skip
    assert parse_alb(line)[6] == ip

"""Field parsers: one source value -> several target fields.

Each parser is a pure function returning a tuple in the order of its
`outputs`; the mapping uses the output of the field it is attached to and
offers the others as fallbacks to fields that have no rule of their own (or
whose rule found nothing). A value a parser cannot read raises `RuleError`.

Query strings (`query`, and the query part found by `url` and
`request_line`): `&`-separated, percent-decoded (invalid UTF-8 replaced), `+`
read as a space; a key without `=` gets ""; empty keys are skipped; a key
that repeats keeps all its values joined by "," in order (`tag=red&tag=blue`
-> `{"tag": "red,blue"}`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from relay.stages.schema import Query
from relay.stages.values import RuleError, is_ip, show, strip_ip_port


class Parser(NamedTuple):
    name: str
    outputs: tuple[str, ...]  # target fields, in the order of the returned tuple
    func: Callable[[str], tuple[Any, ...]]
    doc: str
    fills: frozenset[str] = frozenset()  # outputs it normally fills (for "has a source" checks); default: all
    may_miss: bool = False  # its own target may come out empty for a present value (vhost on `-`)




_HEX_DIGITS = "0123456789abcdefABCDEF"
_HEX_BYTE = {a + b: bytes([int(a + b, 16)]) for a in _HEX_DIGITS for b in _HEX_DIGITS}


def unquote(text: str) -> str:
    """Form decoding: `+` -> space, `%XX` -> byte, bytes read as UTF-8 (invalid ones replaced);
    a `%` not followed by two hex digits stays. urllib's unquote_plus, twice as fast."""
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    parts = text.split("%")
    out = [parts[0].encode()]
    add = out.append
    for part in parts[1:]:
        byte = _HEX_BYTE.get(part[:2])
        if byte is None:
            add(b"%")
            add(part.encode())
        else:
            add(byte)
            if len(part) > 2:
                add(part[2:].encode())
    return b"".join(out).decode("utf-8", "replace")


_QUERY_MEMO_LIMIT = 4096  # distinct query strings remembered (~3.5 MiB on the bench's), least recent out first
QUERY_MEMO_TEXT = 512  # longer query strings are parsed every time, never kept


def parse_query(text: str) -> dict[str, str] | None:
    """`a=1&b=x+y&c&tag=red&tag=blue` -> {"a": "1", "b": "x y", "c": "", "tag": "red,blue"}; None when empty.

    Within the schema's limits the result is a `Query`, shared read-only by every entry with
    the same query string (the memo hands out the one object, it is never copied)."""
    if text[:1] == "?":
        text = text[1:]
    if not text:
        return None
    if len(text) > QUERY_MEMO_TEXT:
        return _parse_query(text)
    query = remembered_query(text)
    if query.__class__ is Query or query is None:
        return query
    return dict(query)  # over a limit: a dict of its own, which the validator repairs or rejects


def _parse_query(text: str) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for part in text.split("&"):
        key, _, value = part.partition("=")
        if "%" in key or "+" in key:
            key = unquote(key)
        if not key:
            continue
        if "%" in value or "+" in value:
            value = unquote(value)
        seen = out.get(key)
        out[key] = value if seen is None else f"{seen},{value}"
    if not out:
        return None
    return Query(out) if Query.within_limits(out) else out


# Least recently used first out: real query strings are a few popular ones (pages, campaign links)
# among many seen once (searches, ids), and the once-seen must not push the popular ones out.
# Three passes over the bench's 100,000 records (40,574 query strings, 4,197 distinct, 3,082 seen
# once) parse 10,420 times with it, 13,153 with a memo emptied at 4,096 (4,197 at 8,192, but
# every worker holds its memo). lru_cache is C, about as quick as a dict lookup on a hit.
remembered_query = functools.lru_cache(maxsize=_QUERY_MEMO_LIMIT)(_parse_query)


def parse_url(text: str) -> tuple[str | None, dict[str, str] | None, str | None]:
    """`/a?b=1` or `https://h:8443/a?b=1#f` -> (path, query_params, host); host only from absolute URLs."""
    host = None
    if text[:1] != "/" and "://" in text[:12]:
        rest = text.partition("://")[2]
        cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
        host = rest[:cut].rpartition("@")[2] or None
        text = rest[cut:]
        if text[:1] != "/":
            text = "/" + text
    path, _, query = text.partition("?")
    if "#" in query:
        query = query.partition("#")[0]
    elif "#" in path:
        path = path.partition("#")[0]
    return path or None, parse_query(query) if query else None, host


def parse_request_line(text: str) -> tuple[str, str | None, dict[str, str] | None, str | None]:
    """`GET /a?b=1 HTTP/1.1` -> (method, path, query_params, host)."""
    parts = text.split(" ")
    if len(parts) < 2 or len(parts) > 3 or not parts[0].isalpha() or not parts[1]:
        raise RuleError("parse", f'parse "request_line": not an HTTP request line (METHOD TARGET PROTOCOL): {show(text)}')
    path, query, host = parse_url(parts[1])
    return parts[0], path, query, host


def first_ip(text: str) -> tuple[str | None]:
    """`203.0.113.10, 10.0.0.1` / `1.2.3.4:5678` / `[2001:db8::1]:80` / `for="[::1]:80"` -> the first client IP."""
    item = text.partition(",")[0].strip()
    if item[:4].lower() == "for=":  # RFC 7239 Forwarded
        item = item[4:].partition(";")[0].strip().strip('"')
    item = strip_ip_port(item)
    return (None if not item or item == "-" or item.lower() == "unknown" else item,)


def virtual_host(text: str) -> tuple[str | None]:
    """`shop.example.com:8443` -> `shop.example.com`; `-`, "" or an IP address (with or without a port) ->
    None, so that the source's `host` setting fills it: a log's host column often holds a placeholder
    or the address the client dialled, neither of which names the site."""
    name = strip_ip_port(text.strip())
    return (None if not name or name == "-" or is_ip(name) else name,)


PARSERS: dict[str, Parser] = {}


def register(parser: Parser) -> Parser:
    if not parser.fills:
        parser = parser._replace(fills=frozenset(parser.outputs))
    PARSERS[parser.name] = parser
    return parser


# url and request_line find a host only in absolute URLs: not counted as filling it (see Mapper.needs_host)
register(Parser("url", ("path", "query_params", "host"), parse_url,
                "URL or path -> path, query_params (and host for absolute URLs)",
                frozenset({"path", "query_params"})))  # fmt: skip
register(Parser("request_line", ("method", "path", "query_params", "host"), parse_request_line,
                '"GET /a?b=1 HTTP/1.1" -> method, path, query_params (and host for absolute URLs)',
                frozenset({"method", "path", "query_params"})))  # fmt: skip
register(Parser("query", ("query_params",), lambda text: (parse_query(text),), "query string -> query_params"))
# vhost may find nothing (a `-` or an IP): a mapping whose host depends on it still needs the source's `host`
register(Parser("vhost", ("host",), virtual_host,
                "host column -> the virtual host (port stripped); `-`, empty or an IP -> the source's `host`",
                may_miss=True))  # fmt: skip
register(Parser("first_ip", ("ip",), first_ip, "X-Forwarded-For / ip:port / [v6]:port -> the first IP"))

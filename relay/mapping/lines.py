"""Whole-line parsers for records that carry an unparsed access-log line (`log`, `message`).

Each returns the tuple `LINE_OUTPUTS` (timestamp as Unix seconds, numbers as
ints), or raises `RuleError` naming the format. Each format is one anchored
regular expression over its leading columns (later columns are ignored);
quoted fields are unescaped the way nginx escapes them (`\\"`, `\\\\`,
`\\xHH` bytes, decoded as UTF-8).
"""

from __future__ import annotations

import re
from typing import Any

from relay.mapping.parsers import Parser, parse_url, register
from relay.stages.timestamps import parse_clf, parse_iso
from relay.stages.values import RuleError, show, strip_ip_port

LINE_OUTPUTS = (
    "timestamp", "method", "host", "path", "query_params", "status_code", "ip",
    "user_agent", "referer", "bytes_sent", "duration_ms",
)  # fmt: skip
_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'  # unrolled: no per-character alternation
# $remote_addr $ident $remote_user [$time_local] "$request" $status $bytes ["$referer" "$user_agent"] ...
# type time elb client:port target:port t1 t2 t3 elb_status target_status rx tx "request" "user_agent"
#   [cipher protocol target_group "trace_id" "domain_name" ...]
_ALB = re.compile(r"(\S+) " * 12 + f"{_QUOTED} {_QUOTED}" + rf"(?: (\S+) (\S+) (\S+) {_QUOTED} {_QUOTED})?")
# [START] "REQUEST" CODE FLAGS [DETAILS TERMINATION "FAILURE" (Istio)] RX TX DURATION UPSTREAM "XFF" "UA" "ID" "AUTHORITY"
_ENVOY = re.compile(rf'\[([^\]]+)\] {_QUOTED} (\S+) (\S+) (?:(\S+) (\S+) {_QUOTED} )?(\d+) (\S+) (\S+) (\S+) '
                    + " ".join([_QUOTED] * 4))
_COMBINED = re.compile(rf'(\S+) \S+ \S+ \[([^\]]+)\] {_QUOTED} (\S+) (\S+)(?: {_QUOTED} {_QUOTED})?')
_ESCAPE = re.compile(rb'\\x([0-9A-Fa-f]{2})|\\(.)', re.DOTALL)


def unescape(text: str) -> str:
    """nginx's escaping undone: `\\x22` -> `"`, `\\xC3\\xAF` -> `ï`, `\\"` -> `"`, `\\\\` -> `\\`."""
    if "\\" not in text:
        return text
    raw = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]) if m[1] else m[2], text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "replace")


def _num(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _missing(text: str) -> str | None:
    return None if not text or text == "-" else text


def _request(text: str) -> tuple[str | None, str | None, dict[str, str] | None, str | None]:
    """The quoted request: `GET /a?b HTTP/1.1` (or ALB's absolute URL) -> method, path, query, host."""
    parts = text.split(" ")
    if len(parts) < 2 or not parts[0].isalpha():
        return None, None, None, None
    path, query, host = parse_url(parts[1])
    return parts[0], path, query, host


def _fail(fmt: str, line: str, expected: str) -> RuleError:
    return RuleError("parse", f'parse "{fmt}": not {expected}: {show(line)}')


def parse_combined(line: str, fmt: str = "combined") -> tuple[Any, ...]:
    """nginx/Apache `combined` (and `common`, whose last two fields are absent); extra fields after them are ignored."""
    match = _COMBINED.match(line)
    if match is None:
        raise _fail(fmt, line, f"an nginx/Apache {fmt} log line")
    ip, when, request, status_text, size, referer, agent = match.groups()
    try:
        epoch = parse_clf(when)
    except (ValueError, KeyError) as exc:
        raise _fail(fmt, line, f"a {fmt} log line (bad [time])") from exc
    if "\\" in request:
        request = unescape(request)
    method, path, query, host = _request(request)
    if referer is not None:
        referer = _missing(unescape(referer) if "\\" in referer else referer)
    if agent is not None:
        agent = _missing(unescape(agent) if "\\" in agent else agent)
    status = _num(status_text)
    return (epoch, method, host, path, query, status if status is not None else status_text, strip_ip_port(ip),
            agent, referer, _num(size), None)  # fmt: skip


def parse_common(line: str) -> tuple[Any, ...]:
    return parse_combined(line, "common")


def _seconds_sum(*texts: str) -> float | None:
    """ALB processing times (s, -1 when the request did not reach a target) -> total ms."""
    total = 0.0
    for text in texts:
        value = float(text)
        if value < 0:
            return None
        total += value
    return round(total * 1000, 3)


def _text(quoted: str | None) -> str | None:
    if quoted is None:
        return None
    return _missing(unescape(quoted) if "\\" in quoted else quoted)


def parse_alb(line: str) -> tuple[Any, ...]:
    """AWS ALB access log (space-separated, positional)."""
    match = _ALB.match(line)
    if match is None or match[2][4:5] != "-":
        raise _fail("alb", line, "an AWS ALB access log line")
    parts = match.groups()  # parts[i]: the ALB field at position i (0 = type)
    try:
        epoch = parse_iso(parts[1])
        duration = _seconds_sum(parts[5], parts[6], parts[7])
    except ValueError as exc:
        raise _fail("alb", line, "an AWS ALB access log line") from exc
    method, path, query, host = _request(parts[12])
    if host and host.endswith((":443", ":80")):
        host = host.rpartition(":")[0]
    if not host:
        host = _text(parts[18])  # domain_name: the TLS SNI
    status = _num(parts[8])
    client = parts[3].rpartition(":")[0].strip("[]") if ":" in parts[3] else parts[3]  # always ip:port
    return (epoch, method, host, path, query, status if status is not None else parts[8],
            _missing(client), _text(parts[13]), None, _num(parts[11]), duration)  # fmt: skip


def parse_envoy(line: str) -> tuple[Any, ...]:
    """Envoy's default text format, and Istio's (three more columns after the flags)."""
    match = _ENVOY.match(line)
    if match is None:
        raise _fail("envoy", line, "an Envoy or Istio default-format access log line")
    when, request, code, _flags, _details, _end, _failure, _rx, sent, took, _up, forwarded, agent, _id, authority = (
        match.groups()
    )
    try:
        epoch = parse_iso(when)
    except ValueError as exc:
        raise _fail("envoy", line, "an Envoy access log line (bad [START_TIME])") from exc
    method, path, query, _ = _request(unescape(request) if "\\" in request else request)
    forwarded = _missing(forwarded)
    ip = strip_ip_port(forwarded.partition(",")[0].strip()) if forwarded else None
    status = _num(code)
    return (epoch, method, _text(authority), path, query, status if status is not None else code, ip,
            _text(agent), None, _num(sent), _num(took))  # fmt: skip


_ALL = frozenset(LINE_OUTPUTS)
for _name, _func, _fills, _doc in (
    ("combined", parse_combined, _ALL - {"host", "duration_ms"},
     "nginx/Apache combined line -> every field but host and duration"),
    ("common", parse_common, _ALL - {"host", "duration_ms", "user_agent", "referer"},
     "Common Log Format line -> timestamp, method, path, query_params, status_code, ip, bytes_sent"),
    ("alb", parse_alb, _ALL - {"referer"}, "AWS ALB access log line -> every field but referer"),
    ("envoy", parse_envoy, _ALL - {"referer"}, "Envoy default text access log line -> every field but referer"),
):  # fmt: skip
    register(Parser(_name, LINE_OUTPUTS, _func, _doc, _fills))
LINE_PARSERS = ("combined", "common", "alb", "envoy")

"""The mapping language end to end: a `[mappings.NAME]` table in, entries / rejections / repairs out."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import pytest

from relay.errors import ConfigError
from relay.mapping import MappingLibrary
from relay.models import MapResult, RecordContext
from relay.stages.schema import Entry, ValidationPolicy, Validator
from relay.stages.values import to_int

NOW = 1795599000.0  # 2026-11-25T09:30:00Z
BASE = {"timestamp": "ts", "method": "m", "path": "p", "status_code": "s", "ip": "ip", "user_agent": "ua", "host": "h"}
RECORD = {"ts": 1795593600, "m": "GET", "p": "/x", "s": "200", "ip": "192.0.2.1", "ua": "curl/8", "h": "a.example"}


def mapper(table: dict[str, Any], name: str = "t", **others: dict[str, Any]) -> Any:
    return MappingLibrary({name: table, **others}, file="relay.toml").get(name)


def run(table: dict[str, Any], records: list[Any], **ctx: Any) -> MapResult:
    ctx.setdefault("source", "s")
    return mapper(table).map_records(records, RecordContext(**ctx), Validator(ValidationPolicy(now=NOW)))


def one(table: dict[str, Any], record: Any, **ctx: Any) -> dict[str, Any]:
    result = run(table, [record], **ctx)
    assert not result.rejections, [r.render() for r in result.rejections]
    return msgspec.to_builtins(result.entries[0])


def test_the_spec_example_mapping() -> None:
    table = {
        "timestamp": {"from": "ts", "format": "unix_ms"},
        "method": "req.method",
        "host": ["req.host", "server_name"],
        "path": {"from": "req.url", "parse": "url"},
        "status_code": "res.status",
        "ip": {"from": "xff", "parse": "first_ip"},
        "user_agent": "req.headers.user-agent",
        "duration_ms": {"from": "took", "scale": 1000},
    }
    record = {"ts": 1795593600250, "req": {"method": "GET", "host": "-", "url": "/a?b=1&c",
                                           "headers": {"user-agent": "ua"}},
              "server_name": "www.example.com", "res": {"status": 201}, "xff": "203.0.113.9, 10.0.0.1",
              "took": 0.0421}  # fmt: skip
    assert one(table, record) == {
        "timestamp": "2026-11-25T08:00:00.250Z", "method": "GET", "host": "www.example.com", "path": "/a",
        "status_code": 201, "ip": "203.0.113.9", "user_agent": "ua", "query_params": {"b": "1", "c": ""},
        "duration_ms": 42.1,
    }  # fmt: skip


# -- config errors name mappings.NAME.FIELD ------------------------------------------------------


@pytest.mark.parametrize(
    "over, key, words",
    [
        ({"path": {"from": "p", "parse": "yaml"}}, "mappings.t.path", "unknown parser 'yaml'"),
        ({"colour": "c"}, "mappings.t.colour", "unknown target field"),
        ({"path": {"from": "p", "pares": "url"}}, "mappings.t.path", "unknown option 'pares'"),
        ({"status_code": False}, "mappings.t.status_code", "required field 'status_code' has no source"),
        ({"ip": {"from": "ip", "parse": "url"}}, "mappings.t.ip", "parser 'url' fills path, query_params, host"),
        ({"path": {"from": "p", "format": "clf"}}, "mappings.t.path", "format applies to timestamp only"),
        ({"timestamp": {"from": "ts", "format": "epoch"}}, "mappings.t.timestamp", "unknown timestamp format"),
        ({"duration_ms": {"from": "d", "unit": "fortnight"}}, "mappings.t.duration_ms", "unknown unit"),
        ({"method": "a..b"}, "mappings.t.method", "bad source path"),
        ({"method": {"from": "m", "value": "GET"}}, "mappings.t.method", "not both"),
        ({"method": 3}, "mappings.t.method", "expected a source path"),
        ({"line": {"from": "log", "parse": "first_ip"}}, "mappings.t.line", "unknown line parser"),
        ({"drop_if": [{"field": "path", "startswith": "/x"}]}, "mappings.t.drop_if", "drop_if[0]: unknown test"),
        ({"extends": "no-such-preset"}, "mappings.t.extends", "extends unknown mapping"),
    ],
)
def test_config_errors_name_the_mapping_field(over: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        mapper({**BASE, **over})
    assert caught.value.key == key and caught.value.file == "relay.toml"
    assert words in caught.value.message


def test_unknown_mapping_names_the_source_key() -> None:
    with pytest.raises(ConfigError) as caught:
        MappingLibrary({}, file="relay.toml").get("nginx-jsn", source="web")
    assert caught.value.key == "sources.web.mapping" and "nginx-json" in caught.value.message


def test_extends_loop_is_an_error() -> None:
    with pytest.raises(ConfigError, match="extends loops"):
        MappingLibrary({"a": {"extends": "b"}, "b": {"extends": "a"}}).get("a")


def test_mapper_is_compiled_once_and_cached() -> None:
    library = MappingLibrary({"t": BASE})
    assert library.get("t") is library.get("t")


# -- reading values ------------------------------------------------------------------------------


def test_fallbacks_skip_missing_empty_and_dash() -> None:
    table = {**BASE, "host": ["h1", "h2", "h3", "h4"]}
    assert one(table, {**RECORD, "h1": None, "h2": "", "h3": "-", "h4": "d.example"})["host"] == "d.example"


def test_paths_quoted_bracketed_arrays_and_flattened_keys() -> None:
    table = {
        **BASE,
        "method": 'attributes."http.request.method"',
        "user_agent": 'request.headers["User-Agent"]',
        "referer": "request.headers.Referer[1]",
        "host": "url.domain",
    }
    record = {**RECORD, "attributes": {"http.request.method": "PUT"}, "url.domain": "flat.example",
              "request": {"headers": {"User-Agent": ["first", "second"], "Referer": ["r0", "r1"]}}}  # fmt: skip
    entry = one(table, record)
    assert (entry["method"], entry["user_agent"], entry["referer"], entry["host"]) == ("PUT", "first", "r1", "flat.example")


def test_tag_headers_and_msgpack_event_time() -> None:
    table = {**BASE, "host": "$header.host", "referer": "$tag", "timestamp": ["$time", "ts"]}
    event = [[{"EventTime": [1795593601, 0]}, {}], RECORD]
    ctx = {"tag": "nginx.access", "headers": {"Host": "relay.internal:8080"}}
    entry = one(table, event, **ctx)
    assert (entry["host"], entry["referer"], entry["timestamp"]) == ("relay.internal:8080", "nginx.access", "2026-11-25T08:00:01Z")


def test_constants_defaults_and_the_source_host() -> None:
    table = {**BASE, "host": {"from": "h", "default": "fallback.example"}, "method": {"value": "GET"}}
    assert one(table, {**RECORD, "m": "POST"})["method"] == "GET"
    assert one(table, {**RECORD, "h": "-"})["host"] == "fallback.example"
    assert one(table, {**RECORD, "h": "-"}, host="source.example")["host"] == "source.example"  # source beats default
    assert one({**BASE, "host": False}, RECORD, host="source.example")["host"] == "source.example"


def test_coercion_numeric_strings_and_types() -> None:
    table = {**BASE, "bytes_sent": "b", "duration_ms": "d", "referer": {"from": "r", "type": "str"}}
    entry = one(table, {**RECORD, "s": "404", "b": "1024", "d": "12.5", "r": 7})
    assert (entry["status_code"], entry["bytes_sent"], entry["duration_ms"], entry["referer"]) == (404, 1024, 12.5, "7")


@pytest.mark.parametrize(
    "rule, value, expected",
    [
        ({"unit": "s"}, 0.25, 250.0),
        ({"unit": "ms"}, 12, 12),
        ({"unit": "us"}, 1500, 1.5),
        ({"unit": "ns"}, 2345678, 2.345678),
        ({"scale": 1000}, "0.07099999999999999", 71.0),
    ],
)
def test_duration_units(rule: dict[str, Any], value: Any, expected: float) -> None:
    assert one({**BASE, "duration_ms": {"from": "d", **rule}}, {**RECORD, "d": value})["duration_ms"] == expected


def test_size_units() -> None:
    assert one({**BASE, "bytes_sent": {"from": "b", "unit": "KiB"}}, {**RECORD, "b": "2"})["bytes_sent"] == 2048


@pytest.mark.parametrize(
    "rule, value",
    [
        ({}, 1795593600.0),
        ({}, "1795593600000"),
        ({"format": "unix_ms"}, 1795593600000),
        ({"unit": "ns"}, 1795593600000000000),
        ({"format": "iso8601"}, "2026-11-25T03:00:00-05:00"),
        ({"format": "clf"}, "25/Nov/2026:09:00:00 +0100"),
        ({"format": "%d.%m.%Y %H:%M"}, "25.11.2026 08:00"),
        ({}, "Wed, 25 Nov 2026 08:00:00 GMT"),
        ({}, {"EventTime": [1795593600, 0]}),
    ],
)
def test_timestamp_formats(rule: dict[str, Any], value: Any) -> None:
    entry = one({**BASE, "timestamp": {"from": "ts", **rule}}, {**RECORD, "ts": value})
    assert entry["timestamp"] == "2026-11-25T08:00:00Z"


def test_timestamps_sharing_a_second_keep_their_fractions() -> None:
    records = [{**RECORD, "ts": 1795593600 + n / 10} for n in range(3)]
    assert [e.timestamp for e in run(BASE, records).entries] == [
        "2026-11-25T08:00:00Z", "2026-11-25T08:00:00.100Z", "2026-11-25T08:00:00.200Z",
    ]  # fmt: skip


# -- parsers ---------------------------------------------------------------------------------------


def test_request_line_fills_method_path_and_query() -> None:
    table = {**BASE, "method": {"from": "request", "parse": "request_line"}, "path": False}
    entry = one(table, {**RECORD, "request": "POST /api/v1?x=1&x=2 HTTP/1.1"})
    assert (entry["method"], entry["path"], entry["query_params"]) == ("POST", "/api/v1", {"x": "1,2"})


def test_absolute_url_fills_host_only_when_nothing_else_does() -> None:
    table = {**BASE, "path": {"from": "u", "parse": "url"}, "host": "h"}
    record = {**RECORD, "u": "https://user@shop.example:8443/p?q=1#frag", "h": None}
    assert one(table, record)["host"] == "shop.example:8443"
    assert one(table, {**record, "h": "named.example"})["host"] == "named.example"


def test_query_rule_wins_over_the_url_query() -> None:
    table = {**BASE, "path": {"from": "u", "parse": "url"}, "query_params": "args"}
    assert one(table, {**RECORD, "u": "/p?a=1", "args": "b=2"})["query_params"] == {"b": "2"}
    assert one(table, {**RECORD, "u": "/p?a=1"})["query_params"] == {"a": "1"}


def test_whole_line_parser_fills_what_has_no_rule() -> None:
    table = {"line": {"from": ["log", "message"], "parse": "combined"}, "host": {"value": "www.example.com"}}
    line = '::ffff:198.51.100.61 - alice [25/Nov/2026:09:02:51 +0100] "HEAD / HTTP/2.0" 301 0 "-" "Mozilla/5.0 \\"x\\""'
    assert one(table, {"message": line}) == {
        "timestamp": "2026-11-25T08:02:51Z", "method": "HEAD", "host": "www.example.com", "path": "/",
        "status_code": 301, "ip": "::ffff:198.51.100.61", "user_agent": 'Mozilla/5.0 "x"', "bytes_sent": 0,
    }  # fmt: skip


def test_unescape_option_decodes_nginx_escapes() -> None:
    table = {**BASE, "path": {"from": "p", "unescape": True}}
    assert one(table, {**RECORD, "p": "/wiki/na\\xC3\\xAFve"})["path"] == "/wiki/naïve"


# -- drop_if ---------------------------------------------------------------------------------------


def test_drop_if_counts_filtered_not_rejected() -> None:
    table = {
        **BASE,
        "drop_if": [
            {"field": "path", "in": ["/healthz", "/readyz"]},
            {"field": "ip", "cidr": ["10.0.0.0/8", "::1/128"]},
            {"field": "user_agent", "contains": "kube-probe"},
            {"from": "k8s.namespace", "equals": "kube-system"},
            {"field": "path", "prefix": "/static/", "matches": r"\.map$"},  # both tests must hold
            {"field": "method", "in": ["GET", "HEAD", "POST"], "not": True},
        ],
    }
    records = [
        {**RECORD, "p": "/healthz"}, {**RECORD, "ip": "10.1.2.3:5555"}, {**RECORD, "ua": "kube-probe/1.29"},
        {**RECORD, "k8s": {"namespace": "kube-system"}}, {**RECORD, "p": "/static/app.js.map"},
        {**RECORD, "m": "OPTIONS"}, {**RECORD, "p": "/static/app.js"}, {**RECORD, "p": "/app.js.map"}, RECORD,
        {**RECORD, "s": "abc"},
    ]  # fmt: skip
    result = run(table, records)
    assert result.filtered == 6 and [e.path for e in result.entries] == ["/static/app.js", "/app.js.map", "/x"]
    assert [r.index for r in result.rejections] == [9]


# -- extends ---------------------------------------------------------------------------------------


def test_extends_a_preset_and_overrides_single_fields() -> None:
    library = MappingLibrary({
        "mine": {"extends": "fluentbit-nginx", "host": "vhost", "duration_ms": {"from": "rt", "unit": "s"}},
        "fluentbit-nginx": {"extends": "fluentbit-nginx", "referer": False},  # shadows the preset
    })  # fmt: skip
    record = {"date": 1795593600.0, "remote": "192.0.2.1", "host": "-", "method": "GET", "path": "/", "code": "200",
              "size": "1", "referer": "https://r/", "agent": "ua", "vhost": "v.example", "rt": "0.5"}  # fmt: skip
    ctx, validator = RecordContext(source="s", host="src.example"), Validator(ValidationPolicy(now=NOW))
    mine = library.get("mine")
    [entry] = mine.map_records([record], ctx, validator).entries
    # "mine" extends the config's fluentbit-nginx, which shadows the preset and leaves referer out
    assert (entry.host, entry.duration_ms, entry.referer) == ("v.example", 500.0, msgspec.UNSET)
    assert not mine.needs_host and library.get("fluentbit-nginx").needs_host
    [shadowed] = library.get("fluentbit-nginx").map_records([record], ctx, validator).entries
    assert shadowed.referer is msgspec.UNSET and shadowed.host == "src.example"
    assert "extends fluentbit-nginx" in library.describe("mine")


@pytest.mark.parametrize("text", ["0", "7", "007", "200", "599", "999", "1000", "123456", "-1", " 404", "2_00",
                                  "200.0", "1e3", "\u0663\u0660\u0660", "abc"])
@pytest.mark.parametrize("field", ["status_code", "bytes_sent"])
def test_an_integer_field_reads_a_string_as_the_to_int_rule_says(field: str, text: str) -> None:
    """Status codes below 1,000 are looked up (codegen._STATUS_CODES), not parsed: the same values."""
    table = {**BASE, "bytes_sent": "b"} if field == "bytes_sent" else {**BASE, "status_code": "b"}
    result = run(table, [{**RECORD, "b": text}])
    expected = to_int(text)
    valid = isinstance(expected, int) and (100 <= expected <= 599 if field == "status_code" else expected >= 0)
    if valid:
        [entry] = result.entries
        assert getattr(entry, field) == expected and type(getattr(entry, field)) is int
    elif field == "bytes_sent":  # not a count of bytes: repaired away, as `check` always did
        [entry] = result.entries
        assert entry.bytes_sent is msgspec.UNSET and result.repairs == {"bytes_sent:dropped": 1}
    else:  # a required field out of range or not a number: the record is rejected, naming it
        [rejection] = result.rejections
        assert not result.entries and rejection.field == "status_code"


# -- robustness: nothing escapes map_records ---------------------------------------------------------


class Exploding(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_bad_records_become_rejections_with_their_index() -> None:
    table = {**BASE, "timestamp": {"from": "ts", "format": "%Y"}}
    records = [RECORD, "a string", [1, 2, 3], Exploding(), {**RECORD, "ts": "not a year"}, None]
    result = run(table, records)
    assert len(result.entries) == 1  # RECORD's ts is a number: read as Unix time whatever the pattern
    rendered = [r.render() for r in result.rejections]
    assert [r.index for r in result.rejections] == [1, 2, 3, 4, 5]
    assert "not a JSON object" in rendered[0] and "not a JSON object" in rendered[1] and "not a JSON" in rendered[4]
    assert rendered[2].startswith("$[3].") and "RuntimeError: boom" in rendered[2]
    assert rendered[3].startswith("$[4].timestamp: ") and 'format "%Y" cannot read "not a year"' in rendered[3]


def test_indexes_restore_positions_in_the_request() -> None:
    result = mapper(BASE).map_records(
        [RECORD, {**RECORD, "s": "x"}], RecordContext(source="s"), Validator(ValidationPolicy(now=NOW)), indexes=[3, 7]
    )
    assert [r.index for r in result.rejections] == [7] and len(result.entries) == 1


def test_repairs_are_counted_per_batch() -> None:
    result = run(BASE, [{**RECORD, "m": "get"}, {**RECORD, "m": "post", "ua": None}])
    assert result.repairs == {"method:uppercased": 2, "user_agent:filled_empty": 1}
    assert all(isinstance(e, Entry) for e in result.entries)


class Frozen(Mapping[str, Any]):
    """A record or sub-object that is a Mapping but not a dict (what some decoders hand over)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@pytest.mark.parametrize(
    "req",
    [
        {"req": {"info": {"method": "PATCH"}}},
        {"req": [{"info": {"method": "PATCH"}}, {"info": {"method": "GET"}}]},  # arrays: the first element
        {"req": Frozen({"info": Frozen({"method": "PATCH"})})},
        {"req.info.method": "PATCH"},  # flattened
        {"req": {"info.method": "PATCH"}},
    ],
)
def test_nested_paths_compiled_inline_agree_with_the_resolver(req: dict[str, Any]) -> None:
    for method in ("req.info.method", '"req"."info"."method"'):
        table = {**BASE, "method": method}
        flattened = "req.info.method" in req or "info.method" in req.get("req", {})
        if flattened and method.startswith('"'):
            assert run(table, [{**RECORD, **req}]).rejections[0].field == "method"  # quoted: exact keys only
        else:
            assert one(table, {**RECORD, **req})["method"] == "PATCH"


def test_extending_mapping_can_drop_the_line_parser() -> None:
    library = MappingLibrary({"json-envoy": {"extends": "envoy", "line": False}})
    assert library.get("json-envoy").spec.line is None and library.get("envoy").spec.line is not None


def test_line_fields_by_name_and_unless() -> None:
    table = {
        "line": {"from": "message", "parse": "combined", "unless": ["status"]},
        "timestamp": ["$line.timestamp", "ts"], "method": "m", "path": "p", "status_code": "status", "ip": "ip",
        "user_agent": "ua", "host": {"value": "h.example"},
    }  # fmt: skip
    line = '192.0.2.9 - - [25/Nov/2026:09:00:05 +0100] "POST /l HTTP/1.1" 201 3 "-" "line-ua"'
    from_line = one(table, {"message": line, "ts": 1795593600})
    assert (from_line["timestamp"], from_line["method"], from_line["ip"]) == ("2026-11-25T08:00:05Z", "POST", "192.0.2.9")
    parsed = one(table, {**RECORD, "status": 200, "message": line})  # has `status`: the line is not read
    assert (parsed["timestamp"], parsed["method"], parsed["ip"]) == ("2026-11-25T08:00:00Z", "GET", "192.0.2.1")


@pytest.mark.parametrize(
    "table, words",
    [({**BASE, "timestamp": "$line.timestamp"}, "has no `line` parser"),
     ({**BASE, "line": {"from": "log", "parse": "combined"}, "timestamp": "$line.when"}, "a line fills target fields"),
     ({**BASE, "line": {"from": "log", "parse": "combined", "if": "x"}}, "unknown option 'if'")],
)  # fmt: skip
def test_line_errors(table: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        mapper(table)

"""Every preset on realistic records of its format; the Fluent Bit ones on the captured fixtures."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from relay.mapping import MappingLibrary
from relay.models import MapResult, RecordContext
from relay.stages.schema import Entry, ValidationPolicy, Validator
from tests.support import FIXTURES, REPO_ROOT

FLUENT_BIT = FIXTURES / "fluent-bit"
NOW = 1795599000.0  # 2026-11-25T09:30:00Z: the fixtures are dated 2026-11-25
LIBRARY = MappingLibrary({})
COMBINED_CASES = sorted(p.name for p in FLUENT_BIT.glob("nginx-combined.*"))
JSON_CASES = sorted(p.name for p in FLUENT_BIT.glob("nginx-json.*"))
RAW_CASES = sorted(p.name for p in FLUENT_BIT.glob("raw-line.*"))


def records(case: str) -> list[Any]:
    with open(FLUENT_BIT / case / "records.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def run(preset: str, recs: list[Any], host: str | None = None, **ctx: Any) -> MapResult:
    validator = Validator(ValidationPolicy(now=NOW))
    return LIBRARY.get(preset).map_records(recs, RecordContext(source="test", host=host, **ctx), validator)


def only(preset: str, record: dict[str, Any], host: str | None = None, **ctx: Any) -> Entry:
    result = run(preset, [record], host, **ctx)
    assert not result.rejections, [r.render() for r in result.rejections]
    assert len(result.entries) == 1
    return result.entries[0]


def plain(entry: Entry) -> dict[str, Any]:
    return msgspec.to_builtins(entry)


def test_every_documented_preset_is_shipped_and_compiles() -> None:
    expected = {
        "profound", "nginx-json", "nginx-combined", "fluentbit-nginx", "fluentbit-apache2", "vector-nginx",
        "vector-apache", "caddy", "traefik", "envoy", "istio", "aws-alb", "cloudflare", "ecs", "otel",
        "fluentbit-gelf",
    }  # fmt: skip
    assert expected <= set(LIBRARY.names())
    for name in LIBRARY.names():
        assert LIBRARY.describe(name).startswith(f"preset {name}")


def test_presets_are_visible_at_configs_mappings() -> None:
    shipped = REPO_ROOT / "configs" / "mappings"
    assert (shipped / "fluentbit-nginx.toml").is_file()


# -- profound (passthrough) -----------------------------------------------------------------


def test_profound_passes_upstream_entries_through_validated() -> None:
    record = {
        "timestamp": "2026-11-25T09:00:00+01:00", "method": "get", "host": "www.example.com",
        "path": "/a", "query_params": {"q": "x"}, "status_code": 200, "ip": "203.0.113.10:5555",
        "user_agent": "curl/8", "referer": "https://claude.ai/", "bytes_sent": 12, "duration_ms": 1.5,
    }  # fmt: skip
    result = run("profound", [record, {**record, "timestamp": 1795593600}, {**record, "status_code": "abc"}])
    assert [plain(e) for e in result.entries] == [
        {**record, "timestamp": "2026-11-25T08:00:00Z", "method": "GET", "ip": "203.0.113.10"}
    ] * 2
    assert [r.render() for r in result.rejections] == ['$[2].status_code: must be an integer 100..599, got "abc"']
    assert result.repairs == {"method:uppercased": 2, "ip:port_stripped": 2}


# -- fluentbit-nginx ------------------------------------------------------------------------


@pytest.mark.parametrize("case", COMBINED_CASES)
def test_fluentbit_nginx_maps_every_captured_record(case: str) -> None:
    result = run("fluentbit-nginx", records(case), host="www.example.com")
    assert not result.rejections, [r.render() for r in result.rejections[:5]]
    assert len(result.entries) == 200 and result.repairs == {}
    first = plain(result.entries[0])
    assert first == {
        "timestamp": "2026-11-25T08:00:00Z", "method": "GET", "host": "www.example.com",
        "path": "/blog/2026/11/shipping-logs-fast", "status_code": 200, "ip": "2001:db8:1f70::3:beef",
        "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.6778.81 Mobile Safari/537.36",
        "bytes_sent": 28303,
    }  # fmt: skip
    assert result.entries[2].query_params == {"q": "café crème", "lang": "fr"}  # percent-decoded
    assert result.entries[11].path == "/blog/café-crème"
    assert result.entries[11].query_params == {"tag": "été,noël"}  # repeated keys joined
    assert result.entries[23].path == "/wiki/naïve_bayes"  # Fluent Bit keeps nginx's \xHH escapes: undone
    assert "\\x22" not in result.entries[23].user_agent and '"Quoted"' in result.entries[23].user_agent
    assert result.entries[7].user_agent == "Mozilla/5.0 (compatible; \\"  # cut short by the parser: kept as is
    assert all(e.referer != "-" for e in result.entries)
    assert result.entries[2].referer == "https://claude.ai/"


def test_fluentbit_nginx_timestamps_agree_across_date_formats() -> None:
    stamps = {case: [e.timestamp for e in run("fluentbit-nginx", records(case), "h").entries] for case in COMBINED_CASES}
    reference = stamps["nginx-combined.json"]
    assert reference[-1] == "2026-11-25T08:19:06Z"
    assert all(found == reference for found in stamps.values())


def test_fluentbit_nginx_without_source_host_rejects_saying_to_set_it() -> None:
    result = run("fluentbit-nginx", records("nginx-combined.json")[:3])
    assert not result.entries and len(result.rejections) == 3
    assert all(r.field == "host" and "set `host` on the source" in r.message for r in result.rejections)
    assert LIBRARY.get("fluentbit-nginx").needs_host


@pytest.mark.parametrize("case", ["nginx-combined.msgpack.gzip", "nginx-combined.json_stream.gzip"])
def test_fluentbit_nginx_on_the_decoded_capture(case: str) -> None:
    decode = pytest.importorskip("relay.stages.decode")
    request = json.loads((FLUENT_BIT / case / "request.json").read_text())
    headers = {name.lower(): value for name, value in request["headers"]}
    decoded = decode.decode_body(
        (FLUENT_BIT / case / "body.bin").read_bytes(), content_type=headers.get("content-type"),
        content_encoding=headers.get("content-encoding"), max_size=1 << 24,
    )  # fmt: skip
    result = run("fluentbit-nginx", decoded.records, host="www.example.com")
    assert len(result.entries) == 200 and not result.rejections


def test_fluentbit_nginx_reads_msgpack_events_and_date_formats() -> None:
    base = {"remote": "192.0.2.1", "host": "-", "user": "-", "method": "GET", "path": "/x?a=1", "code": "200",
            "size": "10", "referer": "-", "agent": "ua"}  # fmt: skip
    event = [[{"EventTime": [1795593600, 500000000]}, {}], base]
    assert only("fluentbit-nginx", event, "h").timestamp == "2026-11-25T08:00:00.500Z"  # type: ignore[arg-type]
    for date in (1795593600, 1795593600000, "2026-11-25 08:00:00.000000", "2026-11-25T08:00:00.000000Z"):
        assert only("fluentbit-nginx", {"date": date, **base}, "h").timestamp == "2026-11-25T08:00:00Z"
    kept_time = only("fluentbit-nginx", {"time": "25/Nov/2026:09:00:00 +0100", **base}, "h")
    assert kept_time.timestamp == "2026-11-25T08:00:00Z" and kept_time.query_params == {"a": "1"}


# -- nginx-json and nginx-combined on the same traffic ---------------------------------------


@pytest.mark.parametrize("case", JSON_CASES)
def test_nginx_json_maps_every_captured_record(case: str) -> None:
    result = run("nginx-json", records(case))
    assert not result.rejections, [r.render() for r in result.rejections[:5]]
    assert len(result.entries) == 200 and result.repairs == {}
    first = plain(result.entries[0])
    assert first["timestamp"] == "2026-11-25T08:00:00Z" and first["host"] == "www.example.com"
    assert first["duration_ms"] == 25.0 and "referer" not in first  # "" is missing
    assert {e.host for e in result.entries} == {"www.example.com", "shop.example.com", "example.com"}
    assert result.entries[7].user_agent == 'Mozilla/5.0 (compatible; "Fancy" Crawler/0.9; +https://crawler.example/about)'
    durations = {e.duration_ms for e in result.entries}
    assert 71.0 in durations  # 0.07099999999999999 s arrives; 71.0 ms leaves


@pytest.mark.parametrize("case", RAW_CASES)
def test_nginx_combined_reads_raw_lines_like_the_json_log(case: str) -> None:
    result = run("nginx-combined", records(case), host="www.example.com")
    assert not result.rejections, [r.render() for r in result.rejections[:5]]
    assert len(result.entries) == 200 and {e.host for e in result.entries} == {"www.example.com"}
    reference = run("nginx-json", records("nginx-json.json")).entries
    strip = lambda e: {k: v for k, v in plain(e).items() if k not in ("host", "duration_ms")}
    assert [strip(e) for e in result.entries] == [strip(e) for e in reference]  # escapes decoded, [time] used
    assert result.entries[23].path == "/wiki/naïve_bayes"


def test_nginx_combined_reads_vector_message_and_names_a_bad_line() -> None:
    line = '203.0.113.10 - - [25/Nov/2026:09:00:08 +0100] "GET /a?x=1 HTTP/1.1" 200 5 "-" "curl/8"'
    event = {"message": line, "timestamp": "2026-11-26T00:00:00Z", "host": "vector-node-1", "source_type": "file"}
    entry = only("nginx-combined", event, "www.example.com")
    assert (entry.timestamp, entry.host, entry.query_params) == ("2026-11-25T08:00:08Z", "www.example.com", {"x": "1"})
    result = run("nginx-combined", [{"log": "GET /health 200"}], "h")
    [bad] = result.rejections
    assert bad.field == "line" and 'parse "combined"' in bad.message


# -- the other Fluent Bit and Vector parsers, fed the same traffic ---------------------------

APACHE2 = re.compile(  # Fluent Bit's conf/parsers.conf `apache2`
    r'^(?P<host>[^ ]*) [^ ]* (?P<user>[^ ]*) \[(?P<time>[^\]]*)\] "(?P<method>\S+)(?: +(?P<path>[^ ]*) +\S*)?" '
    r'(?P<code>[^ ]*) (?P<size>[^ ]*)(?: "(?P<referer>[^\"]*)" "(?P<agent>.*)")?$'
)


def source_lines() -> list[str]:
    return (FLUENT_BIT / "nginx-combined.json" / "source.log").read_text(encoding="utf-8").splitlines()


def clf_to_rfc3339(text: str) -> str:
    moment = datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_fluentbit_apache2_reads_the_client_ip_from_host() -> None:
    recs = []
    for line in source_lines():
        fields = APACHE2.match(line).groupdict()  # type: ignore[union-attr]
        date = datetime.strptime(fields.pop("time"), "%d/%b/%Y:%H:%M:%S %z").timestamp()  # Fluent Bit's float
        recs.append({"date": date, **fields})
    result = run("fluentbit-apache2", recs, host="www.example.com")
    assert not result.rejections and len(result.entries) == 200
    assert result.entries[0].ip == "2001:db8:1f70::3:beef" and result.entries[0].host == "www.example.com"
    assert result.entries[2].query_params == {"q": "café crème", "lang": "fr"}


def test_vector_presets_read_parse_nginx_log_and_parse_apache_log_events() -> None:
    nginx, apache = [], []
    for line in source_lines():
        f = APACHE2.match(line).groupdict()  # type: ignore[union-attr]
        common = {"timestamp": clf_to_rfc3339(f["time"]), "status": int(f["code"]), "size": int(f["size"]),
                  "agent": f["agent"], "user": f["user"], "message": line, "host": "vector-1"}  # fmt: skip
        nginx.append({**common, "client": f["host"], "request": f"{f['method']} {f['path']} HTTP/1.1",
                      **({"referer": f["referer"]} if f["referer"] != "-" else {})})  # fmt: skip
        apache.append({**common, "host": f["host"], "method": f["method"], "path": f["path"], "protocol": "HTTP/1.1",
                       **({"referrer": f["referer"]} if f["referer"] != "-" else {})})  # fmt: skip
    for preset, recs in (("vector-nginx", nginx), ("vector-apache", apache)):
        result = run(preset, recs, host="www.example.com")
        assert not result.rejections and len(result.entries) == 200, preset
        e = result.entries[2]
        assert (e.host, e.path, e.query_params, e.referer, e.method) == (
            "www.example.com", "/search", {"q": "café crème", "lang": "fr"}, "https://claude.ai/", "GET",
        ), preset  # fmt: skip
    main = {"remote_addr": "192.0.2.1", "timestamp": "2026-11-25T08:00:00Z", "request": "POST /api HTTP/2.0",
            "status": 201, "body_bytes_size": 7, "http_user_agent": "ua", "request_time": 0.012}  # fmt: skip
    entry = only("vector-nginx", main, "h")
    assert (entry.ip, entry.method, entry.bytes_sent, entry.duration_ms) == ("192.0.2.1", "POST", 7, 12.0)


# -- JSON access logs of proxies and CDNs ------------------------------------------------------


def test_caddy() -> None:
    record = {
        "level": "info", "ts": 1795593600.123456, "logger": "http.log.access.log0", "msg": "handled request",
        "request": {"remote_ip": "10.0.0.5", "remote_port": "51234", "client_ip": "203.0.113.10", "proto": "HTTP/2.0",
                    "method": "GET", "host": "www.example.com", "uri": "/search?q=caddy&page=2",
                    "headers": {"User-Agent": ["Mozilla/5.0 (X11)"], "Referer": ["https://chatgpt.com/"],
                                "Accept": ["*/*"]}},
        "bytes_read": 0, "user_id": "", "duration": 0.001234567, "size": 5120, "status": 200,
        "resp_headers": {"Content-Type": ["text/html"]},
    }  # fmt: skip
    assert plain(only("caddy", record)) == {
        "timestamp": "2026-11-25T08:00:00.123456Z", "method": "GET", "host": "www.example.com", "path": "/search",
        "status_code": 200, "ip": "203.0.113.10", "user_agent": "Mozilla/5.0 (X11)",
        "query_params": {"q": "caddy", "page": "2"}, "referer": "https://chatgpt.com/", "bytes_sent": 5120,
        "duration_ms": 1.234567,
    }  # fmt: skip


def test_traefik() -> None:
    record = {
        "ClientAddr": "203.0.113.10:54321", "ClientHost": "203.0.113.10", "ClientPort": "54321",
        "DownstreamContentSize": 1234, "DownstreamStatus": 404, "Duration": 2345678, "OriginStatus": 404,
        "RequestAddr": "shop.example.com:8443", "RequestHost": "shop.example.com", "RequestMethod": "get",
        "RequestPath": "/cart?id=7&id=8", "RequestProtocol": "HTTP/1.1", "StartUTC": "2026-11-25T08:00:00.5678912Z",
        "request_User-Agent": "ClaudeBot/1.0", "request_Referer": "https://claude.ai/", "level": "info",
        "msg": "", "time": "2026-11-25T09:00:00+01:00",
    }  # fmt: skip
    result = run("traefik", [record])
    entry = result.entries[0]
    assert plain(entry) == {
        "timestamp": "2026-11-25T08:00:00.567891Z", "method": "GET", "host": "shop.example.com", "path": "/cart",
        "status_code": 404, "ip": "203.0.113.10", "user_agent": "ClaudeBot/1.0", "query_params": {"id": "7,8"},
        "referer": "https://claude.ai/", "bytes_sent": 1234, "duration_ms": 2.345678,
    }  # fmt: skip
    assert result.repairs == {"method:uppercased": 1}


ENVOY_JSON = {
    "start_time": "2026-11-25T08:00:00.310Z", "method": "POST", "path": "/api/v1/cart?session=abc",
    "protocol": "HTTP/1.1", "response_code": 503, "response_flags": "UF", "bytes_received": 120, "bytes_sent": 91,
    "duration": 57, "upstream_service_time": None, "x_forwarded_for": "198.51.100.9, 10.0.0.1",
    "user_agent": "curl/8.5.0", "request_id": "4b2f", "authority": "api.example.com",
    "upstream_host": "10.1.2.3:8080", "downstream_remote_address": "10.0.0.1:40000",
}  # fmt: skip
ENVOY_ENTRY = {
    "timestamp": "2026-11-25T08:00:00.310Z", "method": "POST", "host": "api.example.com", "path": "/api/v1/cart",
    "status_code": 503, "ip": "198.51.100.9", "user_agent": "curl/8.5.0", "query_params": {"session": "abc"},
    "bytes_sent": 91, "duration_ms": 57,
}  # fmt: skip


@pytest.mark.parametrize("preset", ["envoy", "istio"])
def test_envoy_and_istio_json(preset: str) -> None:
    assert plain(only(preset, ENVOY_JSON)) == ENVOY_ENTRY
    no_xff = {**ENVOY_JSON, "x_forwarded_for": None}
    assert only(preset, no_xff).ip == "10.0.0.1"


@pytest.mark.parametrize(
    "line",
    [
        # Envoy's default format
        '[2026-11-25T08:00:00.310Z] "POST /api/v1/cart?session=abc HTTP/1.1" 503 UF 120 91 57 - '
        '"198.51.100.9, 10.0.0.1" "curl/8.5.0" "4b2f" "api.example.com" "10.1.2.3:8080"',
        # Istio's default text format
        '[2026-11-25T08:00:00.310Z] "POST /api/v1/cart?session=abc HTTP/1.1" 503 UF upstream_reset_before_response_started{connection_failure} - '
        '"-" 120 91 57 - "198.51.100.9, 10.0.0.1" "curl/8.5.0" "4b2f" "api.example.com" "10.1.2.3:8080" '
        "outbound|8080||api.default.svc.cluster.local - 10.0.0.9:8080 10.0.0.1:40000 - default",
    ],
)
@pytest.mark.parametrize("preset", ["envoy", "istio"])
def test_envoy_and_istio_text_lines(preset: str, line: str) -> None:
    assert plain(only(preset, {"message": line, "timestamp": "2026-11-25T09:00:00Z"})) == ENVOY_ENTRY


def test_aws_alb() -> None:
    lines = [
        'https 2026-11-25T08:00:00.123456Z app/my-lb/50dc6c495c0c9188 203.0.113.10:2817 10.0.0.1:80 0.000 0.001 0.000 '
        '200 200 34 366 "GET https://www.example.com:443/products?tag=red&tag=blue HTTP/1.1" "Mozilla/5.0 (GPTBot)" '
        "ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 "
        '"Root=1-58337262-36d228ad5d99923122bbe354" "www.example.com" "arn:aws:acm:us-east-2:123456789012:certificate/12345678" '
        '0 2026-11-25T07:59:59.999000Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-" TID_1234',
        'http 2026-11-25T08:00:01.000000Z app/my-lb/50dc6c495c0c9188 198.51.100.7:5555 - -1 -1 -1 '
        '460 - 34 0 "POST http://shop.example.com:80/cart HTTP/1.1" "curl/8" - - - "-" "-" "-" 0 '
        '2026-11-25T08:00:00.900000Z "-" "-" "-" "-" "-" "-" "-"',
    ]
    result = run("aws-alb", [{"message": lines[0]}, {"log": lines[1]}])
    assert not result.rejections, [r.render() for r in result.rejections]
    first, second = (plain(e) for e in result.entries)
    assert first == {
        "timestamp": "2026-11-25T08:00:00.123456Z", "method": "GET", "host": "www.example.com", "path": "/products",
        "status_code": 200, "ip": "203.0.113.10", "user_agent": "Mozilla/5.0 (GPTBot)",
        "query_params": {"tag": "red,blue"}, "bytes_sent": 366, "duration_ms": 1.0,
    }  # fmt: skip
    assert second["host"] == "shop.example.com" and second["status_code"] == 460 and "duration_ms" not in second


def test_cloudflare() -> None:
    record = {
        "ClientIP": "2001:db8::7", "ClientRequestHost": "www.example.com", "ClientRequestMethod": "GET",
        "ClientRequestURI": "/blog?utm_source=perplexity", "ClientRequestPath": "/blog",
        "ClientRequestReferer": "https://www.perplexity.ai/", "ClientRequestUserAgent": "PerplexityBot/1.0",
        "EdgeStartTimestamp": 1795593600123456789, "EdgeEndTimestamp": 1795593600223456789,
        "EdgeResponseBytes": 4096, "EdgeResponseStatus": 200, "EdgeTimeToFirstByteMs": 42, "RayID": "8a1b",
    }  # fmt: skip
    assert plain(only("cloudflare", record)) == {
        "timestamp": "2026-11-25T08:00:00.123457Z", "method": "GET", "host": "www.example.com", "path": "/blog",
        "status_code": 200, "ip": "2001:db8::7", "user_agent": "PerplexityBot/1.0",
        "query_params": {"utm_source": "perplexity"}, "referer": "https://www.perplexity.ai/", "bytes_sent": 4096,
        "duration_ms": 42,
    }  # fmt: skip
    rfc = {**record, "EdgeStartTimestamp": "2026-11-25T08:00:00Z"}
    assert only("cloudflare", rfc).timestamp == "2026-11-25T08:00:00Z"


ECS_ENTRY = {
    "timestamp": "2026-11-25T08:00:00.250Z", "method": "GET", "host": "www.example.com", "path": "/docs",
    "status_code": 200, "ip": "203.0.113.10", "user_agent": "Googlebot/2.1", "query_params": {"v": "2"},
    "referer": "https://www.google.com/", "bytes_sent": 2048, "duration_ms": 12.5,
}  # fmt: skip


def test_ecs_nested_and_dotted() -> None:
    nested = {
        "@timestamp": "2026-11-25T08:00:00.250Z",
        "http": {"request": {"method": "GET", "referrer": "https://www.google.com/"},
                 "response": {"status_code": 200, "body": {"bytes": 2048}}, "version": "1.1"},
        "url": {"domain": "www.example.com", "path": "/docs", "query": "v=2", "original": "/docs?v=2"},
        "client": {"ip": "203.0.113.10"}, "user_agent": {"original": "Googlebot/2.1"},
        "event": {"duration": 12500000, "dataset": "nginx.access"},
    }  # fmt: skip
    dotted = {
        "@timestamp": "2026-11-25T08:00:00.250Z", "http.request.method": "GET",
        "http.request.referrer": "https://www.google.com/", "http.response.status_code": 200,
        "http.response.body.bytes": 2048, "url.domain": "www.example.com", "url.original": "/docs?v=2",
        "source.ip": "203.0.113.10", "user_agent.original": "Googlebot/2.1", "event.duration": 12500000,
        "http": {"version": "1.1"},
    }  # fmt: skip
    assert plain(only("ecs", nested)) == ECS_ENTRY
    assert plain(only("ecs", dotted)) == ECS_ENTRY


def test_otel_attributes_and_top_level_keys() -> None:
    attributes = {
        "http.request.method": "GET", "server.address": "www.example.com", "url.path": "/docs",
        "url.query": "v=2", "http.response.status_code": 200, "client.address": "203.0.113.10",
        "user_agent.original": "Googlebot/2.1", "http.request.header.referer": ["https://www.google.com/"],
        "http.response.body.size": 2048, "http.server.request.duration": 0.0125,
    }  # fmt: skip
    vector_event = {"attributes": attributes, "resources": {"service.name": "web"}, "message": "",
                    "timestamp": "2026-11-25T08:00:00.250Z", "observed_timestamp": "2026-11-25T08:00:01Z"}  # fmt: skip
    flat = {"timeUnixNano": "1795593600250000000", **attributes}
    assert plain(only("otel", vector_event)) == ECS_ENTRY
    assert plain(only("otel", flat)) == ECS_ENTRY
    other = {**vector_event, "attributes": {**attributes, "http.request.method": "_OTHER",
                                            "http.request.method_original": "PURGE"}}  # fmt: skip
    assert only("otel", other).method == "PURGE"


def test_vector_presets_read_what_vrl_could_not_parse_and_undo_escapes() -> None:
    line = ('203.0.113.66 - - [25/Nov/2026:09:00:19 +0100] "GET /wiki/na\\xC3\\xAFve?q=1 HTTP/2.0" 200 18234 "-" '
            '"Mozilla/5.0 (compatible; \\"Fancy\\" Crawler/0.9)"')  # fmt: skip
    unparsed = {"file": "/var/log/nginx/access.log", "host": "web-1", "message": line, "source_type": "file",
                "timestamp": "2026-11-25T08:19:07.007000959Z"}  # Vector's read time, not the request's  # fmt: skip
    for preset in ("vector-nginx", "vector-apache"):
        entry = only(preset, unparsed, "www.example.com")
        assert (entry.timestamp, entry.path, entry.query_params, entry.ip) == (
            "2026-11-25T08:00:19Z", "/wiki/naïve", {"q": "1"}, "203.0.113.66"), preset  # fmt: skip
        assert entry.user_agent == 'Mozilla/5.0 (compatible; "Fancy" Crawler/0.9)'
    parsed = {"agent": "A \\x22q\\x22", "client": "192.0.2.14", "host": "web-1", "referer": "-", "message": "garbage",
              "request": "GET /wiki/na\\xC3\\xAFve_bayes HTTP/1.1", "size": 555, "status": 404,
              "timestamp": "2026-11-25T08:02:07Z"}  # fmt: skip
    entry = only("vector-nginx", parsed, "www.example.com")  # `request` is there: the line is left alone
    assert (entry.path, entry.user_agent, entry.timestamp) == ("/wiki/naïve_bayes", 'A "q"', "2026-11-25T08:02:07Z")


# -- a virtual host the record carries wins over the source's `host` (issue 13 #4) -------------

NGINX_RECORD = {"remote": "192.0.2.1", "user": "-", "method": "GET", "path": "/x", "code": "200",
                "size": "10", "referer": "-", "agent": "ua", "date": 1795593600}  # fmt: skip


@pytest.mark.parametrize(("carried", "expected"), [
    ("shop.example.com", "shop.example.com"),       # `$host` in the second column of the log format
    ("shop.example.com:8443", "shop.example.com"),  # the port is not part of the host
    ("-", "fallback.example"), ("", "fallback.example"), (None, "fallback.example"),
    ("192.0.2.7", "fallback.example"), ("[2001:db8::1]:80", "fallback.example"),  # an IP is no virtual host
])  # fmt: skip
@pytest.mark.parametrize("preset", ["fluentbit-nginx", "fluentbit-gelf"])
def test_a_real_host_in_the_record_wins_over_the_source_host(preset: str, carried: str | None,
                                                             expected: str) -> None:  # fmt: skip
    record: dict[str, Any] = dict(NGINX_RECORD)
    if preset == "fluentbit-gelf":
        record = {"_" + k: v for k, v in record.items() if k != "date"} | {"timestamp": 1795593600.0}
    if carried is not None:
        record["host"] = carried
    assert only(preset, record, "fallback.example").host == expected


def test_a_real_host_in_the_record_needs_no_source_host_and_a_missing_one_still_rejects() -> None:
    assert only("fluentbit-nginx", {**NGINX_RECORD, "host": "shop.example.com"}).host == "shop.example.com"
    result = run("fluentbit-nginx", [{**NGINX_RECORD, "host": "-"}])
    assert [(r.field, r.reason) for r in result.rejections] == [("host", "required")]
    assert "set `host` on the source" in result.rejections[0].message

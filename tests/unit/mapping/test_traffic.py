"""The captured traffic (200 nginx requests) rewritten in every preset's format must map to the same entries.

`traffic(preset)` is also what the mapping benchmark feeds each preset
(`python -m tests.unit.test_mapping_traffic`), so the figures are on the same
requests for every format.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from relay.mapping import MappingLibrary
from relay.models import RecordContext
from relay.stages.schema import ValidationPolicy, Validator
from tests.support import FIXTURES

SOURCE = FIXTURES / "fluent-bit" / "nginx-json.json" / "records.jsonl"
NOW = 1795599000.0  # 2026-11-25T09:30:00Z


def nginx_json() -> list[dict[str, Any]]:
    with open(SOURCE, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _epoch(r: dict[str, Any]) -> float:
    return datetime.fromisoformat(r["time_iso8601"]).timestamp()


def _iso(r: dict[str, Any], digits: int = 0) -> str:
    moment = datetime.fromtimestamp(_epoch(r), UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + ("." + "0" * digits if digits else "") + "Z"


def _peer(ip: str, port: int = 51234) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _ms(r: dict[str, Any]) -> int:
    return round(r["request_time"] * 1000)


def _path(r: dict[str, Any]) -> tuple[str, str]:
    path, _, query = r["request_uri"].partition("?")
    return path, query.partition("#")[0]


def _optional(**pairs: Any) -> dict[str, Any]:
    return {k: v for k, v in pairs.items() if v not in ("", None)}


def to_format(preset: str, r: dict[str, Any]) -> Any:
    ua, ref, host, ip = r["http_user_agent"], r["http_referer"], r["host"], r["remote_addr"]
    if preset == "nginx-json":
        return r
    if preset == "profound":
        return _optional(timestamp=r["time_iso8601"], method=r["request_method"], host=host, path=_path(r)[0],
                         query_params=None, status_code=r["status"], ip=ip, user_agent=ua, referer=ref,
                         bytes_sent=r["body_bytes_sent"], duration_ms=r["request_time"] * 1000)  # fmt: skip
    if preset in ("fluentbit-nginx", "fluentbit-apache2"):  # the parsers' string fields, "-" when empty
        client = {"remote": ip, "host": "-"} if preset == "fluentbit-nginx" else {"host": ip}
        return {"date": _epoch(r), **client, "user": "-", "method": r["request_method"], "path": r["request_uri"],
                "code": str(r["status"]), "size": str(r["body_bytes_sent"]), "referer": ref or "-", "agent": ua}  # fmt: skip
    if preset == "vector-nginx":  # parse_nginx_log(.message, "combined") merged into the event
        return _optional(timestamp=_iso(r), client=ip, user=None, request=f"{r['request_method']} {r['request_uri']} HTTP/1.1",
                         status=r["status"], size=r["body_bytes_sent"], referer=ref, agent=ua, host="vector-node-1",
                         source_type="file")  # fmt: skip
    if preset == "vector-apache":  # parse_apache_log(.message, "combined")
        return _optional(timestamp=_iso(r), host=ip, user=None, method=r["request_method"], path=r["request_uri"],
                         protocol="HTTP/1.1", status=r["status"], size=r["body_bytes_sent"], referrer=ref, agent=ua)  # fmt: skip
    if preset == "caddy":
        headers = {"User-Agent": [ua], **({"Referer": [ref]} if ref else {})}
        return {"level": "info", "ts": _epoch(r), "logger": "http.log.access.log0", "msg": "handled request",
                "request": {"remote_ip": ip, "remote_port": "51234", "client_ip": ip, "proto": "HTTP/1.1",
                            "method": r["request_method"], "host": host, "uri": r["request_uri"], "headers": headers},
                "bytes_read": 0, "duration": r["request_time"], "size": r["body_bytes_sent"], "status": r["status"]}  # fmt: skip
    if preset == "traefik":
        return _optional(ClientAddr=_peer(ip), ClientHost=ip, DownstreamContentSize=r["body_bytes_sent"],
                         DownstreamStatus=r["status"], Duration=round(r["request_time"] * 1e9), RequestHost=host,
                         RequestMethod=r["request_method"], RequestPath=r["request_uri"], RequestProtocol="HTTP/1.1",
                         StartUTC=_iso(r, 9), **{"request_User-Agent": ua, "request_Referer": ref})  # fmt: skip
    if preset in ("envoy", "istio"):
        return _optional(start_time=_iso(r, 3), method=r["request_method"], path=r["request_uri"],
                         protocol="HTTP/1.1", response_code=r["status"], bytes_sent=r["body_bytes_sent"],
                         duration=_ms(r), user_agent=ua, authority=host, referer=ref,
                         downstream_remote_address=_peer(ip))  # fmt: skip
    if preset == "envoy-text":
        return {"message": f'[{_iso(r, 3)}] "{r["request_method"]} {r["request_uri"]} HTTP/1.1" {r["status"]} - 0 '
                           f'{r["body_bytes_sent"]} {_ms(r)} - "{ip}" "{_q(ua)}" "id-1" "{host}" "10.0.0.1:80"'}  # fmt: skip
    if preset == "aws-alb":
        seconds = r["request_time"]
        return {"message": f'https {_iso(r, 6)} app/lb/1 {_peer(ip)} 10.0.0.1:80 0.000 {seconds:.3f} 0.000 '
                           f'{r["status"]} {r["status"]} 100 {r["body_bytes_sent"]} '
                           f'"{r["request_method"]} https://{host}:443{r["request_uri"]} HTTP/1.1" "{_q(ua)}" '
                           f'ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 arn:tg "Root=1" "{host}" "arn:cert" 0 '
                           f'{_iso(r, 6)} "forward" "-" "-" "10.0.0.1:80" "200" "-" "-" TID_1'}  # fmt: skip
    if preset == "cloudflare":
        return _optional(ClientIP=ip, ClientRequestHost=host, ClientRequestMethod=r["request_method"],
                         ClientRequestURI=r["request_uri"], ClientRequestPath=_path(r)[0],
                         ClientRequestReferer=ref, ClientRequestUserAgent=ua,
                         EdgeStartTimestamp=int(_epoch(r)) * 1_000_000_000, EdgeResponseBytes=r["body_bytes_sent"],
                         EdgeResponseStatus=r["status"], EdgeTimeToFirstByteMs=_ms(r))  # fmt: skip
    if preset == "ecs":
        path, query = _path(r)
        return {"@timestamp": _iso(r, 3), "event": {"duration": round(r["request_time"] * 1e9), "dataset": "nginx.access"},
                "http": {"request": _optional(method=r["request_method"], referrer=ref),
                         "response": {"status_code": r["status"], "body": {"bytes": r["body_bytes_sent"]}}},
                "url": _optional(domain=host, path=path, query=query, original=r["request_uri"]),
                "source": {"ip": ip}, "user_agent": {"original": ua}}  # fmt: skip
    if preset == "otel":
        path, query = _path(r)
        attributes = _optional(**{"http.request.method": r["request_method"], "server.address": host, "url.path": path,
                                  "url.query": query, "http.response.status_code": r["status"], "client.address": ip,
                                  "user_agent.original": ua, "http.response.body.size": r["body_bytes_sent"],
                                  "http.server.request.duration": r["request_time"]})  # fmt: skip
        if ref:
            attributes["http.request.header.referer"] = [ref]
        return {"timestamp": _iso(r, 9), "attributes": attributes, "resources": {"service.name": "web"}}
    raise KeyError(preset)


PRESETS = ["nginx-json", "profound", "fluentbit-nginx", "fluentbit-apache2", "vector-nginx", "vector-apache", "caddy",
           "traefik", "envoy", "istio", "envoy-text", "aws-alb", "cloudflare", "ecs", "otel"]  # fmt: skip
NO_HOST = {"fluentbit-nginx", "fluentbit-apache2", "vector-nginx", "vector-apache"}  # host comes from the source
NO_DURATION = NO_HOST


def traffic(preset: str) -> list[Any]:
    return [to_format(preset, r) for r in nginx_json()]


def mapper_for(preset: str) -> Any:
    return MappingLibrary({}).get("envoy" if preset == "envoy-text" else preset)


def mapped(preset: str) -> list[dict[str, Any]]:
    ctx = RecordContext(source="t", host="source.example")  # only for records that carry no host
    result = mapper_for(preset).map_records(traffic(preset), ctx, Validator(ValidationPolicy(now=NOW)))
    assert not result.rejections, [r.render() for r in result.rejections[:3]]
    return [msgspec.to_builtins(e) for e in result.entries]


@pytest.mark.parametrize("preset", PRESETS[1:])
def test_every_format_of_the_same_traffic_maps_to_the_same_entries(preset: str) -> None:
    reference = mapped("nginx-json")
    found = mapped(preset)
    assert len(found) == len(reference) == 200
    lacks = {"aws-alb": {"referer"}, "envoy-text": {"referer"}, "profound": {"query_params"}}.get(preset, set())
    for want, got in zip(reference, found, strict=True):
        duration = want.pop("duration_ms")
        if preset in NO_DURATION:
            assert "duration_ms" not in got
        else:
            assert got.pop("duration_ms") == pytest.approx(duration, abs=0.5)
        if preset in NO_HOST:
            assert got.pop("host") == "source.example"
            want.pop("host")
        for field in lacks:
            want.pop(field, None)
        assert got == want


def bench(preset: str, seconds: float = 1.0) -> tuple[float, int]:
    """(µs per record, records) for mapping + validation of the traffic in `preset`'s format."""
    mapper, records = mapper_for(preset), traffic(preset)
    validator, ctx = Validator(ValidationPolicy(now=NOW)), RecordContext(source="bench", host="www.example.com")
    best, rounds = float("inf"), 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or rounds < 5:
        start = time.perf_counter()
        mapper.map_records(records, ctx, validator)
        best = min(best, time.perf_counter() - start)
        rounds += 1
    return best / len(records) * 1e6, len(records)


if __name__ == "__main__":
    for name in sys.argv[1:] or PRESETS:
        micros, count = bench(name)
        print(f"{name:<18} {micros:6.2f} µs/record  {1e6 / micros:>10,.0f} records/s")

"""`relay map --protocol otlp|loki` on the bodies real clients sent, as they came off the wire."""

from __future__ import annotations

import json

import pytest

from relay.__main__ import main
from tests.support import FIXTURES

PIN = ["--now", "2026-11-25T09:30:00Z", "--format", "json"]
CASES = [
    ("otlp", "otlp-nginx-json", FIXTURES / "fluent-bit-protocols" / "opentelemetry.nginx-json.gzip"),
    ("loki", "loki-nginx", FIXTURES / "fluent-bit-protocols" / "loki.nginx-json"),
]


@pytest.mark.parametrize("protocol, preset, case", CASES, ids=[c[0] for c in CASES])
def test_relay_map_reads_a_captured_protocol_body(protocol: str, preset: str, case: object,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["map", preset, str(case / "body.bin"), "--protocol", protocol, *PIN])  # type: ignore[operator]
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["summary"]["entries"] == 200 and report["summary"]["rejected"] == 0
    assert report["records"][0]["entry"]["path"] == "/blog/2026/11/shipping-logs-fast"


def test_relay_map_otlp_without_the_protocol_cannot_read_protobuf(capsys: pytest.CaptureFixture[str]) -> None:
    body = FIXTURES / "fluent-bit-protocols" / "opentelemetry.nginx-json.gzip" / "body.bin"
    assert main(["map", "otlp-nginx-json", str(body), *PIN]) == 2

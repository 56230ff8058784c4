"""`relay map --protocol`: a native protocol's body as captured off the wire, mapped as its source would."""

from __future__ import annotations

import json

import pytest

from relay.__main__ import main
from tests.support import FIXTURES
from tests.unit.commands.test_map import PIN, relay_map

CASES = {"fluent-bit-native/es.gzip": ("elasticsearch", "nginx-json", []),
         "elasticsearch-py/bulk": ("elasticsearch", "nginx-json", ["--content-type", "application/x-ndjson"]),
         "fluent-bit-native/splunk.gzip": ("splunk_hec", "hec-nginx", []),
         "fluent-bit-native/datadog.gzip": ("datadog", "datadog-nginx", ["--path", "/api/v2/logs?ddsource=x"])}


@pytest.mark.parametrize("case", sorted(CASES))
def test_relay_map_reads_captured_protocol_bodies(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    protocol, preset, extra = CASES[case]
    code, out = relay_map(capsys, preset, str(FIXTURES / case / "body.bin"), "--protocol", protocol, *extra, *PIN,
                          "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["summary"]["entries"] == 200 and report["summary"]["rejected"] == 0, report["summary"]


def test_a_body_the_protocol_refuses_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    body = FIXTURES / "fluent-bit" / "nginx-json.json" / "body.bin"  # a JSON array: no _bulk action lines
    assert main(["map", "nginx-json", str(body), "--protocol", "elasticsearch", *PIN]) == 2
    assert "malformed action line" in capsys.readouterr().err

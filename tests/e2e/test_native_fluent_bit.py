"""The real Fluent Bit through each native protocol, across a `kill -9` of the relay.

Fluent Bit 4.2.8 tails a generated nginx JSON log through its `es`, `splunk` or `datadog` output
into a relay source of that protocol, which delivers to `relay mock-upstream`. Half the log is
written, the relay is killed with SIGKILL as soon as the first entries reach upstream, the other
half is written while it is down (Fluent Bit's flushes fail and are retried), and the relay is
restarted on the same port. Every line must arrive upstream exactly as the nginx-json mapping makes
it (at least once: a request committed just before the kill may be sent again by Fluent Bit).
Skipped without the Fluent Bit binary (tests.support.fluent_bit_binary()).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from relay.mapping import MappingLibrary
from relay.models import RecordContext
from relay.stages.schema import ValidationPolicy, Validator
from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.support import PEER_MISSING, MockUpstream, fluent_bit_binary, wait_until

KEY = "test-key"
TOKEN = "native-e2e-token"
LINES = 2000
PARSER = """[PARSER]
    Name        nginx_json
    Format      json
    Time_Key    time_iso8601
    Time_Format %Y-%m-%dT%H:%M:%S%z
    Time_Keep   On
"""
# protocol -> the output's settings (Host, Port, Match and retries are added)
OUTPUTS = {
    "elasticsearch": ["Name es", "Index nginx", "HTTP_User fluent-bit", f"HTTP_Passwd {TOKEN}",
                      "Suppress_Type_Name On", "Compress gzip"],
    "splunk_hec": ["Name splunk", f"Splunk_Token {TOKEN}", "TLS Off", "Compress gzip"],
    "datadog": ["Name datadog", f"apikey {TOKEN}", "TLS off", "provider ecs", "dd_source nginx",
                "json_date_key timestamp", "compress gzip"],
}

pytestmark = pytest.mark.skipif(fluent_bit_binary() is None, reason=PEER_MISSING)


def line(i: int) -> dict[str, Any]:
    return {"time_iso8601": f"2026-11-25T09:{i // 60 % 60:02d}:{i % 60:02d}+01:00", "remote_addr": f"192.0.2.{i % 250 + 1}",
            "request_method": "GET", "host": "www.example.com", "request_uri": f"/native/{i}?q={i}",
            "status": 200 + i % 5, "body_bytes_sent": i, "http_referer": "", "http_user_agent": f"agent/{i}",
            "request_time": 0.001 * (i % 100), "http_x_forwarded_for": ""}


def expected(lines: list[dict[str, Any]]) -> list[Any]:
    """The entries the nginx-json mapping makes of the lines, as the relay validates them."""
    mapper = MappingLibrary({}).get("nginx-json")
    now = datetime.fromisoformat(PINNED_NOW).timestamp()
    validator = Validator(ValidationPolicy(now=now))
    result = mapper.map_records(lines, RecordContext(source="t"), validator, None)
    assert not result.rejections
    return [msgspec.to_builtins(entry) for entry in result.entries]


def append(log: Path, lines: list[dict[str, Any]]) -> None:
    with log.open("a") as out:
        out.write("".join(json.dumps(value) + "\n" for value in lines))


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[MockUpstream]:
    with MockUpstream(tmp_path, api_keys=[KEY]) as mock:
        yield mock


@pytest.mark.parametrize("protocol", sorted(OUTPUTS))
def test_every_tailed_line_arrives_across_a_kill_9(tmp_path: Path, upstream: MockUpstream, protocol: str) -> None:
    sources = f'[sources.native]\nprotocol = "{protocol}"\nmapping = "nginx-json"\ntokens = ["{TOKEN}"]\n'
    lines = [line(i) for i in range(LINES)]
    log = tmp_path / "access.log"
    append(log, lines[: LINES // 2])
    with Relay(tmp_path, sink_toml("up", upstream.url, KEY), sources=sources) as relay:
        (tmp_path / "parsers.conf").write_text(PARSER)
        output = [*OUTPUTS[protocol], "Match *", "Host 127.0.0.1", f"Port {relay.port}", "Retry_Limit no_limits"]
        (tmp_path / "fluent-bit.conf").write_text("\n".join([
            "[SERVICE]", "    Flush 1", "    Grace 1", "    Log_Level info", "    Parsers_File parsers.conf",
            # retries come within seconds, not Fluent Bit's default of up to 2000s
            "    scheduler.base 1", "    scheduler.cap 2",
            "[INPUT]", "    Name tail", "    Tag nginx.access", f"    Path {log}", "    Read_from_Head On",
            "    Parser nginx_json", "    Refresh_Interval 1",
            "[OUTPUT]", *(f"    {setting}" for setting in output)]) + "\n")
        with (tmp_path / "fluent-bit.log").open("wb") as fb_log:
            fluent_bit = subprocess.Popen([str(fluent_bit_binary()), "-c", "fluent-bit.conf"], cwd=tmp_path,
                                          stdout=fb_log, stderr=subprocess.STDOUT)
        try:
            def arrived() -> int:
                return len(upstream.entries())

            def shown() -> str:
                return f"{arrived()} entries upstream\n{relay.log_tail()}\n" \
                       f"{(tmp_path / 'fluent-bit.log').read_text()[-3000:]}"

            wait_until(lambda: arrived() > 0, timeout=60, message=shown)
            relay.kill9()
            append(log, lines[LINES // 2:])
            relay.start()
            want = expected(lines)
            wait_until(lambda: arrived() >= LINES and {json.dumps(e, sort_keys=True) for e in upstream.entries()}
                       >= {json.dumps(e, sort_keys=True) for e in want}, timeout=120, message=shown)
        finally:
            fluent_bit.terminate()
            fluent_bit.wait(10)
    got = {json.dumps(e, sort_keys=True) for e in upstream.entries()}
    assert got == {json.dumps(e, sort_keys=True) for e in want}  # nothing else, nothing changed

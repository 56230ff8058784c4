"""`relay map`: dry runs on every public fixture, the per-record report, the summary and the exit status."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.__main__ import main
from tests.support import FIXTURES

CASES = sorted(p.name for p in (FIXTURES / "fluent-bit").glob("*") if p.is_dir())
PRESET = {"nginx-combined": "fluentbit-nginx", "nginx-json": "nginx-json", "raw-line": "nginx-combined"}
PIN = ["--now", "2026-11-25T09:30:00Z"]


def relay_map(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["map", *argv])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("case", CASES)
def test_relay_map_reads_every_public_fixture(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    body = FIXTURES / "fluent-bit" / case / "body.bin"
    code, out = relay_map(capsys, PRESET[case.split(".")[0]], str(body), "--host", "www.example.com", *PIN,
                          "--format", "json")  # fmt: skip
    report = json.loads(out)
    assert code == 0 and report["summary"]["entries"] == 200 and report["summary"]["rejected"] == 0
    assert len(report["records"]) == 200 and report["records"][0]["status"] == "ok"


def write(tmp_path: Path, records: list[Any]) -> str:
    path = tmp_path / "sample.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


GOOD = {"timestamp": "2026-11-25T08:00:00Z", "method": "get", "host": "a.example", "path": "/x?y=1",
        "status_code": 200, "ip": "192.0.2.1:80", "user_agent": "ua"}  # fmt: skip


def test_table_reports_filled_repaired_missing_rejected_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = write(tmp_path, [GOOD, {**GOOD, "status_code": "abc"}, {**GOOD, "method": "GET", "ip": "192.0.2.1"}])
    code, out = relay_map(capsys, "profound", sample, *PIN)
    assert code == 1  # some record was rejected
    assert "#0    repaired" in out and "repaired: ip:port_stripped, method:uppercased" in out
    assert "missing:  query_params, referer, bytes_sent, duration_ms" in out
    assert '#1    REJECTED $[1].status_code: must be an integer 100..599, got "abc"' in out
    assert "#2    ok" in out
    assert "3 records: 2 entries (1 repaired), 1 rejected, 0 filtered" in out
    assert "rejected: status_code:range x1" in out and "never filled: query_params, referer, bytes_sent, duration_ms" in out


def test_json_format_and_reject_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = relay_map(capsys, "profound", write(tmp_path, [GOOD]), *PIN, "--reject", "--format", "json")
    report = json.loads(out)
    assert code == 1 and report["records"][0]["reason"] in ("invalid_ip", "uppercase")
    assert report["summary"]["rejected"] == 1 and report["mapping"] == "profound"


def test_config_mappings_sources_and_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    config = tmp_path / "relay.toml"
    config.write_text(
        '[server]\naddress = "127.0.0.1:0"\n[queue]\npath = "q"\n'
        '[sources.web]\nmapping = "mine"\nhost = "from-source.example"\n'
        '[sinks.up]\napi_key = "k"\n'
        '[mappings.mine]\nextends = "profound"\nhost = "vhost"\n'
        'drop_if = [{ field = "path", equals = "/healthz" }]\n'
        '[validation]\nnow = "2026-11-25T09:30:00+00:00"\n',
        encoding="utf-8",
    )
    records = [{**GOOD, "host": None}, {**GOOD, "path": "/healthz"}]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(records).encode())))
    code, out = relay_map(capsys, "mine", "-c", str(config), "--source", "web")
    assert code == 0, out
    assert '"host":"from-source.example"' in out and "#1    filtered (drop_if)" in out
    assert "2 records: 1 entries (1 repaired), 0 rejected, 1 filtered" in out


def test_unusable_mapping_or_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["map", "no-such-mapping", write(tmp_path, [GOOD])]) == 2
    assert "unknown mapping 'no-such-mapping'" in capsys.readouterr().err
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8bcut short")
    assert main(["map", "profound", str(bad)]) == 2
    assert "gzip" in capsys.readouterr().err


def test_show_code_and_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = relay_map(capsys, "fluentbit-nginx", "--show-code")
    assert code == 0 and out.startswith("def map_batch(records, ctx, check, repairs, fast=None):")
    assert out.count("def map_batch(") == 2 and "# The lane:" in out and "l_timestamp = r." in out
    code, out = relay_map(capsys, "nginx-json", "--show-code")  # no lane: the one function
    assert code == 0 and out.count("def map_batch(") == 1 and "# The lane:" not in out
    code, out = relay_map(capsys, "profound", write(tmp_path, [GOOD] * 20), *PIN, "--bench")
    assert code == 0 and "records/s (mapping + validation)" in out and "20 entries" in out


def test_fluentbit_nginx_host_from_the_record_or_from_host(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """A record's own virtual host (`$host` in the second column) wins; --host fills the ones with `-`."""
    base = {"remote": "192.0.2.1", "user": "-", "method": "GET", "path": "/x", "code": "200", "size": "10",
            "referer": "-", "agent": "ua", "date": 1795593600}  # fmt: skip
    sample = write(tmp_path, [{**base, "host": "shop.example.com:443"}, {**base, "host": "-"}])
    code, out = relay_map(capsys, "fluentbit-nginx", sample, *PIN, "--format", "json")
    report = json.loads(out)
    assert code == 1 and [r["status"] for r in report["records"]] == ["ok", "rejected"]
    assert report["records"][0]["entry"]["host"] == "shop.example.com"
    assert "set `host` on the source" in report["records"][1]["error"]
    code, out = relay_map(capsys, "fluentbit-nginx", sample, *PIN)
    assert code == 1 and "hint: fluentbit-nginx takes the host from the records that carry one: pass --host" in out
    code, out = relay_map(capsys, "fluentbit-nginx", sample, *PIN, "--host", "www.example.com", "--format", "json")
    report = json.loads(out)
    assert code == 0 and [r["entry"]["host"] for r in report["records"]] == ["shop.example.com", "www.example.com"]

"""The OTLP and Loki shipper configs in configs/shippers/: parsed and checked for the settings
that point them at the relay's protocol paths and keep data safe; Fluent Bit's own --dry-run
where the binary is present (OTel Collector, Promtail and Alloy binaries are not available here).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from relay.config import load
from relay.errors import ConfigError
from relay.mapping import MappingLibrary
from relay.stages.protocols import loki, otlp
from tests.support import PEER_MISSING, REPO_ROOT, fluent_bit_binary
from tests.unit.test_shipper_configs import parse_fluent_bit_classic

SHIPPERS = REPO_ROOT / "configs" / "shippers"
TOKEN_ENV = "${RELAY_TOKEN}"
PRESETS = REPO_ROOT / "relay" / "mapping" / "presets"


def sections(name: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for section, entries in parse_fluent_bit_classic((SHIPPERS / name).read_text()):
        out.setdefault(section, []).append({key: values[-1] for key, values in entries.items()})
    return out


def _safe_tail(config: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    (service,) = config["SERVICE"]
    (tail,) = config["INPUT"]
    assert tail["name"] == "tail" and tail.get("db") and tail.get("storage.type") == "filesystem"
    assert service.get("storage.path")
    return tail


def test_fluent_bit_opentelemetry_config() -> None:
    config = sections("fluent-bit-otlp.conf")
    _safe_tail(config)
    (out,) = config["OUTPUT"]
    assert out["name"] == "opentelemetry" and out["logs_uri"] in otlp.PATHS
    assert out["compress"] == "gzip" and out["retry_limit"] == "no_limits"
    assert int(out["batch_size"]) >= 100_000, "Fluent Bit #12384: a smaller batch loses a sub-batch on retry"
    assert out["header"] == f"Authorization Bearer {TOKEN_ENV}"


def test_fluent_bit_loki_config() -> None:
    config = sections("fluent-bit-loki.conf")
    _safe_tail(config)
    (out,) = config["OUTPUT"]
    assert out["name"] == "loki" and out["uri"] in loki.PATHS and out["line_format"] == "json"
    assert out["retry_limit"] == "no_limits" and out["bearer_token"] == TOKEN_ENV


@pytest.mark.skipif(fluent_bit_binary() is None, reason=PEER_MISSING)
@pytest.mark.parametrize("name", ["fluent-bit-otlp.conf", "fluent-bit-loki.conf"])
def test_fluent_bit_accepts_the_config(name: str) -> None:
    env = {"RELAY_HOST": "127.0.0.1", "RELAY_PORT": "8080", "RELAY_TOKEN": "t", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(fluent_bit_binary()), "--dry-run", "-c", str(SHIPPERS / name)], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "configuration test is successful" in result.stdout + result.stderr, \
        result.stdout + result.stderr


def test_otel_collector_otlphttp_config() -> None:
    config = yaml.safe_load((SHIPPERS / "otel-collector.yaml").read_text())
    exporter = config["exporters"]["otlphttp/relay"]
    assert exporter["endpoint"] == "${env:RELAY_URL}"  # + /v1/logs, which the exporter appends
    assert exporter["compression"] == "gzip" and exporter["encoding"] == "proto"
    assert exporter["headers"]["Authorization"] == "Bearer ${env:RELAY_TOKEN}"
    assert exporter["retry_on_failure"]["enabled"] and exporter["retry_on_failure"]["max_elapsed_time"] == 0
    storage = exporter["sending_queue"]["storage"]
    assert storage in config["extensions"] and storage in config["service"]["extensions"]
    assert config["service"]["pipelines"]["logs"]["exporters"] == ["otlphttp/relay"]
    # every attribute the collector writes is one the `otel` preset reads
    moved = [re.fullmatch(r'attributes\["(.+)"\]', op["to"])[1]  # type: ignore[index]
             for op in config["receivers"]["filelog"]["operators"] if op["type"] == "move"]
    preset = tomllib.loads((PRESETS / "otel.toml").read_text())
    read = str(preset)
    assert moved and all(f'attributes."{name}"' in read for name in moved), moved


def test_promtail_config() -> None:
    config = yaml.safe_load((SHIPPERS / "promtail.yaml").read_text())
    (client,) = config["clients"]
    assert client["url"] == "${RELAY_URL}/loki/api/v1/push" and client["bearer_token"] == TOKEN_ENV
    backoff = client["backoff_config"]
    assert backoff["max_retries"] * _seconds(backoff["max_period"]) >= 3600
    assert config["positions"]["filename"]


def test_alloy_loki_write_config() -> None:
    text = (SHIPPERS / "alloy.alloy").read_text()
    block = re.search(r'loki\.write "relay" \{(.*?)\n\}', text, re.S)
    assert block, "no loki.write block"
    settings = dict(re.findall(r"^\s*(\w+)\s*=\s*(.+?)\s*$", block[1], re.M))
    assert settings["url"] == 'sys.env("RELAY_URL") + "/loki/api/v1/push"'
    assert settings["bearer_token"] == 'sys.env("RELAY_TOKEN")' and settings["retry_on_http_429"] == "true"
    assert int(settings["max_backoff_retries"]) * _seconds(settings["max_backoff_period"].strip('"')) >= 3600
    assert "forward_to = [loki.write.relay.receiver]" in text


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"ms": 0.001, "s": 1, "m": 60}[unit]


def test_every_protocol_config_here_is_tested() -> None:
    tested = {"fluent-bit-otlp.conf", "fluent-bit-loki.conf", "otel-collector.yaml", "promtail.yaml", "alloy.alloy",
              "relay-sources-otlp-loki.toml"}
    assert tested <= {p.name for p in Path(SHIPPERS).iterdir()}


def test_the_relay_sources_for_these_configs_load(tmp_path: Path) -> None:
    config_path = tmp_path / "relay.toml"
    config_path.write_text((SHIPPERS / "relay-sources-otlp-loki.toml").read_text()
                           + '\n[sinks.profound]\nurl = "http://127.0.0.1:9/v1/logs/custom"\napi_key = "k"\n')
    env = {"OTLP_TOKEN": "a", "OTEL_TOKEN": "b", "LOKI_TOKEN": "c", "RELAY_DEFAULT_HOST": "shop.example.com"}
    config = load(config_path, env=env)
    assert {name: s.protocol for name, s in config.sources.items()} == {"otlp": "otlp", "otel": "otlp",
                                                                         "loki": "loki"}
    library = MappingLibrary(config.mappings)
    for name, source in config.sources.items():
        library.get(source.mapping, source=name)  # compiles, or raises naming the problem
        assert source.tokens == [env[f"{name.upper()}_TOKEN"]]
    # the mapping each shipper config's comment names is its source's
    assert "otlp-nginx-json" in (SHIPPERS / "fluent-bit-otlp.conf").read_text()
    assert "loki-nginx" in (SHIPPERS / "fluent-bit-loki.conf").read_text()
    with pytest.raises(ConfigError, match="LOKI_TOKEN"):
        load(config_path, env={"OTLP_TOKEN": "a", "OTEL_TOKEN": "b"})

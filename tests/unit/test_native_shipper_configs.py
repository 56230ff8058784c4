"""configs/shippers/native/: each shipper's native output points at a relay source of its protocol,
with its token, keeping data safe where the shipper can; the relay sources load; Fluent Bit accepts
its config; the README's "Native protocols" snippets are these files."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.config import load
from relay.routes import compile_routes
from tests.support import PEER_MISSING, REPO_ROOT, fluent_bit_binary
from tests.unit.test_shipper_configs import parse_fluent_bit_classic

NATIVE = REPO_ROOT / "configs" / "shippers" / "native"
README = (REPO_ROOT / "README.md").read_text()
TOKEN_ENV = "${RELAY_TOKEN}"


def sources() -> dict[str, Any]:
    return tomllib.loads((NATIVE / "relay-sources.toml").read_text())["sources"]


def test_the_native_sources_load_with_their_protocols_and_presets(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text((NATIVE / "relay-sources.toml").read_text() + '\n[sinks.up]\napi_key = "k"\n')
    env = {name: "t-" + name for name in ("BEATS_TOKEN", "ES_NGINX_TOKEN", "HEC_TOKEN", "DD_TOKEN")}
    loaded = load(config, env={**env, "RELAY_DEFAULT_HOST": "www.example.com"})
    routes = compile_routes(loaded)
    assert {route.protocol for route in routes.values()} == {"elasticsearch", "splunk_hec", "datadog"}


def test_fluent_bit_native_outputs_point_at_sources_of_their_protocol() -> None:
    outputs = [section for name, section in parse_fluent_bit_classic((NATIVE / "fluent-bit.conf").read_text())
               if name == "OUTPUT"]
    protocols = {"es": "elasticsearch", "splunk": "splunk_hec", "datadog": "datadog"}
    assert sorted(o["name"][0] for o in outputs) == sorted(protocols)
    served = {source["protocol"] for source in sources().values()}
    for output in outputs:
        assert protocols[output["name"][0]] in served
        assert output["host"] == ["${RELAY_HOST}"] and output["port"] == ["${RELAY_PORT}"]
        assert output["retry_limit"] == ["no_limits"] and output["storage.total_limit_size"]
        token = output.get("http_passwd") or output.get("splunk_token") or output.get("apikey")
        assert token == [TOKEN_ENV], output
        assert (output.get("compress") or [""])[0].lower() == "gzip"


@pytest.mark.skipif(fluent_bit_binary() is None, reason=PEER_MISSING)
def test_fluent_bit_accepts_the_native_config(tmp_path: Path) -> None:
    config = tmp_path / "fluent-bit.conf"
    config.write_text((NATIVE / "fluent-bit.conf").read_text().replace("/var/lib/fluent-bit", str(tmp_path)))
    (tmp_path / "parsers.conf").write_text("[PARSER]\n    Name json\n    Format json\n")
    env = {"RELAY_HOST": "127.0.0.1", "RELAY_PORT": "8080", "RELAY_TOKEN": "t", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(fluent_bit_binary()), "--dry-run", "-c", str(config)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vector_native_sinks() -> None:
    sinks = tomllib.loads((NATIVE / "vector.toml").read_text())["sinks"]
    assert {s["type"] for s in sinks.values()} == {"elasticsearch", "splunk_hec_logs", "datadog_logs"}
    for sink in sinks.values():
        assert sink["acknowledgements"]["enabled"] is True  # checkpointed only after the relay committed
        assert sink["compression"] == "gzip"
        assert TOKEN_ENV in (sink.get("auth", {}).get("password"), sink.get("default_token"),
                             sink.get("default_api_key"))
    assert sinks["relay_es"]["bulk"]["action"] == "create"
    assert sinks["relay_hec"]["acknowledgements"]["indexer_acknowledgements_enabled"] is True


def test_filebeat_logstash_and_the_datadog_agent() -> None:
    filebeat = yaml.safe_load((NATIVE / "filebeat.yml").read_text())
    assert filebeat["output.elasticsearch"]["password"] == TOKEN_ENV
    assert filebeat["setup.template.enabled"] is False and filebeat["setup.ilm.enabled"] is False
    logstash = (NATIVE / "logstash.conf").read_text()
    assert f'password => "{TOKEN_ENV}"' in logstash and "ilm_enabled => false" in logstash
    agent = yaml.safe_load((NATIVE / "datadog.yaml").read_text())
    assert agent["api_key"] == TOKEN_ENV and agent["logs_config"]["force_use_http"] is True


def test_every_readme_snippet_of_native_protocols_is_a_shipped_config() -> None:
    start = README.index("## Native protocols")
    section = README[start:README.index("\n## ", start + 1)]
    blocks = re.findall(r"```\w*\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 5
    shipped = "\n".join(path.read_text() for path in NATIVE.iterdir())
    for block in blocks:
        assert block.strip() in shipped, block

"""`relay check-config`: the plan it prints and the warnings it gives about the default config."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.__main__ import main
from relay.commands.check_config import plan
from relay.config import load
from relay.errors import ConfigError

DEFAULT = Path(__file__).resolve().parents[3] / "configs" / "relay.toml"


def test_default_config_invents_no_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without RELAY_DEFAULT_HOST the real API must not receive `www.example.com` for host-less records."""
    config = load(DEFAULT, env={"PROFOUND_API_KEY": "k"})
    assert config.sources["fluentbit"].host is None
    with_host = load(DEFAULT, env={"PROFOUND_API_KEY": "k", "RELAY_DEFAULT_HOST": "shop.example.com"})
    assert with_host.sources["fluentbit"].host == "shop.example.com"


def test_check_config_names_the_source_that_needs_a_host(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("PROFOUND_API_KEY", "k")
    monkeypatch.delenv("RELAY_DEFAULT_HOST", raising=False)
    _, warnings = plan(str(DEFAULT))
    host_warnings = [w for w in warnings if "host" in w]
    assert len(host_warnings) == 1 and host_warnings[0].startswith("sources.fluentbit: ")
    assert "RELAY_DEFAULT_HOST" in host_warnings[0] and "carry one" in host_warnings[0]
    assert main(["check-config", "-c", str(DEFAULT)]) == 0
    assert "warning: sources.fluentbit: mapping 'fluentbit-nginx'" in capsys.readouterr().err
    monkeypatch.setenv("RELAY_DEFAULT_HOST", "shop.example.com")
    _, warnings = plan(str(DEFAULT))
    assert not [w for w in warnings if "host" in w]


def test_a_mapping_that_never_finds_a_host_says_every_record_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[sources.raw]\nmapping = "nginx-combined"\n[sources.caddy]\nmapping = "caddy"\n'
                    '[sinks.up]\napi_key = "k"\n')
    _, warnings = plan(str(path))
    assert warnings == ["sources.raw: mapping 'nginx-combined' finds no virtual host in the logs, so every "
                        "record will be rejected: set host = \"www.example.com\" on it (the default config "
                        "reads RELAY_DEFAULT_HOST)"]


def test_check_config_says_how_many_workers_and_their_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFOUND_API_KEY", "k")
    text = DEFAULT.read_text().replace("[server]\n", "[server]\nworkers = 2\n", 1)
    assert text != DEFAULT.read_text()
    path = tmp_path / "relay.toml"
    path.write_text(text)
    lines, _ = plan(str(path))
    assert [line for line in lines if line.startswith("workers: 2 processes on ")]
    path.write_text(DEFAULT.read_text().replace("[server]\n", "[server]\nworkers = 1\n", 1))
    one, _ = plan(str(path))
    assert [line for line in one if line.startswith("workers: 1 process on ")]


def test_check_config_resolves_the_default_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default config leaves `workers` out: "auto", and check-config says what it comes to here."""
    from relay import cores

    monkeypatch.setenv("PROFOUND_API_KEY", "k")
    assert "\nworkers" not in DEFAULT.read_text()
    monkeypatch.setattr(cores, "usable", lambda: 3)
    monkeypatch.setattr(cores, "memory_limit", lambda: None)
    lines, _ = plan(str(DEFAULT))
    assert [line for line in lines if line.startswith("workers: 3 processes on ") and "(auto: 3 usable cores)" in line]
    monkeypatch.setattr(cores, "memory_limit", lambda: 512 * 2**20)
    lines, _ = plan(str(DEFAULT))
    assert [line for line in lines if line.startswith("workers: 2 processes on ") and
            "(auto: 3 usable cores, fewer so that they fit the cgroup's memory limit of 512 MiB: about 224 MiB "
            "a worker with its server.max_body_memory of bodies)" in line]
    monkeypatch.setattr(cores, "usable", lambda: 1)
    lines, _ = plan(str(DEFAULT))
    assert "workers: 1 process on 0.0.0.0:8080 (auto: 1 usable core)" in lines


def test_a_protocol_source_says_where_it_is_served_and_an_unbuilt_protocol_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[sources.es]\nprotocol = "elasticsearch"\npath = "/es"\nmapping = "nginx-json"\n'
                    '[sinks.up]\napi_key = "k"\n')
    lines, _ = plan(str(path))
    assert "source es: protocol elasticsearch, at its root paths and under /es and /ingest/es" in lines
    path.write_text('[sources.es]\nprotocol = "smtp"\n[sinks.up]\napi_key = "k"\n')
    with pytest.raises(ConfigError, match=r"sources\.es\.protocol"):
        plan(str(path))

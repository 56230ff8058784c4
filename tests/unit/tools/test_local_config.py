"""The one writer of a loopback relay's config (bench and e2e harness): what it writes loads as meant."""

from __future__ import annotations

from pathlib import Path

from relay.config import Config, load
from relay.tools.local_config import relay_toml, sink_toml


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return load(path, env={})


def test_the_written_config_loads_with_every_option(tmp_path: Path) -> None:
    queue = tmp_path / 'odd "dir" \\ name'
    sinks = sink_toml("up", "http://127.0.0.1:9/v1/logs/custom", "k", batch_timeout="200ms", concurrency=2)
    config = _load(tmp_path, relay_toml(port=8123, queue_dir=queue, sinks=sinks, now="2026-11-25T09:30:00Z",
                                        sync="full", queue_max_size="2GiB", max_body_size="1MiB",
                                        shutdown_grace="3s", log_level="warning"))
    assert config.server.address == "127.0.0.1:8123"
    assert (config.server.max_body_size, config.server.shutdown_grace) == (2**20, 3.0)
    assert (config.queue.path, config.queue.max_size, config.queue.sync) == (str(queue), 2 * 2**30, "full")
    assert config.validation.now == "2026-11-25T09:30:00Z" and config.log.level == "warning"
    assert sorted(config.sources) == ["custom", "fluentbit"]
    sink = config.sinks["up"]
    assert (sink.url, sink.api_key, sink.batch_timeout, sink.concurrency) == (
        "http://127.0.0.1:9/v1/logs/custom", "k", 0.2, 2)


def test_sources_replace_the_defaults_and_extra_goes_in(tmp_path: Path) -> None:
    text = relay_toml(port=1, queue_dir=tmp_path / "q", sinks=sink_toml("up", "http://127.0.0.1:9/", "k"),
                      sources='[sources.only]\nmapping = "profound"\n', extra='[mappings.m]\npreset = "profound"\n')
    config = _load(tmp_path, text)
    assert list(config.sources) == ["only"] and "m" in config.mappings
    assert config.validation.now is None and config.server.max_body_size == 16 * 2**20

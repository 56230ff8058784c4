from pathlib import Path

import pytest

from relay.config import Config, load, parse_duration, parse_size
from relay.errors import ConfigError
from tests.support import REPO_ROOT

MINIMAL = """
[sources.fb]
mapping = "fluentbit-nginx"
host = "www.example.com"

[sinks.up]
url = "http://127.0.0.1:9/v1/logs/custom"
api_key = "${KEY}"
"""


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_sizes_and_durations_are_strings_with_units() -> None:
    assert parse_size("16MiB") == 16 * 2**20
    assert parse_size("512KB") == 512_000
    assert parse_size("4GiB") == 4 * 2**30
    assert parse_size(1024) == 1024
    assert parse_duration("500ms") == 0.5
    assert parse_duration("30s") == 30
    assert parse_duration("5m") == 300
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("2") == 2
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("16 parsecs")
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("soon")


def test_loads_defaults_and_expands_environment(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL), env={"KEY": "secret"})
    assert isinstance(config, Config)
    assert config.sinks["up"].api_key == "secret"
    assert config.sinks["up"].batch_max_entries == 1000
    assert config.sinks["up"].batch_timeout == 1.0
    assert config.server.max_body_size == 16 * 2**20
    assert config.queue.sync == "full"
    assert config.source_sinks("fb") == ["up"]


def test_env_default_is_used_when_unset(tmp_path: Path) -> None:
    text = MINIMAL.replace("${KEY}", "${KEY:-fallback}")
    assert load(write(tmp_path, text), env={}).sinks["up"].api_key == "fallback"


def test_unset_env_var_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    message = str(info.value)
    assert str(path) in message and "sinks.up.api_key" in message and "KEY is not set" in message


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "\n[server]\nadress = \"0.0.0.0:1\"\n")
    with pytest.raises(ConfigError) as info:
        load(path, env={"KEY": "k"})
    assert "server.adress" in str(info.value) and "unknown key" in str(info.value)


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "concurrency = \"four\"\n")
    with pytest.raises(ConfigError, match=r"sinks\.up\.concurrency: expected `int`, got `str`"):
        load(path, env={"KEY": "k"})


def test_bad_size_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "\n[queue]\nmax_size = \"lots\"\n")
    with pytest.raises(ConfigError, match=r"queue\.max_size"):
        load(path, env={"KEY": "k"})


def test_batch_size_is_capped_at_the_upstream_limit(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "batch_max_entries = 1001\n")
    with pytest.raises(ConfigError, match=r"sinks\.up\.batch_max_entries: must be 1\.\.1000"):
        load(path, env={"KEY": "k"})


def test_source_routing_to_unknown_sink_is_an_error(tmp_path: Path) -> None:
    text = MINIMAL.replace('host = "www.example.com"', 'host = "www.example.com"\nsinks = ["nope"]')
    with pytest.raises(ConfigError, match=r"sources\.fb\.sinks: no sink named 'nope'"):
        load(write(tmp_path, text), env={"KEY": "k"})


def test_two_sources_on_one_path_is_an_error(tmp_path: Path) -> None:
    text = MINIMAL + '\n[sources.other]\npath = "/ingest/fb"\n'
    with pytest.raises(ConfigError, match="already served by source 'fb'"):
        load(write(tmp_path, text), env={"KEY": "k"})


def test_yaml_is_accepted(tmp_path: Path) -> None:
    text = """
sources:
  fb: {mapping: fluentbit-nginx, host: www.example.com}
sinks:
  up: {url: "http://127.0.0.1:9/x", api_key: "${KEY}", batch_timeout: 250ms}
"""
    config = load(write(tmp_path, text, "relay.yaml"), env={"KEY": "k"})
    assert config.sinks["up"].batch_timeout == 0.25


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load(path, env={})


def test_default_config_loads() -> None:
    root = REPO_ROOT
    config = load(root / "configs" / "relay.toml", env={"PROFOUND_API_KEY": "k"})
    assert set(config.sources) == {"fluentbit", "custom"}
    assert config.sources["custom"].path == "/v1/logs/custom"


def test_reload_names_every_changed_key_of_every_section(tmp_path: Path) -> None:
    """No key of [server], [queue], [validation] or [log] can change unseen by a reload."""
    from relay.config import RESTART_ONLY, changed_entries, changed_settings

    old = load(write(tmp_path, MINIMAL), env={"KEY": "k"})
    text = MINIMAL + """
[server]
address = "127.0.0.1:9999"
max_body_memory = "256MiB"
admin_token = "secret-admin"
[queue]
sync = "normal"
max_size = "5GiB"
[validation]
on_invalid = "reject"
max_age = "7d"
now = "2026-11-25T09:30:00+00:00"
[log]
level = "debug"
format = "json"
"""
    new = load(write(tmp_path, text, "new.toml"), env={"KEY": "k"})
    said = dict(changed_settings(old, new))
    assert said == {
        "server.address": 'server.address = "127.0.0.1:9999"', "server.max_body_memory": "server.max_body_memory = 268435456",
        "server.admin_token": "server.admin_token changed", "queue.max_size": "queue.max_size = 5368709120",
        "queue.sync": 'queue.sync = "normal"', "validation.on_invalid": 'validation.on_invalid = "reject"',
        "validation.max_age": "validation.max_age = 604800", "validation.now": 'validation.now = "2026-11-25T09:30:00+00:00"',
        "log.level": 'log.level = "debug"', "log.format": 'log.format = "json"',
    }  # fmt: skip
    assert {"server.address", "queue.sync"} <= set(RESTART_ONLY)
    assert "secret-admin" not in str(said)
    assert changed_settings(old, old) == []
    assert changed_entries("sources", {"a": old.sources["fb"]}, {"b": old.sources["fb"]}) == [
        "sources.a removed", "sources.b added"]


def test_workers_default_to_auto_one_per_usable_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relay import cores
    from relay.config import RESTART_ONLY

    monkeypatch.setattr(cores, "memory_limit", lambda: None)  # the test machine's own limit, if any, aside

    default = load(write(tmp_path, MINIMAL), env={"KEY": "k"})
    assert default.server.workers == "auto"
    assert default.worker_count == min(cores.usable(), 64) >= 1
    auto = load(write(tmp_path, '[server]\nworkers = "auto"\n' + MINIMAL), env={"KEY": "k"})
    assert auto.worker_count == default.worker_count
    assert load(write(tmp_path, "[server]\nworkers = 1\n" + MINIMAL), env={"KEY": "k"}).worker_count == 1
    assert load(write(tmp_path, "[server]\nworkers = 3\n" + MINIMAL), env={"KEY": "k"}).worker_count == 3
    assert "server.workers" in RESTART_ONLY


def test_auto_workers_never_exceed_what_the_queue_can_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config valid on a small machine stays valid on a big one: auto starts fewer workers
    rather than give a shard less than four bodies, and never more than 64."""
    from relay import cores

    monkeypatch.setattr(cores, "usable", lambda: 128)
    monkeypatch.setattr(cores, "memory_limit", lambda: None)
    assert load(write(tmp_path, MINIMAL), env={"KEY": "k"}).worker_count == 64  # 4GiB / 64 = 4 x 16MiB
    small = '[server]\nmax_body_size = "1MiB"\n[queue]\nmax_size = "10MiB"\n' + MINIMAL
    assert load(write(tmp_path, small), env={"KEY": "k"}).worker_count == 2
    tiny = '[server]\nmax_body_size = "1MiB"\n[queue]\nmax_size = "4MiB"\n' + MINIMAL
    assert load(write(tmp_path, tiny), env={"KEY": "k"}).worker_count == 1
    monkeypatch.setattr(cores, "usable", lambda: 3)
    assert load(write(tmp_path, MINIMAL), env={"KEY": "k"}).worker_count == 3


def test_auto_workers_fit_the_cgroups_memory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod with no CPU limit on a big node but 512 MiB of memory: not one worker per node core.
    Each worker counts 96 MiB and its max_body_memory (128 MiB by default), the supervisor 48 MiB."""
    from relay import cores

    monkeypatch.setattr(cores, "usable", lambda: 16)
    for limit, workers in [(None, 16), (2**40, 16), (512 * 2**20, 2), (1024 * 2**20, 4), (256 * 2**20, 1),
                           (64 * 2**20, 1)]:
        monkeypatch.setattr(cores, "memory_limit", lambda limit=limit: limit)
        assert load(write(tmp_path, MINIMAL), env={"KEY": "k"}).worker_count == workers, limit
    lean = '[server]\nmax_body_memory = "32MiB"\nmax_body_size = "8MiB"\n' + MINIMAL
    assert load(write(tmp_path, lean), env={"KEY": "k"}).worker_count == 1  # 64 MiB still: one
    monkeypatch.setattr(cores, "memory_limit", lambda: 512 * 2**20)
    assert load(write(tmp_path, lean), env={"KEY": "k"}).worker_count == 3  # (512 - 48) // 128
    fixed = "[server]\nworkers = 8\n" + MINIMAL
    assert load(write(tmp_path, fixed), env={"KEY": "k"}).worker_count == 8  # a number is taken as given


@pytest.mark.parametrize(("value", "says"), [("0", "must be 1..64"), ('"many"', "server.workers"),
                                             ("65", "must be 1..64")])
def test_bad_worker_count_names_the_key(tmp_path: Path, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        load(write(tmp_path, f"[server]\nworkers = {value}\n" + MINIMAL), env={"KEY": "k"})
    assert caught.value.key == "server.workers"


def test_each_worker_shard_must_hold_four_bodies(tmp_path: Path) -> None:
    text = '[server]\nworkers = 4\nmax_body_size = "1MiB"\n[queue]\nmax_size = "8MiB"\n' + MINIMAL
    with pytest.raises(ConfigError, match="per worker") as caught:
        load(write(tmp_path, text), env={"KEY": "k"})
    assert caught.value.key == "queue.max_size"

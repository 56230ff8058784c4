"""The shipper configs in configs/shippers/: parsed, and checked for the settings that keep data safe.

Each config must point at a source that configs/shippers/relay-sources.toml defines, with
compression and a token, and with the shipper's own durability settings (Fluent Bit:
Retry_Limit no_limits + filesystem storage; Vector: disk buffer + acknowledgements;
syslog-ng: reliable disk buffer + flow control + no dropping on retryable answers).

Where the shipper's binary is installed, its own checker runs too (`fluent-bit --dry-run`,
`vector validate`, `syslog-ng --syntax-only`); Fluent Bit and Vector are not installable
from the registries this project reaches, so those two skip here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from relay.config import load
from relay.mapping import MappingLibrary
from tests.support import FIXTURES, PEER_MISSING, REPO_ROOT, fluent_bit_binary

REPO = REPO_ROOT
SHIPPERS = REPO / "configs" / "shippers"
VECTOR_FIXTURES = FIXTURES / "vector"
TOKEN_ENV = "${RELAY_TOKEN}"
RELAY_MAX_BODY = 16 * 2**20  # server.max_body_size default
VECTOR_MIN_DISK_BUFFER = 268_435_488


# --- a small parser for Fluent Bit's classic format -------------------------------------------


def parse_fluent_bit_classic(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """[SECTION] headers and `Key Value` lines -> [(SECTION, {key.lower(): [values]})].

    Keys are case-insensitive in Fluent Bit and may repeat (Header, Match_Regex...), so
    every value is kept. `#` starts a comment line; @SET/@INCLUDE are not used here.
    """
    sections: list[tuple[str, dict[str, list[str]]]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            raise AssertionError(f"line {number}: {line.split()[0]} is not expected in this config")
        header = re.fullmatch(r"\[([A-Za-z_]+)\]", line)
        if header:
            sections.append((header[1].upper(), {}))
            continue
        if not sections:
            raise AssertionError(f"line {number}: {line!r} is outside any [SECTION]")
        if not raw[:1].isspace():
            raise AssertionError(f"line {number}: an entry must be indented under its [SECTION]")
        key, _, value = line.partition(" ")
        if not value.strip():
            raise AssertionError(f"line {number}: {key} has no value")
        sections[-1][1].setdefault(key.lower(), []).append(value.strip())
    return sections


def fluent_bit_classic() -> dict[str, list[dict[str, str]]]:
    """{"SERVICE": [...], "INPUT": [...], "OUTPUT": [...]}, each entry {key: last value}."""
    out: dict[str, list[dict[str, str]]] = {}
    for name, entries in parse_fluent_bit_classic((SHIPPERS / "fluent-bit.conf").read_text()):
        out.setdefault(name, []).append({key: values[-1] for key, values in entries.items()})
    return out


def fluent_bit_yaml() -> dict[str, list[dict[str, str]]]:
    tree = yaml.safe_load((SHIPPERS / "fluent-bit.yaml").read_text())
    assert set(tree) <= {"service", "pipeline", "parsers", "env", "includes"}, set(tree)

    def plain(section: dict[str, Any]) -> dict[str, str]:
        # Fluent Bit reads every scalar as text; PyYAML turns on/true into booleans.
        return {k.lower(): ("on" if v is True else "off" if v is False else str(v)) for k, v in section.items()}

    return {"SERVICE": [plain(tree["service"])],
            "INPUT": [plain(s) for s in tree["pipeline"]["inputs"]],
            "OUTPUT": [plain(s) for s in tree["pipeline"]["outputs"]]}


FLUENT_BIT = {"fluent-bit.conf": fluent_bit_classic, "fluent-bit.yaml": fluent_bit_yaml}


def relay_sources() -> dict[str, Any]:
    return tomllib.loads((SHIPPERS / "relay-sources.toml").read_text())["sources"]


def source_for(path: str) -> dict[str, Any]:
    """The relay source that serves `path` (/ingest/NAME or a source's own `path`)."""
    for name, source in relay_sources().items():
        if path in (f"/ingest/{name}", source.get("path")):
            return source
    raise AssertionError(f"no source in relay-sources.toml serves {path}")


def truthy(value: str) -> bool:
    return value.lower() in ("on", "true", "yes", "1")


# --- Fluent Bit ---------------------------------------------------------------------------------


def test_fluent_bit_parser_reads_sections_and_rejects_stray_lines() -> None:
    parsed = parse_fluent_bit_classic("[SERVICE]\n    Flush 1\n# c\n[OUTPUT]\n    Name http\n    Header A b\n    Header C d\n")
    assert parsed == [("SERVICE", {"flush": ["1"]}), ("OUTPUT", {"name": ["http"], "header": ["A b", "C d"]})]
    with pytest.raises(AssertionError, match="outside any"):
        parse_fluent_bit_classic("Flush 1\n")
    with pytest.raises(AssertionError, match="has no value"):
        parse_fluent_bit_classic("[SERVICE]\n    Flush\n")


@pytest.mark.parametrize("name", sorted(FLUENT_BIT))
def test_fluent_bit_config_keeps_data_safe_and_points_at_the_relay(name: str) -> None:
    config = FLUENT_BIT[name]()
    (service,) = config["SERVICE"]
    (tail,) = [i for i in config["INPUT"] if i["name"] == "tail"]
    (http,) = [o for o in config["OUTPUT"] if o["name"] == "http"]

    # the nginx parser, and a read offset that survives restarts
    assert tail["parser"] == "nginx" and "parsers_file" in service
    assert tail.get("db"), "tail without DB re-reads or skips lines after a restart"
    # filesystem buffering: chunks survive a Fluent Bit restart and a long relay outage
    assert service.get("storage.path"), "storage.path is needed for filesystem storage"
    assert tail.get("storage.type") == "filesystem"
    assert http.get("storage.total_limit_size")
    # never drop a chunk the relay asked to retry
    assert http.get("retry_limit", "1").lower() in ("no_limits", "false"), http.get("retry_limit")
    # the output takes what the input tags
    assert re.fullmatch(http["match"].replace(".", r"\.").replace("*", ".*"), tail["tag"])
    # posts to a relay source that exists, in a format and compression the relay reads
    source = source_for(http["uri"])
    assert source["mapping"] == "fluentbit-nginx" and source.get("host"), "nginx combined carries no host"
    assert http["format"] == "json" and http["compress"] == "gzip"
    assert http["header_tag"] == source["tag_header"]
    # a token, from the environment: basic-auth password or a Bearer header
    headers = [v for k, v in http.items() if k == "header"]
    assert http.get("http_passwd") == TOKEN_ENV or f"Authorization Bearer {TOKEN_ENV}" in headers, http
    assert "${RELAY_HOST}" in http["host"] and "${RELAY_PORT}" in http["port"]


def test_fluent_bit_classic_and_yaml_configs_say_the_same_thing() -> None:
    classic, yaml_ = fluent_bit_classic(), fluent_bit_yaml()
    auth = {"http_user", "http_passwd", "header"}

    def normal(entry: dict[str, str]) -> dict[str, str]:
        return {k: "on" if truthy(v) else v.lower() for k, v in entry.items() if k not in auth}

    for section in ("SERVICE", "INPUT", "OUTPUT"):
        for a, b in zip(classic[section], yaml_[section], strict=True):
            assert normal(a) == normal(b), section


@pytest.mark.skipif(fluent_bit_binary() is None, reason=PEER_MISSING)
@pytest.mark.parametrize("name", sorted(FLUENT_BIT))
def test_fluent_bit_accepts_the_config(name: str) -> None:
    env = {"RELAY_HOST": "127.0.0.1", "RELAY_PORT": "8080", "RELAY_TOKEN": "t", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(fluent_bit_binary()), "--dry-run", "-c", str(SHIPPERS / name)], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Vector -------------------------------------------------------------------------------------


def vector_configs() -> dict[str, dict[str, Any]]:
    return {"vector.toml": tomllib.loads((SHIPPERS / "vector.toml").read_text()),
            "vector.yaml": yaml.safe_load((SHIPPERS / "vector.yaml").read_text())}


@pytest.mark.parametrize("name", ["vector.toml", "vector.yaml"])
def test_vector_config_keeps_data_safe_and_points_at_the_relay(name: str) -> None:
    config = vector_configs()[name]
    assert config.get("data_dir"), "checkpoints and disk buffers need data_dir"
    (source_name,) = [n for n, s in config["sources"].items() if s["type"] == "file"]
    (sink,) = [s for s in config["sinks"].values() if s["type"] == "http"]
    # the sink reads the remap that reads the file
    (remap_name,) = sink["inputs"]
    remap = config["transforms"][remap_name]
    assert remap["type"] == "remap" and remap["inputs"] == [source_name]
    assert 'parse_nginx_log(.message, "combined")' in remap["source"]

    # end-to-end acknowledgements and a disk buffer that blocks rather than drops
    assert sink["acknowledgements"]["enabled"] is True
    assert sink["buffer"]["type"] == "disk"
    assert sink["buffer"]["max_size"] >= VECTOR_MIN_DISK_BUFFER
    assert sink["buffer"].get("when_full", "block") == "block"
    # retries: unlimited attempts (the default, so unset or huge), with backoff and a timeout
    request = sink["request"]
    assert request.get("retry_attempts", 2**63 - 1) >= 2**31
    assert request["retry_initial_backoff_secs"] >= 1 and request["retry_max_duration_secs"] >= 1
    assert request["timeout_secs"] > 0
    # batches the relay takes in one request
    assert sink["batch"]["max_bytes"] < RELAY_MAX_BODY and sink["batch"]["max_events"] <= 1000

    # what it sends: JSON, gzip, a Bearer token from the environment, to an existing source
    url = sink["uri"].replace("${RELAY_URL:-", "").replace("}", "", 1)
    source = source_for(urlsplit(url).path)
    assert source["mapping"] == "vector-nginx" and source.get("host")
    assert sink["encoding"]["codec"] == "json" and sink["compression"] == "gzip"
    assert sink["auth"] == {"strategy": "bearer", "token": TOKEN_ENV}
    assert urlsplit(sink["healthcheck"]["uri"].replace("${RELAY_URL:-", "").replace("}", "", 1)).path == "/healthz"


def test_vector_toml_and_yaml_configs_are_the_same_pipeline() -> None:
    configs = vector_configs()

    def normal(tree: Any) -> Any:
        if isinstance(tree, dict):
            return {k: normal(v) for k, v in tree.items()}
        return tree.strip() if isinstance(tree, str) else tree

    assert normal(configs["vector.toml"]) == normal(configs["vector.yaml"])


def test_vector_fixture_was_modelled_on_the_shipped_config() -> None:
    """The synthesised nginx fixture uses the same remap and sink settings as vector.toml."""
    sink = vector_configs()["vector.toml"]["sinks"]["relay"]
    remap = vector_configs()["vector.toml"]["transforms"]["nginx"]["source"]
    request = json.loads((VECTOR_FIXTURES / "nginx-parsed.json.gzip" / "request.json").read_text())
    modelled = tomllib.loads("\n".join(request["vector"]["sink"]))["sinks"]["relay"]
    for key in ("encoding", "compression", "method"):
        assert modelled[key] == sink[key], key
    assert modelled["auth"]["strategy"] == sink["auth"]["strategy"]
    assert urlsplit(modelled["uri"]).path == "/ingest/vector"
    assert " ".join(request["vector"]["remap"].split()) == " ".join(remap.split())


@pytest.mark.skipif(not shutil.which("vector"), reason="vector is not installed (not on PyPI, npm or Debian)")
@pytest.mark.parametrize("name", ["vector.toml", "vector.yaml"])
def test_vector_validates_the_config(name: str, tmp_path: Path) -> None:
    env = {"RELAY_URL": "http://127.0.0.1:8080", "RELAY_TOKEN": "t", "PATH": "/usr/bin:/bin",
           "VECTOR_DATA_DIR": str(tmp_path)}
    result = subprocess.run(["vector", "validate", "--no-environment", str(SHIPPERS / name)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- syslog-ng ----------------------------------------------------------------------------------


def syslog_ng_destination() -> str:
    text = (SHIPPERS / "syslog-ng.conf").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    match = re.search(r"destination\s+\w+\s*\{\s*http\((.*?)\);\s*\};", text, re.S)
    assert match, "no http() destination"
    return match[1]


def test_syslog_ng_config_keeps_data_safe_and_points_at_the_relay() -> None:
    text = (SHIPPERS / "syslog-ng.conf").read_text()
    http = syslog_ng_destination()
    url = re.search(r'url\("`RELAY_URL`([^"]*)"\)', http)
    assert url, "url() must be `RELAY_URL` + the source path"
    source = source_for(url[1])
    assert source["mapping"] == "nginx-combined" and source.get("host")
    # batched NDJSON of {"message": ...}: one object per line, which nginx-combined reads
    assert re.search(r"batch-lines\((\d+)\)", http) and int(re.search(r"batch-lines\((\d+)\)", http)[1]) <= 1000
    assert int(re.search(r"batch-bytes\((\d+)\)", http)[1]) < RELAY_MAX_BODY
    assert re.search(r"body\('\$\(format-json [^)]*message=\$MESSAGE[^)]*\)'\)", http)
    assert 'delimiter("\\n")' in http and '"Content-Type: application/x-ndjson"' in http
    assert '"Authorization: Bearer `RELAY_TOKEN`"' in http
    # on disk, reliably; retryable answers never drop a batch; the source is held back when full
    assert re.search(r"disk-buffer\(\s*reliable\(yes\)", http)
    actions = dict(re.findall(r"(\d{3})\s*=>\s*(\w+)", re.search(r"response-action\((.*?)\)\s", http, re.S)[1]))
    for status in ("408", "429", "500", "502", "503", "504", "401", "403"):
        assert actions.get(status) == "disconnect", status
    assert re.search(r"log\s*\{[^}]*flags\(flow-control\)", text)
    assert "flags(no-parse)" in text


@pytest.mark.skipif(not shutil.which("syslog-ng"), reason="syslog-ng is not installed (Debian: syslog-ng-core, syslog-ng-mod-http)")
def test_syslog_ng_accepts_the_config_and_rejects_a_broken_copy(tmp_path: Path) -> None:
    env = {"RELAY_URL": "http://127.0.0.1:8080", "RELAY_TOKEN": "t", "PATH": "/usr/sbin:/usr/bin:/bin"}

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["syslog-ng", "--syntax-only", "-f", str(path)], env=env,
                              capture_output=True, text=True, timeout=30)

    result = check(SHIPPERS / "syslog-ng.conf")
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text((SHIPPERS / "syslog-ng.conf").read_text().replace("=> disconnect", "=> retry-forever", 1))
    assert check(broken).returncode != 0


# --- the relay side -------------------------------------------------------------------------------


def test_relay_sources_load_as_a_relay_config_with_every_mapping(tmp_path: Path) -> None:
    config_path = tmp_path / "relay.toml"
    config_path.write_text((SHIPPERS / "relay-sources.toml").read_text()
                           + '\n[sinks.profound]\nurl = "http://127.0.0.1:9/v1/logs/custom"\napi_key = "k"\n')
    env = {"FLUENTBIT_TOKEN": "fb", "VECTOR_TOKEN": "vec", "SYSLOG_NG_TOKEN": "sng",
           "RELAY_DEFAULT_HOST": "shop.example.com"}
    config = load(config_path, env=env)
    assert set(config.sources) == {"fluentbit", "vector", "syslog-ng"}
    library = MappingLibrary(config.mappings)
    for name, source in config.sources.items():
        library.get(source.mapping, source=name)  # compiles, or raises naming the problem
        assert source.tokens and all(source.tokens), f"{name} has no token"
        assert source.host, f"{name}: its format carries no virtual host"
    # the site's name comes from the environment: no invented host reaches the real API
    assert not any(s.host for s in load(config_path, env={**env, "RELAY_DEFAULT_HOST": ""}).sources.values())
    assert config.sources["fluentbit"].tokens == ["fb"]
    # a token must come from the environment: an unset variable is an error, not an open source
    with pytest.raises(Exception, match="VECTOR_TOKEN"):
        load(config_path, env={"FLUENTBIT_TOKEN": "fb", "SYSLOG_NG_TOKEN": "sng"})


def test_every_shipper_config_posts_to_a_relay_source() -> None:
    """Each relay source is used by some shipper config, and no config posts elsewhere."""
    paths = {fluent_bit_classic()["OUTPUT"][0]["uri"], fluent_bit_yaml()["OUTPUT"][0]["uri"],
             urlsplit(vector_configs()["vector.toml"]["sinks"]["relay"]["uri"].split("}", 1)[1] or "/").path,
             re.search(r'url\("`RELAY_URL`([^"]*)"\)', syslog_ng_destination())[1]}
    assert paths == {f"/ingest/{name}" for name in relay_sources()}


# --- the compatibility matrix in docs/shippers.md -------------------------------------------------


def test_every_test_the_shipper_docs_cite_exists() -> None:
    """docs/shippers.md backs each matrix cell with a test: each named test and fixture must exist."""
    doc = (REPO / "docs" / "shippers.md").read_text()
    defined = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    cited = set(re.findall(r"`(test_\w+)(?![\w.])", doc)) | set(re.findall(r"::(test_\w+)", doc))
    assert len(cited) > 15 and cited <= defined, sorted(cited - defined)
    fixture_dirs = {f"{shipper}/{p.name}" for shipper, root in
                    [("vector", VECTOR_FIXTURES), ("syslog-ng", FIXTURES / "syslog-ng")]
                    for p in root.iterdir() if p.is_dir()}
    cited_fixtures = {m for m in re.findall(r"fixture\[((?:vector|syslog-ng)/[^\]*]+)\]", doc)}
    assert cited_fixtures and cited_fixtures <= fixture_dirs, sorted(cited_fixtures - fixture_dirs)
    assert {f for f in fixture_dirs} <= cited_fixtures, "a fixture the matrix does not list"

"""The README is the product's face: its examples must work and its key tables must be complete."""

from __future__ import annotations

import re
import tomllib

import msgspec
import pytest

from relay.config import (
    Config,
    LogConfig,
    QueueConfig,
    ServerConfig,
    SinkConfig,
    SourceConfig,
    ValidationConfig,
)
from relay.mapping import MappingLibrary
from tests.support import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", README, flags=re.S)


def test_every_toml_example_parses() -> None:
    assert toml_blocks()
    for block in toml_blocks():
        tomllib.loads(block)


def test_mapping_examples_compile() -> None:
    mappings = {}
    for block in toml_blocks():
        mappings.update(tomllib.loads(block).get("mappings", {}))
    assert mappings, "the README shows no mapping"
    library = MappingLibrary(mappings, file="README.md")
    for name in mappings:
        assert library.get(name).name == name


@pytest.mark.parametrize("section,struct", [
    ("[server]", ServerConfig), ("[queue]", QueueConfig), ("[validation]", ValidationConfig),
    ("[log]", LogConfig), ("[sources.NAME]", SourceConfig), ("[sinks.NAME]", SinkConfig),
])
def test_every_config_key_is_documented(section: str, struct: type[msgspec.Struct]) -> None:
    start = README.index(f"### `{section}`")
    text = README[start:README.index("\n### ", start + 1)]
    if section == "[queue]":  # its keys continue in the table right after
        text += README[start:README.index("### `[validation]`")]
    documented = set(re.findall(r"^\| `([a-z_]+)`", text, flags=re.M))
    documented |= {key for pair in re.findall(r"^\| `([a-z_]+)`, `([a-z_]+)`", text, flags=re.M) for key in pair}
    assert set(struct.__struct_fields__) <= documented, set(struct.__struct_fields__) - documented


def test_top_level_sections_are_documented() -> None:
    for field in Config.__struct_fields__:
        if field != "file":
            assert f"[{field}" in README, field


def test_quick_start_is_exactly_make_run_and_make_test() -> None:
    quick = README[README.index("## Quick start"):README.index("## How it works")]
    first_block = re.search(r"```sh\n(.*?)```", quick, flags=re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_shipper_examples_match_the_tested_configs() -> None:
    root = REPO_ROOT / "configs" / "shippers"
    fluent_bit = re.search(r"### Fluent Bit\n.*?```ini\n(.*?)```", README, flags=re.S)
    assert fluent_bit is not None
    assert fluent_bit.group(1).strip() in (root / "fluent-bit.conf").read_text()
    vector_block = next(b for b in toml_blocks() if "[sinks.relay]" in b)
    shown = tomllib.loads(vector_block)["sinks"]["relay"]
    shipped = tomllib.loads((root / "vector.toml").read_text())["sinks"]["relay"]
    for key, value in shown.items():
        assert shipped[key] == value, key

"""The native decoders on what real clients sent, byte for byte (tests/fixtures/fluent-bit-native,
tests/fixtures/elasticsearch-py): every line of the tailed log becomes one record, and the
nginx-json mapping makes the same entries of it whichever protocol carried it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from relay.mapping import MappingLibrary
from relay.models import RecordContext
from relay.stages.compression import decompress
from relay.stages.protocols import decoder
from relay.stages.schema import ValidationPolicy, Validator
from tests.support import FIXTURES

SOURCE = FIXTURES / "fluent-bit" / "nginx-json.json" / "source.log"
CASES = {"fluent-bit-native/es.gzip": "elasticsearch", "fluent-bit-native/splunk.gzip": "splunk_hec",
         "fluent-bit-native/datadog.gzip": "datadog", "elasticsearch-py/bulk": "elasticsearch"}
NOW = 1795600000.0  # 2026-11-25T07:06:40Z: the captured traffic is of that day


def captured(folder: Path) -> tuple[bytes, dict[str, str], str]:
    meta = json.loads((folder / "request.json").read_text())
    headers = {name.lower(): value for name, value in meta["headers"]}
    return (folder / "body.bin").read_bytes(), headers, meta["path"]


def entries(records: list[Any]) -> list[Any]:
    mapper = MappingLibrary({}).get("nginx-json")
    validator = Validator(ValidationPolicy(on_invalid="repair", max_age=86400 * 30, max_future=86400, now=NOW))
    result = mapper.map_records(records, RecordContext(source="t"), validator, None)
    assert result.rejections == []
    return [msgspec.to_builtins(entry) for entry in result.entries]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_tailed_line_is_one_record_mapped_as_the_line_itself(name: str) -> None:
    body, headers, path = captured(FIXTURES / name)
    data = decompress(body, headers.get("content-encoding"), 16 * 2**20)
    decoded = decoder(CASES[name])(data, content_type=headers.get("content-type"), path=path)
    lines = [json.loads(line) for line in SOURCE.read_text().splitlines() if line]
    assert decoded.errors == [] and len(decoded.records) == len(lines) == 200
    for record, line in zip(decoded.records, lines, strict=True):
        assert {k: record[k] for k in line} == line  # the record as logged, metadata beside it
    assert entries(decoded.records) == entries(lines)

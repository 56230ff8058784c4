"""The protocol framework: every protocol has both halves, routes resolve as documented, and plain
HTTP sources behave as before protocols existed (405 for other methods, 404 naming the paths)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import relay.server.protocols as server_protocols
import relay.stages.protocols as stage_protocols
from relay.config import PROTOCOLS
from relay.server.protocols import Table, protocol
from tests.unit.server.protocols.test_elasticsearch import call
from tests.unit.server.test_ingest import run, serving


def _modules(package: object) -> set[str]:
    return {info.name for info in pkgutil.iter_modules(package.__path__)}  # type: ignore[attr-defined]


def test_every_protocol_has_a_decoder_and_a_server_half_named_as_the_config_names_it() -> None:
    decoders, servers = _modules(stage_protocols), _modules(server_protocols)
    assert servers - {"http"} == decoders  # http decodes through stages.decode
    assert decoders <= set(PROTOCOLS)
    for name in servers:
        assert protocol(name).name == name
        if name != "http":
            assert callable(importlib.import_module(f"relay.stages.protocols.{name}").decode)


def test_resolution_exact_path_then_longest_prefix_then_the_root(tmp_path: Path) -> None:
    async def test() -> None:
        sources = ('[sources.plain]\npath = "/es/plain"\n[sources.es]\nprotocol = "elasticsearch"\npath = "/es"\n'
                   '[sources.es2]\nprotocol = "elasticsearch"\npath = "/es/two"\n[sources.dd]\nprotocol = "datadog"\n')
        async with serving(tmp_path, sources=sources) as (client, runtime):
            table = Table(runtime.routes)
            assert table.resolve("POST", "/es/plain").candidates[0].name == "plain"  # type: ignore[union-attr]
            found = table.resolve("POST", "/es/two/_bulk")
            assert found is not None and found.candidates[0].name == "es2" and found.subpath == "/_bulk"
            found = table.resolve("PUT", "/es/web/_bulk")
            assert found is not None and found.candidates[0].name == "es" and found.subpath == "/web/_bulk"
            found = table.resolve("POST", "/_bulk")
            assert found is not None and [r.name for r in found.candidates] == ["es", "es2"]
            found = table.resolve("POST", "/api/v2/logs")
            assert found is not None and found.protocol.name == "datadog"
            found = table.resolve("POST", "/es/plain/_bulk")  # below a plain path: the ES prefix's, index "plain"
            assert found is not None and found.candidates[0].name == "es" and found.subpath == "/plain/_bulk"
            # plain HTTP as before: other methods 405 with Allow, unknown POST paths 404 naming the paths
            status, headers, answer = await call(client, "GET", "/ingest/plain")
            assert status == 405 and headers["Allow"] == "POST" and answer["status"] == "error"
            status, _, answer = await call(client, "POST", "/nowhere", b"[]")
            assert status == 404 and "/ingest/plain" in answer["error"]

    run(test)

"""Elasticsearch sources through the real app: `_bulk` answers per item, handshakes, the product header,
token picking between sources sharing the root, and the official Python client's bulk helper."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from tests.unit.server.test_ingest import entry, run, serving

SOURCES = """\
[sources.es]
protocol = "elasticsearch"
tokens = ["es-token"]

[sources.es-eu]
protocol = "elasticsearch"
path = "/eu"
tokens = ["eu-token"]

[sources.plain]
tokens = ["plain-token"]
"""


def bulk(*docs: dict[str, Any], op: str = "create") -> bytes:
    return b"".join(json.dumps({op: {"_index": "web"}}).encode() + b"\n" + json.dumps(d).encode() + b"\n"
                    for d in docs)


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"elastic:{password}".encode()).decode()


async def call(client: Any, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, Any, Any]:
    async with client.request(method, path, data=body, headers=headers) as response:
        raw = await response.read()
        return response.status, response.headers, json.loads(raw) if raw else None


def test_bulk_answers_each_item_after_the_commit(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            body = gzip.compress(bulk(entry(0), entry(1, status_code=999), entry(2)) +
                                 b'{"delete":{"_id":"x"}}\n')
            status, headers, answer = await call(client, "POST", "/_bulk", body, Authorization=basic("es-token"),
                                                 **{"Content-Type": "application/x-ndjson",
                                                    "Content-Encoding": "gzip"})
            assert status == 200 and headers["X-Elastic-Product"] == "Elasticsearch", answer
            assert answer["errors"] is True and isinstance(answer["took"], int)
            statuses = [(op, item["status"]) for one in answer["items"] for op, item in one.items()]
            assert statuses == [("create", 201), ("create", 400), ("create", 201), ("delete", 400)]
            assert "status_code" in answer["items"][1]["create"]["error"]["reason"]
            assert answer["items"][0]["create"]["_index"] == "web"
            assert runtime.outboxes["up"].queued_entries == 2

    run(test)


def test_the_token_picks_the_source_among_those_sharing_the_root(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            metric = runtime.metrics.registry.get_sample_value
            for token in ("es-token", "eu-token"):
                status, _, answer = await call(client, "PUT", "/web/_bulk", bulk(entry(0)),
                                               Authorization=basic(token))
                assert status == 200 and not answer["errors"], answer
            api_key = base64.b64encode(b"id:eu-token").decode()
            status, _, _ = await call(client, "POST", "/eu/_bulk", bulk(entry(1)), Authorization=f"ApiKey {api_key}")
            assert status == 200
            assert metric("relay_requests_total", {"source": "es", "code": "200"}) == 1
            assert metric("relay_requests_total", {"source": "es-eu", "code": "200"}) == 2
            # the eu prefix serves only its own source: another source's token is refused there
            status, headers, answer = await call(client, "POST", "/eu/_bulk", bulk(entry(2)),
                                                 Authorization=basic("es-token"))
            assert status == 401 and headers["X-Elastic-Product"] == "Elasticsearch"
            assert answer["status"] == 401 and answer["error"]["type"] == "security_exception"
            status, _, _ = await call(client, "POST", "/_bulk", bulk(entry(2)), Authorization=basic("nope"))
            assert status == 401
            # a plain HTTP source's token opens no Elasticsearch path
            status, _, _ = await call(client, "POST", "/_bulk", bulk(entry(2)), Authorization=basic("plain-token"))
            assert status == 401
            assert runtime.outboxes["up"].queued_entries == 3

    run(test)


def test_whole_request_errors_are_elasticsearch_errors(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            auth = basic("es-token")
            status, headers, answer = await call(client, "POST", "/_bulk", b"{nope\n{}\n", Authorization=auth)
            assert status == 400 and headers["X-Elastic-Product"] == "Elasticsearch"
            assert answer["error"]["type"] == "illegal_argument_exception" and "line 1" in answer["error"]["reason"]
            status, _, answer = await call(client, "POST", "/_bulk", bulk(entry(0)), Authorization=auth,
                                           **{"Content-Type": "text/csv"})
            assert status == 415 and answer["status"] == 415
            assert runtime.outboxes["up"].queued_entries == 0
            # a POST elsewhere is no handshake: nothing is acknowledged that was not committed
            status, _, answer = await call(client, "POST", "/web/_doc", b"{}", Authorization=auth)
            assert status == 404 and answer["status"] == "error"

    run(test)


@pytest.mark.parametrize("method,path,key", [
    ("GET", "/", "version"), ("HEAD", "/", None), ("GET", "/_license", "license"), ("GET", "/_xpack", "features"),
    ("GET", "/_cluster/health", "status"), ("GET", "/_nodes/http", "nodes"),
    ("GET", "/_index_template/filebeat-9.1.0", None), ("PUT", "/_index_template/filebeat-9.1.0", "acknowledged"),
    ("HEAD", "/_template/logstash", None), ("PUT", "/_ilm/policy/filebeat", "acknowledged"),
    ("GET", "/_data_stream/logs-nginx.access-default", None), ("GET", "/eu/", "version"),
])
def test_handshakes_are_answered_without_a_token_and_with_the_product_header(
        tmp_path: Path, method: str, path: str, key: str | None) -> None:
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, _):
            status, headers, answer = await call(client, method, path)
            assert status == 200 and headers["X-Elastic-Product"] == "Elasticsearch"
            if key:
                assert key in answer
            if path in ("/", "/eu/") and method == "GET":
                assert answer["version"]["number"].startswith("9.")

    run(test)


def test_the_official_clients_bulk_helper(tmp_path: Path) -> None:
    """elasticsearch 9's helpers.bulk: PUT /_bulk, compatible-with=9, and the product check on the answer."""
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, runtime):
            url = f"http://127.0.0.1:{client.server.port}"

            def send() -> tuple[int, list[Any]]:
                with Elasticsearch(url, basic_auth=("elastic", "es-token")) as es:
                    assert es.info()["version"]["number"].startswith("9.")
                    actions = [{"_op_type": "create", "_index": "web", **entry(i)} for i in range(250)]
                    actions.insert(3, {"_op_type": "create", "_index": "web", **entry(3, status_code=999)})
                    ok, errors = helpers.bulk(es, actions, chunk_size=100, raise_on_error=False)
                    return ok, errors

            ok, errors = await asyncio.to_thread(send)
            assert ok == 250 and len(errors) == 1 and errors[0]["create"]["status"] == 400
            assert runtime.outboxes["up"].queued_entries == 250

    run(test)


def test_the_root_is_the_consoles_for_a_browser_and_the_handshake_for_a_client(tmp_path: Path) -> None:
    """GET / is both Elasticsearch's version handshake and where an operator's browser lands."""
    async def test() -> None:
        async with serving(tmp_path, sources=SOURCES) as (client, _):
            page = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml"},
                                    allow_redirects=False)
            assert page.status == 302 and page.headers["Location"] == "/-/console"
            status, headers, answer = await call(client, "GET", "/")
            assert status == 200 and headers["X-Elastic-Product"] == "Elasticsearch"
            assert answer["version"]["number"].startswith("9.")

    run(test)

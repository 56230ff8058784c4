"""The ingest route's contract (README "Status codes"): each status with its JSON body, Retry-After,
and who may write. The real app from server/app.py with a real Runtime on a temp queue dir,
served by aiohttp's TestServer on 127.0.0.1; the sink points at a closed loopback port, so what
is accepted stays queued.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler

from relay.config import load
from relay.runtime import Runtime
from relay.server.app import build_app, runner_options
from relay.tools.local_config import relay_toml, sink_toml

NOW = "2026-11-25T09:30:00Z"
TOKENS = """\
[sources.locked]
tokens = ["s3cret", "other"]

[sources.open]
allow_anonymous = true

[sources.local]
"""
ELSEWHERE = "198.51.100.7"  # a client on another machine (TEST-NET-2)


def entry(i: int, **overrides: Any) -> dict[str, Any]:
    return {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "host": "www.example.com", "path": f"/p/{i}",
            "status_code": 200, "ip": "192.0.2.1", "user_agent": "ua", **overrides}


def _peer(address: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The TCP peer as another machine would be seen (what request.remote says), all else real."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request.clone(remote=address))

    return middleware


@asynccontextmanager
async def serving(tmp_path: Path, *, remote: str | None = None, **options: Any) -> AsyncIterator[
        tuple[TestClient[web.Request, web.Application], Runtime]]:
    path = tmp_path / "relay.toml"
    sink = sink_toml("up", "http://127.0.0.1:9/v1/logs/custom", "k", retry_initial_backoff="5s")
    path.write_text(relay_toml(port=0, queue_dir=tmp_path / "queue", sinks=sink, now=NOW, shutdown_grace="2s",
                               **options))
    runtime = Runtime(load(path, env={}))
    app = build_app(runtime)
    if remote is not None:
        app.middlewares.append(_peer(remote))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**runner_options(runtime.config.server))  # as `relay serve` runs it
    async with TestClient(server) as client:
        yield client, runtime


async def post(client: TestClient[web.Request, web.Application], path: str, body: bytes,
               **headers: str) -> tuple[int, dict[str, Any], Any]:
    headers.setdefault("Content-Type", "application/json")
    async with client.post(path, data=body, headers=headers) as response:
        return response.status, dict(response.headers), json.loads(await response.read())


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def _is_error(answer: Any, *words: str) -> None:
    assert set(answer) == {"status", "error"} and answer["status"] == "error", answer
    for word in words:
        assert word in answer["error"], answer


def test_200_names_rejections_and_the_accepted_entries_are_queued(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path) as (client, runtime):
            body = gzip.compress(json.dumps([entry(0), entry(1, status_code=999), entry(2)]).encode())
            status, _, answer = await post(client, "/v1/logs/custom", body, **{"Content-Encoding": "gzip"})
            assert status == 200, answer
            assert answer["status"] == "accepted" and (answer["accepted"], answer["rejected"], answer["filtered"]) \
                == (2, 1, 0)
            assert len(answer["errors"]) == 1 and answer["errors"][0].startswith("$[1].status_code: ")
            # the answer came after the commit: the entries are in the sink's inbox already
            assert runtime.outboxes["up"].queued_entries == 2
            text = runtime.metrics.registry.get_sample_value
            assert text("relay_requests_total", {"source": "custom", "code": "200"}) == 1

    run(test)


def test_400_when_nothing_decodes(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path) as (client, runtime):
            status, _, answer = await post(client, "/ingest/custom", b"{this is not json")
            assert status == 400
            _is_error(answer)
            assert runtime.outboxes["up"].queued_entries == 0

    run(test)


def test_404_names_the_path_and_the_configured_ones(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path) as (client, _):
            status, _, answer = await post(client, "/ingest/nowhere", b"[]")
            assert status == 404
            _is_error(answer, "/ingest/nowhere", "/ingest/custom", "/v1/logs/custom")

    run(test)


def test_413_over_max_body_size_compressed_or_decompressed(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, max_body_size="64KiB", queue_max_size="1MiB") as (client, _):
            big = json.dumps([entry(i) for i in range(1000)]).encode()  # ~170KB of JSON
            assert len(big) > 64 * 1024
            status, _, answer = await post(client, "/ingest/custom", big)
            assert status == 413
            _is_error(answer, str(64 * 1024))
            squeezed = gzip.compress(big)
            assert len(squeezed) < 64 * 1024
            status, _, answer = await post(client, "/ingest/custom", squeezed, **{"Content-Encoding": "gzip"})
            assert status == 413
            _is_error(answer, "limit")

    run(test)


def test_415_names_what_cannot_be_read(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path) as (client, _):
            status, _, answer = await post(client, "/ingest/custom", b"<a/>", **{"Content-Type": "application/xml"})
            assert status == 415
            _is_error(answer, "application/xml")

    run(test)


def test_503_with_retry_after_when_shutting_down_and_when_the_queue_is_full(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, max_body_size="64KiB", queue_max_size="256KiB") as (client, runtime):
            # the queue stores entries compressed: user agents that do not compress fill it
            body = json.dumps([entry(i, user_agent=os.urandom(250).hex()) for i in range(80)]).encode()
            statuses = []
            for _ in range(40):  # nothing drains (the sink's port is closed): the queue fills
                status, headers, answer = await post(client, "/ingest/custom", body)
                statuses.append(status)
                if status != 200:
                    break
            assert statuses[0] == 200 and statuses[-1] == 503, statuses
            assert int(headers["Retry-After"]) >= 1
            _is_error(answer)
            runtime.draining = True
            status, headers, answer = await post(client, "/ingest/custom", json.dumps([entry(0)]).encode())
            assert status == 503 and int(headers["Retry-After"]) >= 1
            _is_error(answer, "shutting down")

    run(test)


def test_401_token_rules(tmp_path: Path) -> None:
    body = json.dumps([entry(0)]).encode()

    async def test() -> None:
        async with serving(tmp_path, sources=TOKENS) as (client, _):
            status, headers, answer = await post(client, "/ingest/locked", body)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
            _is_error(answer, "token")
            status, _, _ = await post(client, "/ingest/locked", body, Authorization="Bearer wrong")
            assert status == 401
            basic = base64.b64encode(b"fluent:other").decode()
            for headers in ({"Authorization": "Bearer s3cret"}, {"x-api-key": "other"},
                            {"Authorization": f"Basic {basic}"}):
                status, _, answer = await post(client, "/ingest/locked", body, **headers)
                assert status == 200 and answer["accepted"] == 1, (headers, answer)
            # a source without tokens answers a client on this machine
            status, _, _ = await post(client, "/ingest/local", body)
            assert status == 200

    run(test)


def test_sources_without_tokens_answer_other_machines_only_with_allow_anonymous(tmp_path: Path) -> None:
    body = json.dumps([entry(0)]).encode()

    async def test() -> None:
        async with serving(tmp_path, sources=TOKENS, remote=ELSEWHERE) as (client, _):
            status, headers, answer = await post(client, "/ingest/local", body)
            assert status == 401 and "WWW-Authenticate" in headers
            _is_error(answer, "sources.local.tokens", "allow_anonymous")
            # forwarded-for headers are anyone's to write: they do not make a client local
            status, _, _ = await post(client, "/ingest/local", body, **{"X-Forwarded-For": "127.0.0.1"})
            assert status == 401
            status, _, answer = await post(client, "/ingest/open", body)
            assert status == 200 and answer["accepted"] == 1
            status, _, _ = await post(client, "/ingest/locked", body, Authorization="Bearer s3cret")
            assert status == 200

    run(test)

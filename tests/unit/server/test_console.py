"""The console's routes (README "The console"): who may open it, the session cookie, the state it
polls (and that it never carries a secret), and the playground giving exactly `relay map`'s report.
The real app with a real Runtime on a temp queue dir, served by aiohttp's TestServer on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.__main__ import main
from relay.config import load
from relay.runtime import Runtime
from relay.server.app import build_app, runner_options
from relay.server.auth import CONSOLE_COOKIE
from relay.server.console import routes
from relay.tools.local_config import relay_toml, sink_toml
from tests.unit.server.test_ingest import _peer, entry

NOW = "2026-11-25T09:30:00Z"
TOKEN = "admin-s3cret-token"
KEY = "upstream-api-key-123"
Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def serving(tmp_path: Path, *, remote: str | None = None, admin_token: str | None = None,
                  url: str = "http://127.0.0.1:9/v1/logs/custom") -> AsyncIterator[tuple[Client, Runtime]]:
    path = tmp_path / "relay.toml"
    sink = sink_toml("up", url, KEY, retry_initial_backoff="5s")
    path.write_text(relay_toml(port=0, queue_dir=tmp_path / "queue", sinks=sink, now=NOW, shutdown_grace="2s",
                               admin_token=admin_token))
    runtime = Runtime(load(path, env={}))
    app = build_app(runtime)
    if remote is not None:
        app.middlewares.append(_peer(remote))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**runner_options(runtime.config.server))
    async with TestClient(server) as client:
        yield client, runtime


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


async def get(client: Client, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with client.get(path, allow_redirects=False, **kwargs) as response:
        return response.status, dict(response.headers), await response.read()


def test_page_and_assets_come_from_the_relay_alone(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path) as (client, _):
            status, headers, page = await get(client, "/-/console")
            assert status == 200 and headers["Content-Type"].startswith("text/html")
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert b'src="/-/console/console.js"' in page and b'href="/-/console/console.css"' in page
            for name in ("console.js", "console.css"):
                status, headers, body = await get(client, f"/-/console/{name}")
                assert status == 200, name
                text = body.decode()
                # no CDN, no web font, no remote anything (the SVG namespace is a name, not a fetch)
                assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", text), name
                assert "@import" not in text and ".innerHTML" not in text
            assert not re.findall(rb"(src|href)=\"https?:", page)
            assert (await get(client, "/-/console/nope.js"))[0] == 404
            status, headers, _ = await get(client, "/")
            assert status == 302 and headers["Location"] == "/-/console"

    run(test)


def test_without_a_token_the_console_answers_loopback_clients_only(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, remote="198.51.100.7") as (client, _):
            status, _, page = await get(client, "/-/console")
            assert status == 403 and b"server.admin_token" in page
            assert (await get(client, "/-/console/state"))[0] == 403
            assert (await get(client, "/-/console/console.css"))[0] == 200  # static, no data: the form needs it
            async with client.post("/-/console/map", json={"mapping": "nginx-json", "records": "{}"}) as response:
                assert response.status == 403

    run(test)


def test_the_token_is_exchanged_for_a_session_cookie_and_never_shown(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path, admin_token=TOKEN, remote="198.51.100.7") as (client, _):
            status, _, page = await get(client, "/-/console")
            assert status == 401 and b'name="token"' in page  # the login form
            assert (await get(client, "/-/console/state"))[0] == 403
            status, _, page = await get(client, "/-/console?token=wrong")
            assert status == 403 and b"wrong" not in page
            status, headers, _ = await get(client, "/-/console?token=" + TOKEN)
            assert status == 303 and headers["Location"] == "/-/console"  # the token leaves the address bar
            cookie = headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/-/" in cookie
            assert TOKEN not in cookie
            status, _, page = await get(client, "/-/console")  # the client keeps the cookie
            assert status == 200 and TOKEN.encode() not in page
            status, _, state = await get(client, "/-/console/state")
            assert status == 200 and TOKEN.encode() not in state
            body = {"mapping": "nginx-json", "records": json.dumps(entry(0))}
            async with client.post("/-/console/map", json=body) as response:
                assert response.status == 403  # a cookie alone does not make a POST: a cross-site form could
            async with client.post("/-/console/map", json=body, headers={"X-Relay-Console": "1"}) as response:
                assert response.status == 200
            async with client.post("/-/reload", headers={"X-Relay-Console": "1"}) as response:
                assert response.status == 200  # the admin endpoints take the session too
            client.session.cookie_jar.clear()
            status, headers, _ = await get(client, "/-/console/state", headers={"Authorization": "Bearer " + TOKEN})
            assert status == 200
            async with client.post("/-/console/login", data={"token": TOKEN}, allow_redirects=False) as response:
                assert response.status == 303 and CONSOLE_COOKIE in response.headers["Set-Cookie"]
            client.session.cookie_jar.clear()
            forged = {CONSOLE_COOKIE: TOKEN}  # the token itself is not a session
            assert (await get(client, "/-/console/state", cookies=forged))[0] == 403

    run(test)


def test_state_counts_traffic_and_carries_no_secret(tmp_path: Path) -> None:
    async def test() -> None:
        url = "http://user:pa55word@127.0.0.1:9/v1/logs/custom?api_key=q-secret"
        async with serving(tmp_path, admin_token=TOKEN, url=url) as (client, runtime):
            body = json.dumps([entry(0), entry(1, status_code=999), entry(2, method="get")]).encode()
            async with client.post("/v1/logs/custom", data=body) as response:
                assert response.status == 200
            await runtime.reload()
            status, _, raw = await get(client, "/-/console/state", headers={"Authorization": "Bearer " + TOKEN})
            assert status == 200
            for secret in (TOKEN, KEY, "pa55word", "q-secret", "user:"):
                assert secret.encode() not in raw, secret
            state = json.loads(raw)
            custom = next(s for s in state["sources"] if s["name"] == "custom")
            assert custom["totals"]["accepted"] == 2 and custom["totals"]["rejected"] == 1
            assert custom["totals"]["repairs"] == 1 and custom["totals"]["requests"] == 1
            assert custom["top"] == [{"reason": "range", "count": 1}]
            (sink,) = state["sinks"]
            assert sink["url"] == "http://127.0.0.1:9/v1/logs/custom"
            assert sink["backlog"]["entries"] == 2 and sink["state"] in ("running", "backing_off")
            assert state["reload"]["result"] == "ok" and state["uptime"] >= 0
            assert state["disk"]["max"] == 1 << 30 and state["disk"]["free"] > 0
            assert "nginx-json" in state["mappings"] and state["window"] == 900
            series = custom["series"]
            assert set(series) == {"t", "requests", "accepted", "repairs", "rejected", "filtered"}
            assert len(series["t"]) == len(series["accepted"]) <= 1  # one sample at start, and now

    run(test)


def test_last_sink_failure_is_shown_with_its_credentials_masked(tmp_path: Path) -> None:
    async def test() -> None:
        async with serving(tmp_path) as (client, runtime):
            dispatcher = runtime.dispatchers["up"]
            dispatcher._set_state("backing_off", f"503: upstream said no to key {KEY}", 1.0)
            _, _, raw = await get(client, "/-/console/state")
            (sink,) = json.loads(raw)["sinks"]
            assert sink["state"] == "backing_off" and sink["error"] == "503: upstream said no to key ***"
            dispatcher._set_state("running", None)
            (sink,) = json.loads((await get(client, "/-/console/state"))[2])["sinks"]
            assert sink["error"] is None and sink["last_failure"]["error"].startswith("503")

    run(test)


def test_playground_answers_what_relay_map_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = "\n".join(json.dumps(r) for r in [entry(0), entry(1, status_code=999), entry(2, method="get"),
                                                {"path": "/no-host"}]) + "\n"
    answers: dict[str, Any] = {}

    async def test() -> None:
        async with serving(tmp_path) as (client, _):
            body = {"mapping": "profound", "host": "www.example.com", "records": records}
            async with client.post("/-/console/map", json=body) as response:
                assert response.status == 200
                answers["console"] = await response.json()
            async with client.post("/-/console/map", json={**body, "mapping": "nope"}) as response:
                assert response.status == 400 and "unknown mapping 'nope'" in (await response.json())["error"]
            async with client.post("/-/console/map", json={**body, "records": "x" * (1 << 20 | 1)}) as response:
                assert response.status == 400 and "at most" in (await response.json())["error"]
            async with client.post("/-/console/map", json={"records": "{}"}) as response:
                assert response.status == 400 and "mapping" in (await response.json())["error"]

    run(test)
    sample = tmp_path / "sample.ndjson"
    sample.write_text(records)
    config = str(tmp_path / "relay.toml")
    assert main(["map", "profound", str(sample), "-c", config, "--host", "www.example.com", "--format", "json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    console = answers["console"]
    table = console.pop("table")
    assert console == printed
    assert main(["map", "profound", str(sample), "-c", config, "--host", "www.example.com", "--limit", "1000"]) == 1
    assert table == capsys.readouterr().out.rstrip("\n")
    assert (printed["summary"]["entries"], printed["summary"]["rejected"], printed["summary"]["repaired"]) == (2, 2, 1)


def test_console_route_list_is_what_readme_documents() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    for path in ("/-/console", "/-/console/state", "/-/console/map", "/-/console/login"):
        assert path in readme, path
    assert routes.ASSETS

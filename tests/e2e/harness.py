"""The relay as a real process, and a load client, for the end-to-end tests."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import aiohttp

from relay.tools import local_config
from tests.support import FIXTURES, Process, free_port, http_request, wait_until

PINNED_NOW = "2026-11-25T09:30:00+00:00"  # the fixtures' traffic is dated 2026-11-25


def fixture(name: str) -> tuple[bytes, dict[str, str], list[Any]]:
    """A captured Fluent Bit request: body bytes, headers, decoded records."""
    root = FIXTURES / "fluent-bit" / name
    request = json.loads((root / "request.json").read_text())
    headers = {k: v for k, v in request["headers"] if k.lower() in ("content-type", "content-encoding")}
    records = [json.loads(line) for line in (root / "records.jsonl").read_text().splitlines() if line]
    return (root / "body.bin").read_bytes(), headers, records


def sink_toml(name: str, url: str, api_key: str = "test-key", **extra: Any) -> str:
    """A sink with the tests' short timings (batches and retries in well under a second)."""
    options = {"batch_timeout": "200ms", "retry_initial_backoff": "50ms", "retry_max_backoff": "1s",
               "request_timeout": "5s", **extra}
    return local_config.sink_toml(name, url, api_key, **options)


class Relay(Process):
    """`relay serve` on a free port with a config written into tmp_dir; start() waits for /healthz."""

    def __init__(self, tmp_dir: Path, sinks: str, *, sync: str = "normal", extra: str = "",
                 name: str = "relay", env: Mapping[str, str] | None = None, **config: Any) -> None:
        """`config`: the further local_config.relay_toml options: `sources` replaces the default
        fluentbit + custom sources; `queue_max_size` / `max_body_size` shrink the limits; `workers`
        is 1 unless given (the product's default, "auto", would start one per core in every test)."""
        config.setdefault("workers", 1)
        self.port = free_port()
        self.config_path = Path(tmp_dir) / f"{name}.toml"
        self.config_path.write_text(local_config.relay_toml(
            port=self.port, queue_dir=Path(tmp_dir) / "queue", sinks=sinks, now=PINNED_NOW, sync=sync,
            extra=extra, log_level="info", **config))
        super().__init__(["serve", "-c", str(self.config_path)], tmp_dir, name=name, env=env)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        super().start()
        wait_until(lambda: self._alive_or_fail() and http_request(self.base_url + "/healthz").status == 200,
                   timeout=20, ignore=(OSError,), message=lambda: f"relay /healthz\n{self.log_tail()}")
        return self

    def metrics(self) -> str:
        return http_request(self.base_url + "/metrics").body.decode()


class LoadThread(threading.Thread):
    """Load clients on an event loop of their own in a thread, until stop(); stop() raises what broke them."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._halt = threading.Event()  # the clients' loops end when it is set
        self.error: BaseException | None = None

    async def _main(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)
        assert not self.is_alive(), "load clients did not stop"
        if self.error:
            raise self.error


def entries(start: int, n: int, **overrides: Any) -> list[dict[str, Any]]:
    """n valid upstream entries whose path carries a unique number."""
    return [{"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "host": "www.example.com",
             "path": f"/e2e/{i}", "status_code": 200, "ip": "192.0.2.1", "user_agent": "e2e",
             **overrides} for i in range(start, start + n)]


async def post_all(url: str, bodies: Sequence[tuple[Any, bytes]], *, headers: Mapping[str, str],
                   concurrency: int = 8, stop_on_error: bool = False) -> list[tuple[Any, int, Any]]:
    """POST each (tag, body) with `concurrency` clients; returns (tag, status, json or None).

    A connection error counts as status 0 (the request may or may not have been committed)."""
    results: list[tuple[Any, int, Any]] = []
    pending = list(reversed(bodies))

    async def client(session: aiohttp.ClientSession) -> None:
        while pending:
            tag, body = pending.pop()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    try:
                        answer = json.loads(payload)
                    except ValueError:
                        answer = None
                    results.append((tag, response.status, answer))
            except (TimeoutError, aiohttp.ClientError, OSError):
                results.append((tag, 0, None))
                if stop_on_error:
                    pending.clear()

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return results


def gz_json(value: Any) -> bytes:
    return gzip.compress(json.dumps(value).encode(), compresslevel=1)

"""Several relays behind a real load balancer (haproxy), one of them killed -9 under load.

What must hold, as README "Scaling out" promises:
- every entry haproxy answered 2xx for reaches upstream, counted by unique id, even the
  ones the killed relay had acknowledged and not yet delivered (they wait on its disk);
- shippers carry on through the other relay: requests sent after the kill succeed
  (haproxy retries a refused connection on the other server and its health check
  takes the dead one out);
- the killed relay, restarted on its own queue, delivers what it held.

The upstream is held at 503 around the kill so that both relays hold a backlog when one
dies; otherwise the kill would find an empty queue and prove nothing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import LoadThread, Relay, entries, gz_json, sink_toml
from tests.support import MockUpstream, Process, free_port, http_request, wait_until

HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (make system-deps installs it)")

KEY = "test-key"
PER_BODY = 20
HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def haproxy_cfg(port: int, stats_port: int, relays: dict[str, int]) -> str:
    servers = "\n".join(f"    server {name} 127.0.0.1:{relay_port} check" for name, relay_port in relays.items())
    return textwrap.dedent(f"""\
        global
            maxconn 2000

        defaults
            mode http
            timeout connect 1s
            timeout client  30s
            timeout server  30s
            # A relay that is down refuses the connection: try again, on another relay.
            retries 3
            option redispatch 1
            retry-on conn-failure empty-response

        frontend ingest
            bind 127.0.0.1:{port}
            default_backend relays

        backend relays
            balance roundrobin
            option httpchk GET /readyz
            http-check expect status 200
            default-server inter 200ms fall 2 rise 2
        """) + servers + textwrap.dedent(f"""

        listen stats
            bind 127.0.0.1:{stats_port}
            stats enable
            stats uri /stats
        """)


class Haproxy(Process):
    """haproxy in the foreground (-db) on a config this test writes; its output in TMP/haproxy.log."""

    def __init__(self, tmp_dir: Path, relays: dict[str, int]) -> None:
        super().__init__([], tmp_dir, name="haproxy")
        self.port, self.stats_port = free_port(), free_port()
        self.config_path = tmp_dir / "haproxy.cfg"
        self.config_path.write_text(haproxy_cfg(self.port, self.stats_port, relays))

    @property
    def command(self) -> list[str]:
        assert HAPROXY is not None
        return [HAPROXY, "-db", "-f", str(self.config_path)]

    def start(self) -> Haproxy:
        super().start()
        wait_until(lambda: self._alive_or_fail() and all(s == "UP" for s in self.servers().values()),
                   timeout=20, ignore=(OSError,), message=lambda: f"haproxy servers UP\n{self.log_tail()}")
        return self

    def servers(self) -> dict[str, str]:
        """Each backend server's state as haproxy sees it: UP, DOWN, ..."""
        text = http_request(f"http://127.0.0.1:{self.stats_port}/stats;csv").body.decode()
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"]: row["status"].split()[0] for row in rows
                if row["pxname"] == "relays" and row["svname"] not in ("FRONTEND", "BACKEND")}


class Load(LoadThread):
    """Clients posting unique entries (/scale/<tag>/<i>) through haproxy until stopped.

    Each request is logged with when it was sent and the status it got (0: no answer)."""

    def __init__(self, url: str, clients: int = 4) -> None:
        super().__init__("scale-load")
        self.url, self.clients = url, clients
        self.sent: list[tuple[int, float, int]] = []  # (tag, monotonic send time, status)
        self._tags: Iterator[int] = iter(range(10**9))

    def acked(self, since: float = 0.0) -> list[int]:
        return [tag for tag, at, status in list(self.sent) if 200 <= status < 300 and at >= since]

    async def _main(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            await asyncio.gather(*(self._client(session) for _ in range(self.clients)))

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self._halt.is_set():
            tag = next(self._tags)
            body = gz_json([{**e, "path": f"/scale/{tag}/{i}"} for i, e in enumerate(entries(0, PER_BODY))])
            sent = time.monotonic()
            try:
                async with session.post(self.url, data=body, headers=HEADERS) as response:
                    await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError):
                status = 0
            self.sent.append((tag, sent, status))
            await asyncio.sleep(0.01)  # load shaping, not synchronisation: keep the two cores for the relays


def delivered(upstream: MockUpstream) -> dict[str, int]:
    """How often each /scale/ entry reached upstream."""
    counts: dict[str, int] = {}
    for entry in upstream.entries():
        counts[entry["path"]] = counts.get(entry["path"], 0) + 1
    return counts


def missing(acked_tags: list[int], seen: dict[str, int]) -> list[str]:
    return [path for tag in acked_tags for path in (f"/scale/{tag}/{i}" for i in range(PER_BODY))
            if path not in seen]


def queued(relay: Relay) -> float:
    text = relay.metrics()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("relay_queue_entries{"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    upstream = MockUpstream(tmp_path, api_keys=[KEY], verbose=False).start()
    relays = {}
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        relays[name] = Relay(folder, sink_toml("upstream", upstream.url, KEY), name=f"relay-{name}")
    processes: list[Process] = [upstream]
    try:
        for relay in relays.values():
            processes.append(relay.start())
        balancer = Haproxy(tmp_path, {name: relay.port for name, relay in relays.items()})
        processes.append(balancer)
        balancer.start()
        yield {"upstream": upstream, "relays": relays, "haproxy": balancer}
    finally:
        for process in reversed(processes):
            process.stop()
        for relay in relays.values():
            relay.stop()


def test_kill9_one_of_two_relays_behind_haproxy_loses_nothing(cluster: dict[str, Any]) -> None:
    upstream, relays, balancer = cluster["upstream"], cluster["relays"], cluster["haproxy"]
    victim, survivor = relays["a"], relays["b"]
    load = Load(f"http://127.0.0.1:{balancer.port}/v1/logs/custom")
    load.start()
    try:
        wait_until(lambda: len(load.acked()) >= 20, timeout=20, message="20 requests through haproxy")
        # Hold delivery so that both relays have acknowledged entries still queued at the kill.
        upstream.set_faults(status=503)
        held = len(load.acked())
        wait_until(lambda: len(load.acked()) >= held + 20 and queued(victim) > 0 and queued(survivor) > 0,
                   timeout=20, message="both relays holding a backlog")

        victim.kill9()
        killed_at = time.monotonic()
        wait_until(lambda: balancer.servers()["a"] == "DOWN", timeout=10, message="haproxy marking relay a DOWN")
        wait_until(lambda: len(load.acked(since=killed_at)) >= 30, timeout=20,
                   message=lambda: f"requests after the kill\n{survivor.log_tail()}")
    finally:
        load.stop()

    after_kill = [status for _, at, status in load.sent if at >= killed_at]
    assert after_kill and all(status == 200 for status in after_kill), sorted(set(after_kill))
    statuses = {status for _, _, status in load.sent}
    assert statuses <= {200, 502, 503, 0}, statuses  # anything else than an ack or a retryable failure is a bug

    upstream.clear_faults()
    acked = load.acked()
    wait_until(lambda: queued(survivor) == 0, timeout=20, message="the surviving relay draining")
    # The killed relay's acknowledged entries are on its disk, and only there.
    held_by_victim = missing(acked, delivered(upstream))
    assert held_by_victim, "the killed relay held nothing: the test proved nothing"

    victim.start()  # the same config: the same queue directory
    wait_until(lambda: not missing(acked, delivered(upstream)), timeout=30,
               message=lambda: f"{len(missing(acked, delivered(upstream)))} acknowledged entries not delivered "
                               f"after the restart\n{victim.log_tail()}")
    wait_until(lambda: balancer.servers()["a"] == "UP", timeout=10, message="haproxy taking relay a back")
    seen = delivered(upstream)
    assert len(seen) >= len(acked) * PER_BODY
    print(f"scale-out: {len(load.sent)} requests, {len(acked)} acknowledged, {len(held_by_victim)} entries "
          f"held by the killed relay and delivered after its restart, "
          f"{sum(n - 1 for n in seen.values())} duplicates")

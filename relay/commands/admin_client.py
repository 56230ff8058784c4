"""Asking the running relay's admin endpoints, as the offline-or-online commands do.

`relay dead-letter` and `relay rejected` work on the queue directory when the
relay is stopped and go through its admin endpoints (with `server.admin_token`)
when it holds the directory; this is the choice between the two and the online half they share.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine
from typing import Any

from relay.config import Config, load
from relay.errors import ConfigError
from relay.store.queue import DiskQueue


def load_config(path: str) -> Config | None:
    """The config, or None after printing the error in one line (the command then exits 2)."""
    try:
        return load(path)
    except ConfigError as exc:
        print(f"relay: config error: {exc}", file=sys.stderr)
        return None


def offline_or_online(config: Config, offline: Callable[[], Coroutine[Any, Any, Any]],
                      online: Callable[[], Any]) -> Any:
    """offline() on the queue directory when no relay holds it (its lock taken meanwhile), else
    online(): through the running relay's admin endpoints."""
    probe = DiskQueue(config.queue.path, max_size=config.queue.max_size)
    if not probe.lock():
        return online()
    try:
        return asyncio.run(offline())
    finally:
        probe.close()


def call(config: Config, path: str, query: dict[str, str], *, post: bool, timeout: float) -> Any:
    """The JSON answer of the relay at `path`; SystemExit with one line when it refuses or is silent."""
    host, port = config.server.host_port
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    scheme = "https" if config.server.tls_cert else "http"
    url = f"{scheme}://{host}:{port}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    request = urllib.request.Request(url, method="POST" if post else "GET")
    if config.server.admin_token:
        request.add_header("Authorization", f"Bearer {config.server.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"relay: {exc.code}: {exc.read().decode(errors='replace')}") from None
    except OSError as exc:
        raise SystemExit(f"relay: the relay holds {config.queue.path} but does not answer on "
                         f"{host}:{port}: {exc}") from None

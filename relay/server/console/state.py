"""`GET /-/console/state`: what the console page draws, from what the running relay already knows.

Never carries a secret: no token, no api_key, and sink URLs without their user-info and query;
an upstream error is shown with the sink's key and URL credentials masked, should it quote them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import relay
from relay.server.console.history import INTERVAL, SINK_FIGURES, SOURCE_FIGURES, WINDOW, History, Sample, take_sample
from relay.store import disk_usage

if TYPE_CHECKING:
    from relay.runtime import Runtime

RATE_OVER = 30.0  # seconds: the big numbers are rates over about this long


def public_url(url: str) -> str:
    """The URL without user-info, query or fragment (where credentials could hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def masked(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def current_sample(runtime: Runtime, at: float | None = None) -> Sample:
    backlogs = {name: float(outbox.queued_entries) for name, outbox in runtime.outboxes.items()}
    return take_sample(runtime.metrics, runtime.config.sources, backlogs, time.time() if at is None else at)


def drain_seconds(backlog: float, rate: float | None) -> float | None:
    """Backlog / delivery rate: 0 when empty, None while nothing is delivered."""
    if backlog <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return backlog / rate


def build_state(runtime: Runtime, history: History) -> dict[str, Any]:
    now = current_sample(runtime)
    config = runtime.config
    sources = []
    for name, source in config.sources.items():
        counts = now.sources.get(name, {})
        sources.append({
            "name": name, "mapping": source.mapping, "host": source.host,
            "totals": {f: counts.get(f, 0.0) for f in SOURCE_FIGURES},
            "rates": history.rates("sources", name, SOURCE_FIGURES, now, RATE_OVER),
            "top": history.top_reasons(name, now),
            "series": history.series("sources", name, SOURCE_FIGURES, now),
        })
    sinks = []
    for name, sink in config.sinks.items():
        outbox = runtime.outboxes.get(name)
        dispatcher = runtime.dispatchers.get(name)
        secrets = [s for s in (sink.api_key, urlsplit(sink.url).password, urlsplit(sink.url).username) if s]
        failure = dispatcher.last_failure if dispatcher else None
        rates = history.rates("sinks", name, SINK_FIGURES, now, RATE_OVER)
        backlog = float(outbox.queued_entries) if outbox else 0.0
        sinks.append({
            "name": name, "url": public_url(sink.url),
            "state": dispatcher.state if dispatcher else "stopped",
            "error": masked(dispatcher.last_error, secrets) if dispatcher and dispatcher.last_error else None,
            "last_failure": None if failure is None else {"at": failure[0], "error": masked(failure[1], secrets)},
            "totals": {f: now.sinks.get(name, {}).get(f, 0.0) for f in SINK_FIGURES},
            "rates": rates,
            "backlog": {"entries": backlog, "bytes": float(outbox.queued_bytes) if outbox else 0.0,
                        "oldest_age": outbox.oldest_age() if outbox else 0.0},
            # only a running sink drains: the rate of before an outage says nothing of when it ends
            "drain_seconds": drain_seconds(backlog, rates["delivered"] if dispatcher and dispatcher.state == "running"
                                           else None),
            "dead_letters": runtime.dead_letters.entries(name),
            "series": history.series("sinks", name, (*SINK_FIGURES, "backlog"), now),
        })
    reload = runtime.last_reload
    path = runtime.queue.path
    problems = runtime.readiness_problems()
    return {
        "version": relay.__version__, "now": now.at, "started": runtime.started,
        "uptime": now.at - runtime.started, "window": WINDOW, "interval": INTERVAL,
        "ready": not problems, "problems": problems,
        "reload": {"at": reload.at, "result": reload.result, "detail": reload.detail},
        "disk": {"used": disk_usage.allocated_bytes(path), "max": int(runtime.queue.max_size),
                 "free": disk_usage.free_space(path), "reserve": int(runtime.queue.min_free_space)},
        "dead_letters": {"entries": sum(runtime.dead_letters.entries(n) for n in config.sinks),
                         "bytes": runtime.dead_letters.bytes()},
        "sources": sources, "sinks": sinks,
        "mappings": runtime.mapping_library().names(),
    }

"""Logging set-up and the Prometheus metrics, in one registry per running relay."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if WORKER is not None:
            line["worker"] = WORKER
        extra = getattr(record, "fields", None)
        if extra:
            line.update(extra)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


WORKER: int | None = None  # set in a worker process (server.workers > 1): its lines say which


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        who = "%(name)s" if WORKER is None else f"%(name)s[worker {WORKER}]"
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s {who}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiohttp logs each malformed request (bad request line, header flood) with a traceback:
    # a hostile client could flood the log. Our own handler errors go through ingest's middleware.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


class Sampler:
    """At most one log line per key per `every` seconds; says how many it held back."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str) -> int | None:
        """None: stay quiet. Otherwise log now; the value is how many were suppressed before."""
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


class _Gauges(Collector):
    """Gauges computed at scrape time from live state (queue depth, ages)."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, doc, labels, value in self._read():
            family = families.get(name)
            if family is None:
                kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
                family = families[name] = kind(name, doc, labels=list(labels))
            family.add_metric(list(labels.values()), value)
        return list(families.values())


class SourceCounters(NamedTuple):
    ok: Any  # relay_requests{code="200"}
    received_bytes: Any
    entries_received: Any
    entries_accepted: Any


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("relay_requests", "Ingest requests by source and HTTP status", ["source", "code"], registry=r)
        self.received_bytes = Counter("relay_received_bytes", "Request body bytes received (as sent)", ["source"], registry=r)
        self.entries_received = Counter("relay_entries_received", "Records decoded from requests", ["source"], registry=r)
        self.entries_accepted = Counter("relay_entries_accepted", "Entries committed to the queue", ["source"], registry=r)
        self.entries_rejected = Counter("relay_entries_rejected", "Records rejected, by reason", ["source", "reason"], registry=r)
        self.entries_filtered = Counter("relay_entries_filtered", "Records dropped by drop_if rules", ["source"], registry=r)
        self.repairs = Counter("relay_entries_repaired", "Fields repaired, by field and rule", ["source", "field", "rule"], registry=r)
        self.batches = Counter("relay_upstream_batches", "Upstream requests by sink and status (0: no answer)", ["sink", "code"], registry=r)
        self.entries_delivered = Counter("relay_upstream_entries_delivered", "Entries upstream accepted", ["sink"], registry=r)
        self.upstream_rejected = Counter("relay_upstream_entries_rejected", "Entries upstream skipped as invalid in a 200", ["sink"], registry=r)
        self.retries = Counter("relay_upstream_retries", "Batch retries by reason", ["sink", "reason"], registry=r)
        self.dead_lettered = Counter("relay_dead_letter_entries_added", "Entries moved to the dead-letter store", ["sink"], registry=r)
        self.dead_letters_dropped = Counter("relay_dead_letter_entries_dropped", "Dead letters dropped past queue.dead_letter_max_size", registry=r)
        self.rejected_replayed = Counter("relay_rejected_replayed", "Stored rejected records replayed, by result "
                                         "(accepted, filtered, still_rejected)", ["source", "result"], registry=r)
        self.reloads = Counter("relay_config_reloads", "Config reloads by result (ok, refused)", ["result"], registry=r)
        self.last_reload = Gauge("relay_config_last_reload_success_timestamp_seconds",
                                 "When the config was last loaded successfully", registry=r)
        self.last_reload.set_to_current_time()
        self.latency = Histogram("relay_upstream_request_duration_seconds", "Upstream request latency", ["sink"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self._sources: dict[str, SourceCounters] = {}

    def source(self, name: str) -> SourceCounters:
        """A source's per-request counters, looked up once: `labels()` takes a lock and builds a
        key at every call, which a 1-entry request paid four times."""
        counters = self._sources.get(name)
        if counters is None:
            counters = self._sources[name] = SourceCounters(
                self.requests.labels(name, "200"), self.received_bytes.labels(name),
                self.entries_received.labels(name), self.entries_accepted.labels(name))
        return counters

    def declare(self, sources: Iterable[str], sinks: Iterable[str]) -> None:
        """Create the label sets a quiet source or sink would otherwise lack, so dashboards
        show zeros instead of gaps."""
        for source in sources:
            self.requests.labels(source, "200")
            for counter in (self.received_bytes, self.entries_received, self.entries_accepted, self.entries_filtered):
                counter.labels(source)
        for sink in sinks:
            self.batches.labels(sink, "200")
            self.entries_delivered.labels(sink)
            self.upstream_rejected.labels(sink)
            self.dead_lettered.labels(sink)

    def add_gauges(self, read: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
        self.registry.register(_Gauges(read))


# ---- one relay's metrics from several worker processes ---------------------------------------

# (family, type, help, sample name, labels, value): one worker's samples, as siblings pass them.
SampleRow = tuple[str, str, str, str, dict[str, str], float]


def export_samples(registry: CollectorRegistry) -> list[SampleRow]:
    return [(family.name, family.type, family.documentation, s.name, s.labels, s.value)
            for family in registry.collect() for s in family.samples]


def _combine(sample: str, values: list[float]) -> float:
    """How the workers' values of one series make the relay's: counts and sizes add up; ages and
    states say the worst; a start or reload time says the earliest."""
    if sample.endswith(("_created", "_timestamp_seconds")) or sample == "relay_sink_up":
        return min(values)
    if sample.endswith("_age_seconds") or sample == "relay_sink_state":
        return max(values)
    return sum(values)


class _Merged(Collector):
    def __init__(self, parts: Iterable[Iterable[SampleRow]]) -> None:
        self.families: dict[str, Metric] = {}
        series: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = {}
        for part in parts:
            for family, kind, doc, sample, labels, value in part:
                if family not in self.families:
                    self.families[family] = Metric(family, doc, kind)
                series.setdefault((family, sample, tuple(sorted(labels.items()))), []).append(value)
        for (family, sample, label_items), values in series.items():
            self.families[family].add_sample(sample, dict(label_items), _combine(sample, values))

    def collect(self) -> Iterable[Metric]:
        return list(self.families.values())


def merged_exposition(parts: Iterable[Iterable[SampleRow]]) -> bytes:
    """The text exposition of several workers' samples as one relay's (see _combine)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(parts))
    return generate_latest(registry)

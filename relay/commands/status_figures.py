"""`relay status` figures: what a running relay is doing, from two readings of its /metrics; pure.

    Scrape.parse(metrics text, at) -> Scrape
    summarize(cur, prev, peaks) -> Status

Counters become per-second rates from their deltas between the scrapes (a counter
that went down is a restart, not a negative rate); gauges (queue depth, sink
state) are taken as they are. No network and no terminal: `relay.commands.status` reads
the scrapes and draws the result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

LATENCY = "relay_upstream_request_duration_seconds"
Labels = Mapping[str, str]


@dataclass(frozen=True)
class Scrape:
    """One reading of /metrics (and /readyz): sample name -> [(labels, value)]."""

    at: float  # time.monotonic() when it was taken
    samples: Mapping[str, Sequence[tuple[Labels, float]]]
    ready: bool | None = None  # None: /readyz did not answer in JSON
    reasons: tuple[str, ...] = ()
    url: str = ""

    @classmethod
    def parse(cls, text: str, at: float, ready: bool | None = None, reasons: Iterable[str] = (),
              url: str = "") -> Scrape:
        samples: dict[str, list[tuple[Labels, float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
        return cls(at, samples, ready, tuple(reasons), url)

    def by(self, name: str, label: str, **where: str) -> dict[str, float]:
        """Sum of `name` grouped by one label, over the samples whose labels match `where`."""
        out: dict[str, float] = {}
        for labels, value in self.samples.get(name, ()):
            if all(labels.get(k) == v for k, v in where.items()) and label in labels:
                out[labels[label]] = out.get(labels[label], 0.0) + value
        return out

    def total(self, name: str, **where: str) -> float:
        return sum(v for labels, v in self.samples.get(name, ())
                   if all(labels.get(k) == want for k, want in where.items()))

    def series(self, name: str) -> list[tuple[Labels, float]]:
        return list(self.samples.get(name, ()))


@dataclass
class SourceFigures:
    name: str
    requests: float  # totals since the relay started
    accepted: float
    rejected: float
    filtered: float
    requests_rate: float | None = None  # per second over the interval; None without a previous scrape
    accepted_rate: float | None = None
    rejected_rate: float | None = None
    filtered_rate: float | None = None
    bytes_rate: float | None = None


@dataclass
class SinkFigures:
    name: str
    state: str  # running, backing off, paused, or down
    entries: float  # queued now
    bytes: float
    delivered: float  # total since start
    retries: float
    upstream_rejected: float
    dead_lettered: float
    delivered_rate: float | None = None
    retries_rate: float | None = None
    drain_seconds: float | None = None  # None: nothing drains (inf) or unknown; 0: empty
    drained: float = 1.0  # fraction of the peak backlog already delivered, for the bar
    p50: float | None = None  # upstream latency over the interval, seconds
    p99: float | None = None
    oldest_age: float | None = None


@dataclass
class Status:
    url: str
    interval: float | None  # seconds between the two scrapes; None: one scrape only
    ready: bool | None
    reasons: tuple[str, ...]
    used_bytes: float
    max_bytes: float
    sources: list[SourceFigures] = field(default_factory=list)
    sinks: list[SinkFigures] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what went wrong in the interval (or since start)


def _delta(now: float, before: float | None) -> float:
    """Counter increase; a counter that went down means the relay restarted (a reset)."""
    if before is None:
        return now
    return now - before if now >= before else now


def _deltas(cur: Scrape, prev: Scrape | None, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Per label tuple, how much counter `name` grew between the scrapes (since start without prev)."""
    def grouped(scrape: Scrape) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for lab, value in scrape.series(name):
            key = tuple(lab.get(k, "") for k in labels)
            out[key] = out.get(key, 0.0) + value
        return out

    before = grouped(prev) if prev is not None else {}
    return {key: _delta(value, before.get(key)) for key, value in grouped(cur).items()}


def _rate(cur: Scrape, prev: Scrape | None, name: str, label: str, key: str, dt: float | None) -> float | None:
    if prev is None or not dt:
        return None
    return _delta(cur.by(name, label).get(key, 0.0), prev.by(name, label).get(key)) / dt


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts {upper bound: count}."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the +Inf bucket: the highest finite bound is the best we know
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def _latency(cur: Scrape, prev: Scrape | None, sink: str) -> tuple[float | None, float | None]:
    grew = _deltas(cur, prev, LATENCY + "_bucket", "sink", "le")
    buckets = {float(le): n for (s, le), n in grew.items() if s == sink}
    return histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)


def _sink_state(cur: Scrape, name: str, codes: Mapping[str, float]) -> str:
    """The dispatcher's state: from relay_sink_state if the relay exports it, else from relay_sink_up."""
    for labels, value in cur.series("relay_sink_state"):
        if labels.get("sink") == name and value >= 1 and labels.get("state"):
            return labels["state"].replace("_", " ")
    up = cur.by("relay_sink_up", "sink").get(name)
    if up is None or up >= 1:
        return "running"
    if any(codes.get(code) for code in ("401", "403")):
        return "paused"
    return "backing off"


def summarize(cur: Scrape, prev: Scrape | None = None, peaks: Mapping[str, float] | None = None) -> Status:
    """The figures shown for `cur`, with rates over the time since `prev`.

    `peaks` holds the largest backlog seen per sink so far (the live view keeps it); the
    drain bar shows how much of that peak is delivered.
    """
    dt = cur.at - prev.at if prev is not None and cur.at > prev.at else None
    status = Status(cur.url, dt, cur.ready, cur.reasons, cur.total("relay_queue_used_bytes"),
                    cur.total("relay_queue_max_bytes"))
    status.sources = _sources(cur, prev, dt)
    status.sinks = _sinks(cur, prev, dt, peaks or {})
    status.errors = _errors(cur, prev)
    return status


def _sources(cur: Scrape, prev: Scrape | None, dt: float | None) -> list[SourceFigures]:
    names = set()
    for metric in ("relay_requests_total", "relay_entries_accepted_total", "relay_entries_rejected_total",
                   "relay_entries_filtered_total", "relay_entries_received_total"):
        names |= set(cur.by(metric, "source"))
    names.discard("_unknown")  # requests to no configured source: counted as errors only
    rows = []
    for name in sorted(names):
        row = SourceFigures(
            name,
            requests=cur.by("relay_requests_total", "source").get(name, 0.0),
            accepted=cur.by("relay_entries_accepted_total", "source").get(name, 0.0),
            rejected=cur.by("relay_entries_rejected_total", "source").get(name, 0.0),
            filtered=cur.by("relay_entries_filtered_total", "source").get(name, 0.0))
        if dt:
            row.requests_rate = _rate(cur, prev, "relay_requests_total", "source", name, dt)
            row.accepted_rate = _rate(cur, prev, "relay_entries_accepted_total", "source", name, dt)
            row.rejected_rate = _rate(cur, prev, "relay_entries_rejected_total", "source", name, dt)
            row.filtered_rate = _rate(cur, prev, "relay_entries_filtered_total", "source", name, dt)
            row.bytes_rate = _rate(cur, prev, "relay_received_bytes_total", "source", name, dt)
        rows.append(row)
    return rows


def _sinks(cur: Scrape, prev: Scrape | None, dt: float | None, peaks: Mapping[str, float]) -> list[SinkFigures]:
    names = set(cur.by("relay_queue_entries", "sink")) | set(cur.by("relay_upstream_batches_total", "sink"))
    batches = _deltas(cur, prev, "relay_upstream_batches_total", "sink", "code")
    rows = []
    for name in sorted(names):
        entries = cur.by("relay_queue_entries", "sink").get(name, 0.0)
        codes = {code: n for (sink, code), n in batches.items() if sink == name}
        row = SinkFigures(
            name, _sink_state(cur, name, codes), entries,
            bytes=cur.by("relay_queue_bytes", "sink").get(name, 0.0),
            delivered=cur.by("relay_upstream_entries_delivered_total", "sink").get(name, 0.0),
            retries=cur.by("relay_upstream_retries_total", "sink").get(name, 0.0),
            upstream_rejected=cur.by("relay_upstream_entries_rejected_total", "sink").get(name, 0.0),
            dead_lettered=cur.by("relay_dead_letter_entries_added_total", "sink").get(name, 0.0),
            oldest_age=cur.by("relay_queue_oldest_entry_age_seconds", "sink").get(name))
        row.p50, row.p99 = _latency(cur, prev, name)
        if dt:
            row.delivered_rate = _rate(cur, prev, "relay_upstream_entries_delivered_total", "sink", name, dt)
            row.retries_rate = _rate(cur, prev, "relay_upstream_retries_total", "sink", name, dt)
        row.drain_seconds = drain_seconds(entries, row.delivered_rate)
        before = prev.by("relay_queue_entries", "sink").get(name, 0.0) if prev is not None else 0.0
        peak = max(peaks.get(name, 0.0), before, entries)
        row.drained = 1.0 if peak <= 0 else 1.0 - entries / peak
        rows.append(row)
    return rows


def drain_seconds(backlog: float, delivered_per_second: float | None) -> float | None:
    """Backlog / delivery rate: 0 when empty, None when nothing is being delivered (or unknown)."""
    if backlog <= 0:
        return 0.0
    if not delivered_per_second or delivered_per_second <= 0:
        return None
    return backlog / delivered_per_second


def _errors(cur: Scrape, prev: Scrape | None) -> list[str]:
    """One line per kind of trouble that grew over the interval (since the start without prev)."""
    lines: list[str] = []
    for (source, code), n in sorted(_deltas(cur, prev, "relay_requests_total", "source", "code").items()):
        if n and not code.startswith("2"):
            where = "requests to unknown paths" if source == "_unknown" else f"{source}: requests"
            lines.append(f"{where} answered {code}: {n:,.0f}")
    for (source, reason), n in sorted(_deltas(cur, prev, "relay_entries_rejected_total", "source", "reason").items()):
        if n:
            lines.append(f"{source}: entries rejected ({reason}): {n:,.0f}")
    for (sink, code), n in sorted(_deltas(cur, prev, "relay_upstream_batches_total", "sink", "code").items()):
        if n and not code.startswith("2"):
            answer = "got no answer" if code == "0" else f"answered {code}"
            lines.append(f"{sink}: upstream {answer} for {n:,.0f} batches")
    for (sink, reason), n in sorted(_deltas(cur, prev, "relay_upstream_retries_total", "sink", "reason").items()):
        if n:
            what = "batches split to isolate refused entries" if reason == "split" else f"retries ({reason})"
            lines.append(f"{sink}: {what}: {n:,.0f}")
    for (sink,), n in sorted(_deltas(cur, prev, "relay_upstream_entries_rejected_total", "sink").items()):
        if n:
            lines.append(f"{sink}: entries upstream skipped as invalid: {n:,.0f}")
    for (sink,), n in sorted(_deltas(cur, prev, "relay_dead_letter_entries_added_total", "sink").items()):
        if n:
            lines.append(f"{sink}: entries moved to the dead-letter store: {n:,.0f}")
    quarantined = sum(_deltas(cur, prev, "relay_queue_quarantined_items_total").values())
    quarantined += sum(_deltas(cur, prev, "relay_queue_quarantined_items").values())  # a gauge in newer relays
    if quarantined:
        lines.append(f"queue items that failed their checksum: {quarantined:,.0f}")
    return lines

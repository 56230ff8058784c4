"""The console's memory of the last 15 minutes: a bounded ring of counter readings.

The server keeps it (not the page) so that a console opened late still draws the whole
window. Every `INTERVAL` seconds one `Sample` of the cumulative counters per source and
per sink (and each sink's backlog) is appended; rates are deltas between samples. A
counter that went down (a source re-declared after a reload) counts from zero.

Memory bound: `SAMPLES` (181) samples, each a few small dicts per source and sink: measured
2.9 MiB for 10 sources with 10 rejection reasons each and 5 sinks (tracemalloc). The chart series
of the ring are computed once per sample (cached until the next one), not at every poll.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping

import msgspec
from prometheus_client import Counter

from relay.telemetry import Metrics

INTERVAL = 5.0  # seconds between samples
WINDOW = 900.0  # seconds of history kept: the charts' 15 minutes
SAMPLES = int(WINDOW / INTERVAL) + 1
SOURCE_FIGURES = ("requests", "accepted", "repairs", "rejected", "filtered")
SINK_FIGURES = ("delivered", "upstream_rejected")


class Sample(msgspec.Struct):
    at: float  # Unix seconds
    sources: dict[str, dict[str, float]]  # source -> figure -> cumulative count
    reasons: dict[str, dict[str, float]]  # source -> rejection reason -> cumulative count
    sinks: dict[str, dict[str, float]]  # sink -> figure (SINK_FIGURES, backlog) -> value


def _by_label(counter: Counter, label: int = 0) -> dict[str, float]:
    """Cumulative value of a counter per value of its `label`-th label, summed over the others."""
    out: dict[str, float] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = list(sample.labels.values())[label]
                out[key] = out.get(key, 0.0) + sample.value
    return out


def _pairs(counter: Counter) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                a, b = list(sample.labels.values())[:2]
                out[(a, b)] = out.get((a, b), 0.0) + sample.value
    return out


def take_sample(metrics: Metrics, sources: Iterable[str], backlogs: Mapping[str, float], at: float) -> Sample:
    """The counters now; `backlogs`: entries queued per configured sink."""
    figures = {"requests": _by_label(metrics.requests), "accepted": _by_label(metrics.entries_accepted),
               "repairs": _by_label(metrics.repairs), "rejected": _by_label(metrics.entries_rejected),
               "filtered": _by_label(metrics.entries_filtered)}
    reasons: dict[str, dict[str, float]] = {}
    for (source, reason), n in _pairs(metrics.entries_rejected).items():
        reasons.setdefault(source, {})[reason] = n
    delivered, refused = _by_label(metrics.entries_delivered), _by_label(metrics.upstream_rejected)
    return Sample(
        at,
        {name: {f: figures[f].get(name, 0.0) for f in SOURCE_FIGURES} for name in sources},
        {name: reasons.get(name, {}) for name in sources},
        {name: {"delivered": delivered.get(name, 0.0), "upstream_rejected": refused.get(name, 0.0),
                "backlog": backlog} for name, backlog in backlogs.items()})


def grew(now: float, before: float | None) -> float:
    """How much a counter grew; one that went down was reset, so it grew by what it holds now."""
    if before is None or now < before:
        return now
    return now - before


class History:
    """The ring of samples, oldest first; `SAMPLES` at most."""

    def __init__(self, samples: int = SAMPLES) -> None:
        self.samples: deque[Sample] = deque(maxlen=samples)
        self._series: dict[tuple[str, str, tuple[str, ...]], dict[str, list[float]]] = {}

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        self._series.clear()

    def since(self, at: float) -> Sample | None:
        """The oldest sample taken at or after `at` (the baseline for a rate over the time since)."""
        for sample in self.samples:
            if sample.at >= at:
                return sample
        return None

    def rates(self, kind: str, name: str, figures: Iterable[str], now: Sample,
              over: float) -> dict[str, float | None]:
        """Per-second rates of `figures` of one source or sink over about the last `over` seconds
        (None until a sample that old enough exists)."""
        base = self.since(now.at - over) or (self.samples[0] if self.samples else None)
        if base is None or now.at - base.at < 0.5:
            return {f: None for f in figures}
        before = getattr(base, kind).get(name, {})
        current = getattr(now, kind).get(name, {})
        dt = now.at - base.at
        return {f: grew(current.get(f, 0.0), before.get(f)) / dt for f in figures}

    def series(self, kind: str, name: str, figures: Iterable[str], now: Sample) -> dict[str, list[float]]:
        """Chart data: `t` (Unix seconds) and, per figure, its rate between consecutive samples (the last
        point is `now`); `backlog` as it was (a level, not a rate)."""
        wanted = tuple(figures)
        key = (kind, name, wanted)
        ring = self._series.get(key)
        if ring is None:
            ring = self._series[key] = self._points(kind, name, wanted, list(self.samples))
        if not self.samples:
            return {k: list(v) for k, v in ring.items()}
        last = self._points(kind, name, wanted, [self.samples[-1], now])
        return {k: ring[k] + last[k] for k in ring}

    @staticmethod
    def _points(kind: str, name: str, wanted: tuple[str, ...], points: list[Sample]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"t": [], **{f: [] for f in wanted}}
        for prev, cur in itertools.pairwise(points):
            dt = cur.at - prev.at
            if dt < 0.5:
                continue
            before, after = getattr(prev, kind).get(name, {}), getattr(cur, kind).get(name, {})
            out["t"].append(round(cur.at, 1))
            for f in wanted:
                if f == "backlog":
                    out[f].append(after.get(f, 0.0))
                else:
                    out[f].append(round(grew(after.get(f, 0.0), before.get(f)) / dt, 3))
        return out

    def top_reasons(self, source: str, now: Sample, limit: int = 5) -> list[dict[str, object]]:
        """The rejection reasons of `source` over the window, most frequent first."""
        base = self.samples[0] if self.samples else None
        before = base.reasons.get(source, {}) if base is not None else {}
        counts = {reason: grew(n, before.get(reason)) for reason, n in now.reasons.get(source, {}).items()}
        ranked = sorted(((n, r) for r, n in counts.items() if n > 0), reverse=True)[:limit]
        return [{"reason": reason, "count": int(n)} for n, reason in ranked]

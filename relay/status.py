"""`relay status`: a live terminal view of a running relay, read from its /metrics and /readyz.

A view is made from two scrapes: counters become per-second rates from their
deltas, gauges (queue depth, sink state) are shown as they are. Everything
from a pair of scrapes to the picture is pure (`Scrape.parse`, `summarize`,
`render`), so it is tested on canned metrics texts; only `scrape` and `run`
touch the network and the terminal.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_INTERVAL = 2.0  # seconds between scrapes
DEFAULT_TIMEOUT = 5.0  # seconds for one HTTP exchange with the relay
RECENT_ERRORS = 8  # lines of "recent errors" the live view keeps
PLAIN_WIDTH = 120  # columns when the output is not a terminal (rich would use 80)
BAR_WIDTH = 10

LATENCY = "relay_upstream_request_duration_seconds"
Labels = Mapping[str, str]

# Never through a proxy from the environment: the relay is normally local or in-cluster.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Unreachable(Exception):
    """The relay's /metrics could not be read."""


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


# --- from two scrapes to figures -------------------------------------------------------------


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


# --- rendering -------------------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}/s" if value >= 100 else f"{value:,.1f}/s"


def fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def bar(fraction: float, width: int = BAR_WIDTH, style: str = "green") -> Text:
    """A progress bar readable without colour: '#' done, '.' to go, then the percentage."""
    fraction = min(max(fraction, 0.0), 1.0)
    done = round(fraction * width)
    text = Text()
    text.append("#" * done, style=style)
    text.append("." * (width - done), style="dim")
    text.append(f" {fraction * 100:3.0f}%")
    return text


_STATE_STYLE = {"running": "green", "backing off": "yellow", "paused": "red"}


def _drain_cell(sink: SinkFigures) -> str:
    if sink.entries <= 0:
        return "empty"
    if sink.drain_seconds is None:
        return "stalled" if sink.delivered_rate is not None else "-"
    return fmt_duration(sink.drain_seconds)


def render(status: Status, recent: Sequence[tuple[str, str]] | None = None) -> RenderableType:
    """The whole view. `recent`: (clock time, line) errors kept by the live view; else status.errors."""
    header = Text()
    header.append("relay ", style="bold")
    header.append(status.url or "?")
    if status.ready is True:
        header.append("  ready", style="bold green")
    elif status.ready is False:
        header.append("  NOT READY: " + "; ".join(status.reasons or ("no reason given",)), style="bold red")
    else:
        header.append("  readiness unknown", style="yellow")
    header.append("  rates over " + (f"{status.interval:.1f}s" if status.interval else "- (one scrape)"))
    budget = Text("disk budget ")
    if status.max_bytes > 0:
        budget.append_text(bar(status.used_bytes / status.max_bytes, style="cyan"))
        budget.append(f"  {fmt_bytes(status.used_bytes)} of {fmt_bytes(status.max_bytes)} queued")
    else:
        budget.append("-")
    gap = Text("")
    return Group(header, budget, gap, _sources_table(status), gap, _sinks_table(status), gap,
                 _errors_table(status, recent))


def _sources_table(status: Status) -> Table:
    table = _table("sources")
    for column in ("source", "requests/s", "accepted/s", "rejected/s", "filtered/s", "in", "accepted",
                   "rejected", "filtered"):
        table.add_column(column, justify="left" if column == "source" else "right", no_wrap=True)
    for s in status.sources:
        table.add_row(s.name, fmt_rate(s.requests_rate), fmt_rate(s.accepted_rate), fmt_rate(s.rejected_rate),
                      fmt_rate(s.filtered_rate), fmt_bytes(s.bytes_rate) + "/s" if s.bytes_rate is not None else "-",
                      fmt_count(s.accepted), fmt_count(s.rejected), fmt_count(s.filtered))
    if not status.sources:
        table.add_row("(no requests yet)", *[""] * 8)
    return table


def _sinks_table(status: Status) -> Table:
    table = _table("sinks")
    for column in ("sink", "state", "queued", "bytes", "oldest", "sent/s", "drain in", "drained", "p50", "p99",
                   "retries/s", "refused", "dead"):
        table.add_column(column, justify="left" if column in ("sink", "state", "drained") else "right",
                         no_wrap=True)
    for s in status.sinks:
        table.add_row(s.name, Text(s.state, style=_STATE_STYLE.get(s.state, "red")), fmt_count(s.entries),
                      fmt_bytes(s.bytes), fmt_duration(s.oldest_age) if s.entries else "-",
                      fmt_rate(s.delivered_rate), _drain_cell(s), bar(s.drained),
                      fmt_duration(s.p50), fmt_duration(s.p99), fmt_rate(s.retries_rate),
                      fmt_count(s.upstream_rejected), fmt_count(s.dead_lettered))
    if not status.sinks:
        table.add_row("(no sinks)", *[""] * 12)
    return table


def _table(title: str) -> Table:
    """Compact: one blank between columns, never wrapping a cell."""
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                 show_edge=False, padding=(0, 1), collapse_padding=True)


def _errors_table(status: Status, recent: Sequence[tuple[str, str]] | None) -> RenderableType:
    since = "since start" if status.interval is None else f"in the last {status.interval:.0f}s"
    lines = list(recent) if recent is not None else [("", line) for line in status.errors]
    if not lines:
        return Text(f"errors: none {since}" if recent is None else "errors: none seen", style="green")
    out = Text()
    out.append("recent errors" if recent is not None else f"errors {since}", style="bold")
    for when, line in lines:
        out.append("\n  ")
        if when:
            out.append(when + "  ", style="dim")
        out.append(line, style="red")
    return out


def render_text(status: Status, width: int = PLAIN_WIDTH) -> str:
    """The view as plain text (no ANSI), as `--once` prints it off a terminal."""
    console = Console(width=width, no_color=True, force_terminal=False, color_system=None, record=True,
                      file=_Discard())
    console.print(render(status))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


# --- I/O -------------------------------------------------------------------------------------


def base_url(url: str) -> str:
    url = url.rstrip("/")
    for suffix in ("/metrics", "/readyz", "/healthz"):
        url = url.removesuffix(suffix)
    return url if "://" in url else "http://" + url


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def scrape(url: str, timeout: float = DEFAULT_TIMEOUT) -> Scrape:
    """Read URL/metrics and URL/readyz now. Unreachable if /metrics cannot be read."""
    root = base_url(url)
    try:
        code, body = _get(root + "/metrics", timeout)
    except (OSError, ValueError) as exc:
        raise Unreachable(f"cannot reach the relay at {root}/metrics: {getattr(exc, 'reason', exc)}") from None
    if code != 200:
        raise Unreachable(f"{root}/metrics answered {code}")
    at = time.monotonic()
    try:
        text = body.decode()
        parsed = Scrape.parse(text, at, url=root)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Unreachable(f"{root}/metrics is not Prometheus text: {exc}") from None
    ready, reasons = _readiness(root, timeout)
    return Scrape(at, parsed.samples, ready, reasons, root)


def _readiness(root: str, timeout: float) -> tuple[bool | None, tuple[str, ...]]:
    try:
        code, body = _get(root + "/readyz", timeout)
        answer = json.loads(body)
    except (OSError, ValueError):
        return None, ()
    reasons = answer.get("reasons", []) if isinstance(answer, dict) else []
    return code == 200, tuple(str(r) for r in reasons if r)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the relay's address (default {DEFAULT_URL})")
    parser.add_argument("--once", action="store_true",
                        help="print one snapshot and exit (rates over --interval; 0: totals only)")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                        help=f"seconds between scrapes (default {DEFAULT_INTERVAL:g})")


def run(args: argparse.Namespace) -> int:
    if args.interval < 0 or (not args.once and args.interval <= 0):
        print("relay status: --interval must be positive", file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else PLAIN_WIDTH)
    if args.once:
        return _once(args.url, args.interval, console)
    return _live(args.url, args.interval, console)


def _once(url: str, interval: float, console: Console) -> int:
    try:
        first = scrape(url)
        cur, prev = first, None
        if interval > 0:
            time.sleep(interval)
            cur, prev = scrape(url), first
    except Unreachable as exc:
        print(f"relay status: {exc}", file=sys.stderr)
        return 1
    console.print(render(summarize(cur, prev)))
    return 0


def _live(url: str, interval: float, console: Console) -> int:
    prev: Scrape | None = None
    peaks: dict[str, float] = {}
    recent: deque[tuple[str, str]] = deque(maxlen=RECENT_ERRORS)
    try:
        with Live(Text(f"reading {base_url(url)}/metrics ..."), console=console, auto_refresh=False) as live:
            while True:
                try:
                    cur = scrape(url)
                except Unreachable as exc:
                    live.update(Text(f"{exc}; retrying every {interval:g}s (Ctrl-C to quit)", style="bold red"),
                                refresh=True)
                    time.sleep(interval)
                    continue
                status = summarize(cur, prev, peaks)
                for sink in status.sinks:
                    peaks[sink.name] = max(peaks.get(sink.name, 0.0), sink.entries)
                if prev is not None:  # the first scrape's "errors" are the whole history
                    clock = time.strftime("%H:%M:%S")
                    recent.extend((clock, line) for line in status.errors)
                live.update(render(status, recent), refresh=True)
                prev = cur
                time.sleep(interval)
    except KeyboardInterrupt:
        return 0

"""`relay status`: a live terminal view of a running relay, read from its /metrics and /readyz.

The figures come from `relay.commands.status_figures` (pure); this module draws them
(`render`, `render_text`, also pure, so tested on canned metrics texts) and is
the only part that touches the network and the terminal (`scrape`, `run`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from relay.commands.status_figures import (
    Scrape,
    SinkFigures,
    Status,
    summarize,
)

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_INTERVAL = 2.0  # seconds between scrapes
DEFAULT_TIMEOUT = 5.0  # seconds for one HTTP exchange with the relay
RECENT_ERRORS = 8  # lines of "recent errors" the live view keeps
PLAIN_WIDTH = 120  # columns when the output is not a terminal (rich would use 80)
BAR_WIDTH = 10

# Never through a proxy from the environment: the relay is normally local or in-cluster.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Unreachable(Exception):
    """The relay's /metrics could not be read."""


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
        if status.reasons:  # ready, with something the operator must know (a salvaged queue)
            header.append("  NOTE: " + "; ".join(status.reasons), style="bold yellow")
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
                      file=_Discard())  # type: ignore[arg-type]  # only write() is called
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
    if code == 200 and isinstance(answer, dict):
        reasons = answer.get("notes", [])
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

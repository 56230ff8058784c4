"""The in-memory ring of recent rejections: bounded in count and bytes per source, newest first."""

from __future__ import annotations

import json

from relay.models import Rejection
from relay.rejections.recent import OVERHEAD, RecentRejections


def rejected(n: int, start: int = 0, size: int = 10, field: str = "host", reason: str = "required"
             ) -> list[tuple[Rejection, object]]:
    return [(Rejection(i, field, reason, f"$[{i}] bad"), {"i": i, "pad": "x" * size}) for i in range(start, start + n)]


def test_count_bound_keeps_the_newest_and_counts_the_dropped() -> None:
    ring = RecentRejections(max_records=5, max_bytes=2**30)
    ring.capture("a", rejected(3), now=100.0)
    ring.capture("a", rejected(4, start=3), now=101.0)
    items = ring.recent("a")
    assert [item.index for item in items] == [6, 5, 4, 3, 2]  # newest first
    assert json.loads(bytes(items[0].record)) == {"i": 6, "pad": "x" * 10}
    figures = ring.figures("a")
    assert (figures.records, figures.dropped) == (5, 2)


def test_a_large_request_encodes_only_what_the_ring_can_hold() -> None:
    ring = RecentRejections(max_records=3, max_bytes=2**30)
    ring.capture("a", rejected(1000), now=100.0)
    assert [item.index for item in ring.recent("a")] == [999, 998, 997]
    assert ring.figures("a").dropped == 997
    assert ring.top("a", now=100.0)[0].count == 1000  # the reasons still count every one


def test_byte_bound_holds_with_large_records() -> None:
    ring = RecentRejections(max_records=1000, max_bytes=100_000)
    for k in range(50):
        ring.capture("a", rejected(2, start=2 * k, size=9_000), now=100.0 + k)
    figures = ring.figures("a")
    assert figures.bytes <= 100_000
    each = figures.bytes // figures.records
    assert each > 9_000 + OVERHEAD and figures.records == 100_000 // each  # as many as fit, no more
    assert figures.records + figures.dropped == 100
    assert ring.recent("a")[0].index == 99


def test_rings_are_per_source_and_a_source_is_asked_alone_or_with_all() -> None:
    ring = RecentRejections(max_records=2, max_bytes=2**30)
    ring.capture("a", rejected(2), now=100.0)
    ring.capture("b", rejected(1, start=7), now=200.0)
    assert [(i.source, i.index) for i in ring.recent()] == [("b", 7), ("a", 1), ("a", 0)]
    assert [i.index for i in ring.recent("b")] == [7]
    assert ring.recent("none") == []
    ring.keep_only(["b"])
    assert ring.figures("a").records == 0


def test_top_reasons_count_the_last_15_minutes_only() -> None:
    ring = RecentRejections(window=900)
    ring.capture("a", rejected(5, field="host", reason="required"), now=0.0)
    ring.capture("a", rejected(2, field="status_code", reason="range"), now=600.0)
    assert [(t.field, t.count) for t in ring.top("a", now=800.0)] == [("host", 5), ("status_code", 2)]
    ring.capture("a", rejected(1, field="status_code", reason="range"), now=950.0)
    assert [(t.field, t.reason, t.count) for t in ring.top("a", now=950.0)] == [("status_code", "range", 3)]

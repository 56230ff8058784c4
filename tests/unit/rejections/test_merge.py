"""Merging the workers' parts of /-/rejections and of a replay into one answer."""

from __future__ import annotations

from typing import Any

from relay.rejections.merge import merge_listings, merge_replays


def item(at: float, source: str = "web", index: int = 0) -> dict[str, Any]:
    return {"time": at, "source": source, "index": index, "field": "host", "reason": "required",
            "message": "m", "record": {"i": index}}


def part(items: list[dict[str, Any]], top: list[tuple[str | None, str, int]],
         stored: tuple[int, int, int]) -> dict[str, Any]:
    return {"rejections": items,
            "top": {"web": [{"field": f, "reason": r, "count": n} for f, r, n in top]},
            "stored": {"web": {"records": stored[0], "bytes": stored[1], "dropped": stored[2]}},
            "recent": {"web": {"records": len(items), "bytes": 10 * len(items), "dropped": 0}}}


def test_listings_merge_newest_first_with_the_limit_applied_after_the_merge() -> None:
    a = part([item(9.0, index=2), item(5.0, index=1), item(1.0, index=0)], [("host", "required", 3)], (3, 300, 1))
    b = part([item(8.0, index=7), item(6.0, index=6)], [("host", "required", 2), ("status_code", "range", 4)],
             (2, 200, 0))
    merged = merge_listings([a, b], limit=4)
    assert [r["time"] for r in merged["rejections"]] == [9.0, 8.0, 6.0, 5.0]
    assert merged["top"] == {"web": [{"field": "host", "reason": "required", "count": 5},
                                     {"field": "status_code", "reason": "range", "count": 4}]}
    assert merged["stored"] == {"web": {"records": 5, "bytes": 500, "dropped": 1}}
    assert merged["recent"] == {"web": {"records": 5, "bytes": 50, "dropped": 0}}


def test_equal_times_keep_each_parts_own_order() -> None:
    # one request's records share a time; within a worker the last record comes first
    a = part([item(5.0, index=2), item(5.0, index=1)], [], (0, 0, 0))
    merged = merge_listings([a, part([], [], (0, 0, 0))], limit=10)
    assert [r["index"] for r in merged["rejections"]] == [2, 1]


def test_a_single_part_comes_back_as_it_was() -> None:
    a = part([item(3.0), item(2.0)], [("host", "required", 2)], (2, 20, 0))
    assert merge_listings([a], limit=100) == a


def test_top_keeps_ten_reasons_per_source_most_frequent_first() -> None:
    a = part([], [("f", f"r{i}", i) for i in range(1, 13)], (0, 0, 0))
    b = part([], [("f", "r1", 100)], (0, 0, 0))
    top = merge_listings([a, b], limit=0)["top"]["web"]
    assert len(top) == 10 and top[0] == {"field": "f", "reason": "r1", "count": 101}
    assert [t["count"] for t in top[1:]] == list(range(12, 3, -1))


def test_offline_listings_without_top_stay_without_it() -> None:
    a = {"rejections": [item(1.0)], "stored": {"web": {"records": 1, "bytes": 5, "dropped": 0}}}
    b = {"rejections": [item(2.0)], "stored": {"web": {"records": 1, "bytes": 7, "dropped": 0}}}
    merged = merge_listings([a, b], limit=100)
    assert set(merged) == {"rejections", "stored"}
    assert merged["stored"]["web"]["bytes"] == 12 and [r["time"] for r in merged["rejections"]] == [2.0, 1.0]


def test_replays_sum_with_their_reasons() -> None:
    a = {"status": "replayed", "replayed": 4, "accepted": 3, "still_rejected": 1, "filtered": 0,
         "reasons": {"range": 1}}
    b = {"status": "replayed", "replayed": 3, "accepted": 1, "still_rejected": 1, "filtered": 1,
         "reasons": {"range": 1, "invalid_json": 0}}
    assert merge_replays([a, b]) == {"status": "replayed", "replayed": 7, "accepted": 4, "still_rejected": 2,
                                     "filtered": 1, "reasons": {"range": 2, "invalid_json": 0}}
    assert merge_replays([]) == {"status": "replayed", "replayed": 0, "accepted": 0, "still_rejected": 0,
                                 "filtered": 0, "reasons": {}}

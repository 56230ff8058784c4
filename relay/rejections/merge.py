"""One answer for the whole relay from the parts of several workers (or queue shards).

With `server.workers = N` each worker keeps its own ring of recent rejections and its own
shard's store of rejected records; `GET /-/rejections`, its replay and the offline
`relay rejected` merge the parts here. The parts are plain JSON values (they travel between
workers as JSON), in the shapes of GET /-/rejections and of ReplayResult.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

TOP = 10  # reasons per source, as RecentRejections.top


def merge_listings(parts: list[Mapping[str, Any]], limit: int) -> dict[str, Any]:
    """Newest first over every part, `limit` applied after the merge; `top` summed per
    (field, reason) and re-ranked; `stored` and `recent` figures summed per source."""
    rejections = [item for part in parts for item in part.get("rejections", [])]
    # stable: within one part the order is already newest first (last record of a request first)
    rejections.sort(key=lambda item: item["time"], reverse=True)
    answer: dict[str, Any] = {"rejections": rejections[:max(0, limit)]}
    if any("top" in part for part in parts):
        answer["top"] = _top(part.get("top", {}) for part in parts)
    for key in ("stored", "recent"):
        if any(key in part for part in parts):
            answer[key] = _summed(part.get(key, {}) for part in parts)
    return answer


def _top(tops: Iterable[Mapping[str, list[Mapping[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    counts: dict[str, Counter[tuple[str | None, str]]] = {}
    for top in tops:
        for source, reasons in top.items():
            counter = counts.setdefault(source, Counter())
            for reason in reasons:
                counter[(reason["field"], reason["reason"])] += reason["count"]
    # a reason just outside one worker's top 10 may be missing from its part: the counts of the
    # merged top are exact for what each worker ranked, a lower bound otherwise
    return {source: [{"field": f, "reason": r, "count": n}
                     for (f, r), n in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))[:TOP]]
            for source, counter in counts.items()}


def _summed(figures: Iterable[Mapping[str, Mapping[str, int]]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for per_source in figures:
        for source, values in per_source.items():
            mine = out.setdefault(source, {})
            for name, n in values.items():
                mine[name] = mine.get(name, 0) + n
    return out


def merge_replays(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """ReplayResults summed (as plain values); `reasons` summed per reason."""
    total: dict[str, Any] = {"status": "replayed", "replayed": 0, "accepted": 0, "still_rejected": 0,
                             "filtered": 0, "reasons": {}}
    for part in parts:
        for key in ("replayed", "accepted", "still_rejected", "filtered"):
            total[key] += part.get(key, 0)
        for reason, n in part.get("reasons", {}).items():
            total["reasons"][reason] = total["reasons"].get(reason, 0) + n
    return total

"""The pipeline's CPU part on real bodies: prepare (decode -> map -> validate), answer, count.

Routes come from routes.compile_routes on a real config, as `relay serve` builds them; the
queue commit is exercised through the real app in tests/unit/server/test_ingest.py.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from relay.config import load
from relay.routes import compile_routes
from relay.stages import pipeline
from relay.stages.pipeline import MAX_ERRORS_REPORTED, Route
from relay.telemetry import Metrics
from relay.tools.local_config import relay_toml, sink_toml

NOW = "2026-11-25T09:30:00Z"
LIMIT = 16 * 2**20


def entry(i: int, **overrides: Any) -> dict[str, Any]:
    return {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "host": "www.example.com", "path": f"/p/{i}",
            "status_code": 200, "ip": "192.0.2.1", "user_agent": "ua", **overrides}


@pytest.fixture(scope="module")
def route(tmp_path_factory: pytest.TempPathFactory) -> Route:
    tmp = tmp_path_factory.mktemp("pipeline")
    path = tmp / "relay.toml"
    path.write_text(relay_toml(port=1, queue_dir=tmp / "queue", now=NOW,
                               sinks=sink_toml("up", "http://127.0.0.1:9/v1/logs/custom", "k")))
    return compile_routes(load(path, env={}))["/ingest/custom"]


def prepare(route: Route, body: bytes, content_type: str = "application/json",
            content_encoding: str | None = None) -> pipeline.Prepared:
    return pipeline.prepare(route, body, content_type=content_type, content_encoding=content_encoding,
                            headers={}, max_size=LIMIT)


def test_gzip_json_array_is_accepted_whole(route: Route) -> None:
    body = gzip.compress(json.dumps([entry(i) for i in range(3)]).encode())
    prepared = prepare(route, body, content_encoding="gzip")
    result = pipeline.answer(prepared)
    assert (result.accepted, result.rejected, result.filtered, result.errors) == (3, 0, 0, [])
    # the queued lines are the entries, one JSON object a line, in body order
    lines = [json.loads(line) for line in prepared.lines.splitlines()]
    assert [line["path"] for line in lines] == ["/p/0", "/p/1", "/p/2"]
    assert prepared.received == 3


def test_ndjson_with_a_rejected_record_names_its_index_and_field(route: Route) -> None:
    body = b"\n".join(json.dumps(e).encode() for e in [entry(0), entry(1, status_code=999), entry(2)])
    result = pipeline.answer(prepare(route, body, content_type="application/x-ndjson"))
    assert (result.accepted, result.rejected) == (2, 1)
    assert len(result.errors) == 1 and result.errors[0].startswith("$[1].status_code: "), result.errors


def test_undecodable_lines_and_rejections_keep_their_place_in_the_body(route: Route) -> None:
    # line 1 is not JSON: the decoder drops it, so the mapper sees 3 records; the invalid one
    # (line 2 of the body) must still be reported as $[2], not as the mapper's $[1]
    lines = [json.dumps(entry(0)).encode(), b"{not json", json.dumps(entry(2, status_code=999)).encode(),
             json.dumps(entry(3)).encode()]
    prepared = prepare(route, b"\n".join(lines), content_type="application/x-ndjson")
    result = pipeline.answer(prepared)
    assert (result.accepted, result.rejected, prepared.received) == (2, 2, 4)
    assert [r.index for r in prepared.rejections] == [1, 2]
    assert result.errors[0].startswith("$[1]: ") and result.errors[1].startswith("$[2].status_code: "), result.errors


def test_errors_are_cut_at_max_errors_reported_with_a_summary(route: Route) -> None:
    bad = MAX_ERRORS_REPORTED + 7
    body = json.dumps([entry(i, status_code=999) for i in range(bad)] + [entry(bad)]).encode()
    result = pipeline.answer(prepare(route, body))
    assert (result.accepted, result.rejected) == (1, bad)
    assert len(result.errors) == MAX_ERRORS_REPORTED + 1
    assert result.errors[MAX_ERRORS_REPORTED - 1].startswith(f"$[{MAX_ERRORS_REPORTED - 1}].status_code")
    assert result.errors[-1] == "... and 7 more rejected records"


def test_count_adds_received_accepted_and_rejections_by_reason(route: Route) -> None:
    lines = [json.dumps(entry(0)).encode(), b"{not json", json.dumps(entry(2, status_code=999)).encode(),
             json.dumps(entry(3, method="get")).encode()]  # a lower-case method is repaired, not rejected
    prepared = prepare(route, b"\n".join(lines), content_type="application/x-ndjson")
    metrics = Metrics()
    pipeline.count(metrics, route, prepared)
    value = metrics.registry.get_sample_value
    assert value("relay_entries_received_total", {"source": "custom"}) == 4
    assert value("relay_entries_accepted_total", {"source": "custom"}) == 2
    reasons = {r.reason for r in prepared.rejections}
    assert len(reasons) == 2, prepared.rejections
    for reason in reasons:
        assert value("relay_entries_rejected_total", {"source": "custom", "reason": reason}) == 1
    assert sum(prepared.result.repairs.values()) == 1
    field, _, rule = next(iter(prepared.result.repairs)).partition(":")
    assert value("relay_entries_repaired_total", {"source": "custom", "field": field, "rule": rule}) == 1


def test_rejected_records_are_the_ones_the_rejections_point_at(route: Route) -> None:
    # a dropped undecodable line shifts the mapper's positions: each rejection must still get its own record
    lines = [json.dumps(entry(0)).encode(), b"{not json", json.dumps(entry(2, status_code=999)).encode(),
             json.dumps(entry(3)).encode()]
    prepared = prepare(route, b"\n".join(lines), content_type="application/x-ndjson")
    assert [(r.index, record) for r, record in prepared.rejected] == [(1, b"{not json"),
                                                                      (2, entry(2, status_code=999))]


def test_nothing_is_kept_for_a_request_without_rejections(route: Route) -> None:
    prepared = prepare(route, json.dumps([entry(0), entry(1)]).encode())
    assert prepared.rejected == []

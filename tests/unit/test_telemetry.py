from prometheus_client.parser import text_string_to_metric_families

from relay.telemetry import Metrics, export_samples, merged_exposition


def _values(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_workers_metrics_merge_into_one_relay() -> None:
    first, second = Metrics(), Metrics()
    for metrics in (first, second):
        metrics.declare(["fb"], ["up"])
    first.entries_accepted.labels("fb").inc(7)
    second.entries_accepted.labels("fb").inc(5)
    second.entries_rejected.labels("fb", "bad_json").inc(2)  # a label set only one worker has
    first.latency.labels("up").observe(0.02)
    second.latency.labels("up").observe(3.0)

    def gauges(age: float, up: float, queued: float):  # type: ignore[no-untyped-def]
        return lambda: [("relay_queue_entries", "q", {"sink": "up"}, queued),
                        ("relay_queue_oldest_entry_age_seconds", "a", {"sink": "up"}, age),
                        ("relay_sink_up", "u", {"sink": "up"}, up)]

    first.add_gauges(gauges(4.0, 1.0, 10))
    second.add_gauges(gauges(9.0, 0.0, 3))
    merged = _values(merged_exposition([export_samples(first.registry), export_samples(second.registry)]))
    assert merged[("relay_entries_accepted_total", (("source", "fb"),))] == 12
    assert merged[("relay_entries_rejected_total", (("reason", "bad_json"), ("source", "fb")))] == 2
    assert merged[("relay_upstream_request_duration_seconds_count", (("sink", "up"),))] == 2
    assert merged[("relay_upstream_request_duration_seconds_bucket", (("le", "0.025"), ("sink", "up")))] == 1
    assert merged[("relay_upstream_request_duration_seconds_bucket", (("le", "5.0"), ("sink", "up")))] == 2
    assert merged[("relay_queue_entries", (("sink", "up"),))] == 13  # entries add up
    assert merged[("relay_queue_oldest_entry_age_seconds", (("sink", "up"),))] == 9  # the oldest
    assert merged[("relay_sink_up", (("sink", "up"),))] == 0  # up only when every worker delivers
    created = [v for (name, _), v in merged.items() if name == "relay_entries_accepted_created"]
    assert created and min(created) > 0

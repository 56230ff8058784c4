"""The console's 15-minute history: a bounded ring of counter readings, rates from their deltas."""

from __future__ import annotations

from relay.server.console.history import SAMPLES, WINDOW, History, Sample, take_sample
from relay.telemetry import Metrics


def sample(at: float, accepted: float, backlog: float = 0.0, reasons: dict[str, float] | None = None) -> Sample:
    return Sample(at, {"web": {"requests": accepted / 10, "accepted": accepted, "repairs": 0.0, "rejected": 0.0,
                               "filtered": 0.0}},
                  {"web": reasons or {}}, {"up": {"delivered": accepted, "upstream_rejected": 0.0, "backlog": backlog}})


def test_the_ring_keeps_fifteen_minutes_and_no_more() -> None:
    history = History()
    for i in range(SAMPLES + 50):
        history.add(sample(i * 5.0, i * 100.0))
    assert len(history.samples) == SAMPLES and SAMPLES * 5.0 >= WINDOW
    assert history.samples[0].at == 50 * 5.0  # the oldest were dropped


def test_rates_over_the_recent_past_and_a_reset_counts_from_zero() -> None:
    history = History()
    for i in range(10):
        history.add(sample(i * 5.0, i * 100.0))
    now = sample(50.0, 1000.0)
    assert history.rates("sources", "web", ["accepted"], now, over=30.0) == {"accepted": 20.0}
    reset = sample(50.0, 30.0)  # the counter went down: re-declared, so it grew by what it holds
    rates = history.rates("sinks", "up", ["delivered"], reset, over=5.0)
    assert rates == {"delivered": 30.0 / 5.0}
    assert History().rates("sources", "web", ["accepted"], now, over=30.0) == {"accepted": None}


def test_series_draw_rates_between_samples_and_backlog_as_a_level() -> None:
    history = History()
    history.add(sample(0.0, 0.0, backlog=7.0))
    history.add(sample(5.0, 50.0, backlog=3.0))
    series = history.series("sinks", "up", ["delivered", "backlog"], sample(10.0, 150.0, backlog=1.0))
    assert series == {"t": [5.0, 10.0], "delivered": [10.0, 20.0], "backlog": [3.0, 1.0]}


def test_top_reasons_over_the_window() -> None:
    history = History()
    history.add(sample(0.0, 0.0, reasons={"range": 5.0}))
    now = sample(5.0, 0.0, reasons={"range": 7.0, "required": 4.0, "max_length": 1.0})
    assert history.top_reasons("web", now, limit=2) == [{"reason": "required", "count": 4},
                                                        {"reason": "range", "count": 2}]


def test_a_sample_reads_the_relays_counters() -> None:
    metrics = Metrics()
    metrics.entries_accepted.labels("web").inc(3)
    metrics.entries_rejected.labels("web", "range").inc(2)
    metrics.repairs.labels("web", "method", "uppercased").inc()
    metrics.entries_delivered.labels("up").inc(5)
    got = take_sample(metrics, ["web", "quiet"], {"up": 4.0}, at=1.0)
    assert got.sources["web"] == {"requests": 0.0, "accepted": 3.0, "repairs": 1.0, "rejected": 2.0, "filtered": 0.0}
    assert got.sources["quiet"]["accepted"] == 0.0 and got.reasons["web"] == {"range": 2.0}
    assert got.sinks == {"up": {"delivered": 5.0, "upstream_rejected": 0.0, "backlog": 4.0}}


def test_series_of_the_ring_are_kept_until_the_next_sample_and_now_is_always_fresh() -> None:
    history = History()
    history.add(sample(0.0, 0.0))
    history.add(sample(5.0, 50.0))
    assert history.series("sinks", "up", ["delivered"], sample(10.0, 150.0))["delivered"] == [10.0, 20.0]
    assert history.series("sinks", "up", ["delivered"], sample(10.0, 250.0))["delivered"] == [10.0, 40.0]
    history.add(sample(10.0, 100.0))
    assert history.series("sinks", "up", ["delivered"], sample(15.0, 100.0))["delivered"] == [10.0, 10.0, 0.0]

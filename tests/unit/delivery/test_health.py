"""The sink's health state machine, driven by a fake clock (no I/O, no sleeps)."""

import random

from relay.delivery.health import SinkHealth


def health(**kw: float) -> SinkHealth:
    options = {"initial": 0.5, "maximum": 30.0, "probe_interval": 1.0, **kw}
    return SinkHealth(rng=random.Random(7), **options)


def verdicts(h: SinkHealth, now: float, loops: int = 4) -> list[str]:
    return [h.permit(now)[0] for _ in range(loops)]


def test_healthy_lets_every_loop_send() -> None:
    h = health()
    assert verdicts(h, 0.0) == ["send"] * 4
    assert h.sink_state == "running"


def test_while_down_one_probe_at_a_time_and_the_rest_wait() -> None:
    h = health()
    delay = h.failed(0.0, probe=False)
    assert 0.25 <= delay <= 0.5 and h.sink_state == "backing_off"
    verdict, wait = h.permit(0.1)
    assert verdict == "wait" and wait == delay - 0.1
    assert verdicts(h, delay) == ["probe", "wait", "wait", "wait"]
    assert h.permit(delay)[1] is None  # the others wait for the probe's answer, with no timer of their own


def test_sends_in_flight_when_it_went_down_do_not_grow_the_backoff() -> None:
    h = health()
    first = h.failed(0.0, probe=False)
    for _ in range(3):  # the other loops' answers from the same moment
        assert h.failed(0.01, probe=False) == first - 0.01
    assert h.failures == 1


def test_probe_failures_back_off_up_to_the_probe_interval() -> None:
    h = health()
    now = 0.0
    now += h.failed(now, probe=False)
    gaps = []
    for _ in range(20):
        assert h.permit(now)[0] == "probe"
        gap = h.failed(now, probe=True)
        gaps.append(gap)
        now += gap
    assert max(gaps) <= 1.0  # a long outage is still noticed within probe_interval of its end
    assert h.sink_state == "backing_off"


def test_first_success_wakes_everyone_at_once() -> None:
    h = health()
    now = h.failed(0.0, probe=False)
    assert verdicts(h, now) == ["probe", "wait", "wait", "wait"]
    assert h.succeeded() is True  # news: the dispatcher wakes every waiting loop
    assert verdicts(h, now) == ["send"] * 4
    assert h.failures == 0 and h.sink_state == "running"
    assert h.succeeded() is False


def test_a_success_in_flight_ends_the_outage_even_while_a_probe_is_pending() -> None:
    h = health()
    h.failed(0.0, probe=False)
    assert h.succeeded() is True
    assert verdicts(h, 0.0) == ["send"] * 4


def test_retry_after_holds_the_whole_sink_then_resumes_at_full_concurrency() -> None:
    h = health()
    assert h.failed(0.0, probe=False, retry_after=2.0) == 2.0
    assert verdicts(h, 1.0) == ["wait"] * 4
    assert h.permit(1.0)[1] == 1.0
    assert verdicts(h, 2.0) == ["send"] * 4  # no single probe after a Retry-After


def test_retry_after_is_never_shortened_by_a_later_answer() -> None:
    h = health()
    h.failed(0.0, probe=False, retry_after=5.0)
    assert h.failed(1.0, probe=False, retry_after=1.0) == 4.0
    assert h.failed(1.0, probe=False) == 4.0  # a plain 503 in flight changes nothing either
    assert h.permit(4.9)[0] == "wait"


def test_retry_after_wins_over_a_long_backoff() -> None:
    h = health(probe_interval=30.0)
    now = 0.0
    for _ in range(8):
        now += h.failed(now, probe=h.permit(now)[0] == "probe")
    assert h.failed(now, probe=h.permit(now)[0] == "probe", retry_after=2.0) == 2.0


def test_failure_after_retry_after_is_a_new_round() -> None:
    h = health()
    h.failed(0.0, probe=False, retry_after=2.0)
    assert h.permit(2.0)[0] == "send"
    delay = h.failed(2.1, probe=False)
    assert delay > 0 and h.state == "down" and h.failures == 2
    assert h.permit(2.1 + delay)[0] == "probe"


def test_pause_probes_every_maximum_and_wakes_on_reload() -> None:
    h = health()
    assert h.paused(0.0, probe=False) == 30.0
    assert h.sink_state == "paused"
    assert verdicts(h, 29.0) == ["wait"] * 4
    assert verdicts(h, 30.0) == ["probe", "wait", "wait", "wait"]
    assert h.paused(30.0, probe=True) == 30.0
    h.wake(31.0)  # a reload with a new key: try now
    assert h.permit(31.0)[0] == "probe"


def test_a_probe_that_ends_without_an_answer_lets_another_loop_probe() -> None:
    h = health()
    now = h.failed(0.0, probe=False)
    assert h.permit(now)[0] == "probe"
    h.released()
    assert h.permit(now)[0] == "probe"


def test_a_failure_sent_before_the_recovery_does_not_take_the_sink_down_again() -> None:
    h = health()
    before = h.generation
    h.failed(0.0, probe=False, sent_in=before)
    assert h.succeeded()
    h.failed(1.0, probe=False, sent_in=before)  # an answer to a request older than the 2xx
    h.paused(1.0, probe=False, sent_in=before)
    assert h.state == "healthy" and verdicts(h, 1.0) == ["send"] * 4


def test_an_answer_to_the_old_key_does_not_pause_after_a_reload() -> None:
    h = health()
    old = h.generation
    h.paused(0.0, probe=False, sent_in=old)
    h.wake(1.0)
    assert h.permit(1.0)[0] == "probe"
    h.paused(1.1, probe=False, sent_in=old)  # a request sent with the old key, answered late
    assert h.resume_at == 1.0 and h.probing

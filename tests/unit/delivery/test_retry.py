import random

import pytest

from relay.delivery.retry import Outcome, backoff, classify, parse_retry_after


@pytest.mark.parametrize("status,outcome", [
    (200, Outcome.DELIVERED), (202, Outcome.DELIVERED),
    (None, Outcome.RETRY), (408, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY),
    (502, Outcome.RETRY), (503, Outcome.RETRY), (504, Outcome.RETRY),
    (400, Outcome.REFUSED), (413, Outcome.REFUSED), (422, Outcome.REFUSED),
    (401, Outcome.PAUSE), (403, Outcome.PAUSE), (404, Outcome.PAUSE), (501, Outcome.PAUSE),
])
def test_classify_follows_the_status_table(status: int | None, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("99999") == 600.0


def test_backoff_grows_with_jitter_and_stays_under_the_cap() -> None:
    rng = random.Random(1)
    delays = [backoff(n, initial=0.5, maximum=30, rng=rng) for n in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0
    assert all(d <= 30 for d in delays)
    assert delays[-1] >= 15  # capped range is [max/2, max]


def test_retry_after_wins_when_longer() -> None:
    assert backoff(0, initial=0.5, maximum=30, retry_after=12.0) == 12.0

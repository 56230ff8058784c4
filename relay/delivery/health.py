"""One sink's view of upstream health, shared by all its send loops (pure; no I/O, no clock).

Why one state per sink and not one backoff timer per loop: with `concurrency`
independent timers an outage grows each loop's delay separately, so after
recovery a loop could sleep out a 30 s backoff on the oldest batch while the
others, woken by luck, deliver newer ones. Here:

- healthy: every loop sends.
- down (a failure without Retry-After): after a backoff (capped at
  `probe_interval`), ONE loop probes; the others wait. The probe's failure grows the backoff; its success (or any 2xx
  from a send still in flight) makes the sink healthy and wakes every loop at
  once, and they take batches oldest first.
- retry_after: upstream said when to come back. Nobody sends before then, and
  after it every loop sends again (full concurrency), no probe.
- paused: 401/403/404/501 - nothing passes until an operator acts. One probe
  every `retry_max_backoff`, or at once after a reload (`wake`).

The caller passes `now` (monotonic seconds) to every call, so tests drive it
with a fake clock, and gets back when to ask again.
"""

from __future__ import annotations

import random
from typing import Literal

from relay.delivery.retry import backoff

Verdict = Literal["send", "probe", "wait"]
HEALTHY, DOWN, RETRY_AFTER, PAUSED = "healthy", "down", "retry_after", "paused"


class SinkHealth:
    def __init__(self, *, initial: float, maximum: float, probe_interval: float | None = None,
                 rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum  # the pause's retry interval, and a cap of the probe's backoff
        # One probe is cheap for upstream, so it may go often: recovery is noticed within this.
        self.probe_cap = min(maximum, probe_interval if probe_interval is not None else maximum)
        self.rng = rng
        self.state = HEALTHY
        self.failures = 0  # consecutive failed rounds (a round = one probe, or the sends of a healthy spell)
        self.resume_at = 0.0  # down/paused: when the next probe may go; retry_after: when all may send
        self.probing = False  # a probe is in flight
        # Bumped on recovery and on reload: an answer to a request sent before then is
        # older news than the 2xx (or the new key) and must not take the sink down again.
        self.generation = 0

    @property
    def sink_state(self) -> str:
        """The name `relay status`, /readyz and the metrics use: running | backing_off | paused."""
        return {HEALTHY: "running", PAUSED: "paused"}.get(self.state, "backing_off")

    def permit(self, now: float) -> tuple[Verdict, float | None]:
        """May a loop send now? ("wait", seconds or None = until something changes) otherwise."""
        if self.state == HEALTHY:
            return "send", None
        if now < self.resume_at:
            return "wait", self.resume_at - now
        if self.state == RETRY_AFTER:
            return "send", None
        if self.probing:
            return "wait", None  # the probe's answer decides for everyone
        self.probing = True
        return "probe", None

    def succeeded(self) -> bool:
        """Upstream took a batch (or answered it, e.g. a 400 for its content). True if that is news."""
        changed = self.state != HEALTHY
        if changed:
            self.generation += 1
        self.state, self.failures, self.resume_at, self.probing = HEALTHY, 0, 0.0, False
        return changed

    def failed(self, now: float, *, probe: bool, retry_after: float | None = None,
               sent_in: int | None = None) -> float:
        """A retryable failure (5xx, 408, 429, no answer); returns the wait it imposes.

        A send that was already in flight when the sink went down tells nothing new:
        it neither grows the backoff nor brings the next probe forward."""
        if probe:
            self.probing = False
        if sent_in is not None and sent_in != self.generation:
            return max(0.0, self.resume_at - now)  # stale: sent before the sink recovered
        fresh = probe or (self.state in (HEALTHY, RETRY_AFTER) and now >= self.resume_at)
        if retry_after is not None:  # upstream said when: that wins over our own backoff
            if fresh:
                self.failures += 1
            until = now + max(retry_after, self.initial)
            if self.state == RETRY_AFTER:
                until = max(until, self.resume_at)  # never shorten what upstream asked for
            self.state, self.resume_at = RETRY_AFTER, until
            return until - now
        if fresh:
            delay = backoff(self.failures, initial=min(self.initial, self.probe_cap), maximum=self.probe_cap,
                            rng=self.rng)
            self.failures += 1
            self.state, self.resume_at = DOWN, now + delay
        return max(0.0, self.resume_at - now)

    def paused(self, now: float, *, probe: bool, sent_in: int | None = None) -> float:
        """Upstream refuses the key or the URL: hold everything, probe every `maximum` seconds."""
        if probe:
            self.probing = False
        if sent_in is not None and sent_in != self.generation:
            return max(0.0, self.resume_at - now)  # stale: sent with the key before a reload
        if self.state != PAUSED or probe:
            self.state, self.resume_at = PAUSED, now + self.maximum
        return max(0.0, self.resume_at - now)

    def released(self) -> None:
        """The probe ended without an answer about upstream (stopping, local error)."""
        self.probing = False

    def wake(self, now: float) -> None:
        """The config changed (new key or URL): probe now instead of at the next timer."""
        self.generation += 1
        if self.state != HEALTHY:
            self.resume_at = now

"""Outbox events: a wake-up with nothing to seal must not make the next batcher spin."""

from __future__ import annotations

import asyncio

import pytest

from relay.store.outbox import Outbox


def test_a_stopped_batchers_wake_up_does_not_spin_the_next_one() -> None:
    """A reload that restarts a sink stops its batcher (wake_batcher) and starts a new one on the
    same outbox: with the wake-up left set and nothing unsealed, wait_for_data returned at once
    and the new batcher looped without yielding, freezing the event loop."""

    async def scenario() -> None:
        outbox = Outbox("s")
        outbox.wake_batcher()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(outbox.wait_for_data(), 0.05)

    asyncio.run(scenario())

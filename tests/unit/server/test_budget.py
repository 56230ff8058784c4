import asyncio

import pytest

from relay.errors import Unavailable
from relay.server.budget import ByteBudget


def test_requests_wait_for_room_and_one_always_passes() -> None:
    async def main() -> list[str]:
        budget = ByteBudget(100)
        order: list[str] = []

        async def take(name: str, n: int, hold: float) -> None:
            async with budget.hold(n, timeout=5):
                order.append(f"+{name}")
                await asyncio.sleep(hold)
                order.append(f"-{name}")

        # "big" is over capacity on its own: it still passes once the budget is empty.
        await asyncio.gather(take("a", 60, 0.05), take("b", 60, 0.0), take("big", 500, 0.0))
        assert budget.used == 0
        return order

    order = asyncio.run(main())
    assert order.index("-a") < order.index("+b")  # b waited for a
    assert order.index("+big") > order.index("-a")


def test_waiting_too_long_is_a_503() -> None:
    async def main() -> None:
        budget = ByteBudget(10)
        async with budget.hold(10, timeout=1):
            with pytest.raises(Unavailable) as info:
                async with budget.hold(5, timeout=0.05):
                    pass
            assert info.value.status == 503 and "Retry-After" in info.value.headers

    asyncio.run(main())

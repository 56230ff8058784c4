import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RELAY_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak test: run with `make soak` (RELAY_SOAK=1)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)

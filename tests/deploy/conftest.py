"""Container tests run only when selected (`-m deploy`, as make test-deploy does): they take minutes."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the deploy-marked tests unless the marker expression asks for them."""
    if "deploy" in (config.getoption("markexpr") or "").replace("not deploy", ""):
        return
    skip = pytest.mark.skip(reason="needs a Docker engine and minutes: make test-deploy (pytest -m deploy)")
    for item in items:
        if item.get_closest_marker("deploy"):
            item.add_marker(skip)

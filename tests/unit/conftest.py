"""Fixtures of the in-process unit tests."""

from __future__ import annotations

import pytest

from webapp.base.metrics import Metrics


def pytest_itemcollected(item: pytest.Item) -> None:
    """Everything collected in this directory is the `unit` tier (tests/conftest.py orders tiers by
    marker). pytest calls a conftest's collection hooks only for the items under its directory."""
    item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    """The metrics of a module's tiny app (a registry of its own: counts start at zero per module)."""
    return Metrics()

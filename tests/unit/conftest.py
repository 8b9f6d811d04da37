"""Fixtures of the in-process unit tests."""

from __future__ import annotations

import pytest

from webapp.base.metrics import Metrics


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    """The metrics of a module's tiny app (a registry of its own: counts start at zero per module)."""
    return Metrics()

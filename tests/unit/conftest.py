"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from services.points.domain.policy import EarningPolicy, load_policy


@pytest.fixture(scope="module")
def policy() -> EarningPolicy:
    """The default earning policy, read from services/points/policy.toml."""
    return load_policy()

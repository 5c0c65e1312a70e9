"""Fixtures for the exchange tests."""

from __future__ import annotations

import pytest

from .support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()

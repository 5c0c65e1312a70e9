"""Fixtures of the trader tests: a started simulated exchange and repository, closed after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.storage.repository import SqlRepository

from .support import make_exchange, make_repository


@pytest.fixture
async def exchange(tmp_path: Path) -> AsyncIterator[SimulatedExchange]:
    ex = make_exchange(tmp_path)
    await ex.start()
    yield ex
    await ex.close()


@pytest.fixture
async def repository(tmp_path: Path) -> AsyncIterator[SqlRepository]:
    repo = make_repository(tmp_path)
    await repo.start()
    yield repo
    await repo.close()

"""One simulator process per test module; prices move only when a test moves them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.exchange.sim.server.support import SimProcess, running_sim


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with running_sim(tmp_path_factory.mktemp("sim"), "--seed", "5") as process:
        yield process


@pytest.fixture(autouse=True)
def _no_faults(sim: SimProcess) -> Iterator[None]:
    sim.reset_faults()
    yield
    sim.reset_faults()

"""The lock tests' Redis fixtures (one server per session, flushed per test), and the
instances a test starts, closed even when it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.coordination.support import Instances
from tests.lock.conftest import redis, redis_server

__all__ = ["redis", "redis_server"]


@pytest.fixture
async def instances(tmp_path: Path) -> AsyncIterator[Instances]:
    started = Instances(tmp_path)
    yield started
    await started.close()

"""The notification tests' fixtures: the lock tests' Redis (one server per session,
flushed per test) and the coordination tests' in-process instances."""

from __future__ import annotations

from tests.coordination.conftest import instances
from tests.lock.conftest import redis, redis_server

__all__ = ["instances", "redis", "redis_server"]

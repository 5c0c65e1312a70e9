"""The write buffer's readiness check and status section, read through the repository's
durability report (any repository, no type inspection)."""

from __future__ import annotations

from quantmesh.endpoints import database_check, database_section
from quantmesh.storage.base import DurabilityReport


def test_a_buffer_holding_writes_in_memory_only_fails_readiness() -> None:
    report = DurabilityReport(pending=3, in_memory=3, volatile=2, capacity=10)
    check = database_check(report)
    assert not check.ok
    assert database_section(report) == {"buffered_writes": 3, "in_memory": 3}


def test_a_buffer_holding_journaled_writes_is_ready_and_says_how_many() -> None:
    report = DurabilityReport(pending=5, in_memory=1, volatile=0, capacity=10)
    assert database_check(report).ok
    assert database_section(report) == {"buffered_writes": 5, "in_memory": 1}


def test_a_repository_without_a_buffer_has_nothing_to_report() -> None:
    report = None
    assert database_check(report).ok
    assert database_section(report) == {"buffered_writes": 0, "in_memory": 0}

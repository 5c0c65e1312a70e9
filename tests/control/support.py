"""A control store in memory, for the tests of the board and the control endpoints."""

from __future__ import annotations

from quantmesh.control.board import AuditEntry
from quantmesh.control.desired import Desired
from quantmesh.errors import StorageUnavailable


class MemoryStore:
    """A ``ControlStore`` in a dict (the SQL one is tested against the databases)."""

    def __init__(self) -> None:
        self.controls: dict[str, Desired] = {}
        self.audit: list[AuditEntry] = []
        self.down = False

    async def load_controls(self) -> dict[str, Desired]:
        if self.down:
            raise StorageUnavailable("database unreachable")
        return dict(self.controls)

    async def save_control(self, entry: AuditEntry) -> None:
        if self.down:
            raise StorageUnavailable("database unreachable")
        self.controls[entry.symbol] = entry.desired
        self.audit.append(entry)

    async def control_audit(self, symbol: str | None, limit: int) -> list[AuditEntry]:
        entries = [e for e in self.audit if symbol is None or e.symbol == symbol]
        return entries[::-1][:limit]

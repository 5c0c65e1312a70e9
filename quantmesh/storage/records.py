"""Buffered writes as plain records, and their exact JSON form for the journal.

A ``Record`` is one repository write the database could not take: its kind (``op``), a
sequence number, and the domain objects. ``encode``/``decode`` turn it into one JSON line
and back; decimals travel as their exact text, floats as ``repr`` (both round-trip
exactly). Pure code, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, TypeVar, get_type_hints

from quantmesh.domain import Fill, Order
from quantmesh.grid.state import GridShape, LevelState, RoundTrip

Op = Literal["orders", "fills", "round_trips", "levels", "shape", "execution"]
OPS: Final = frozenset({"orders", "fills", "round_trips", "levels", "shape", "execution"})
_T = TypeVar("_T")


class CorruptRecord(ValueError):
    """A journal line that is not a record this version can read."""


@dataclass(frozen=True, slots=True)
class Record:
    """One buffered write. Unused parts stay empty; ``fence`` matters for grid state."""

    seq: int
    op: Op
    symbol: str = ""
    orders: tuple[Order, ...] = ()
    fills: tuple[Fill, ...] = ()
    levels: tuple[LevelState, ...] = ()
    round_trips: tuple[RoundTrip, ...] = ()
    shape: GridShape | None = None
    fence: int = 0

    @property
    def size(self) -> int:
        """Rows this record writes (for batch sizing)."""
        return max(len(self.orders) + len(self.fills) + len(self.levels) + len(self.round_trips), 1)


def _decimal_fields(cls: type) -> frozenset[str]:
    hints = get_type_hints(cls)
    return frozenset(f.name for f in fields(cls) if hints[f.name] in (Decimal, Decimal | None))


_DECIMALS: Final[dict[type, frozenset[str]]] = {
    cls: _decimal_fields(cls) for cls in (Order, Fill, LevelState, RoundTrip, GridShape)
}


def _dump(obj: Any) -> dict[str, Any]:
    decimals = _DECIMALS[type(obj)]
    out = {}
    for field in fields(obj):
        value = getattr(obj, field.name)
        out[field.name] = str(value) if field.name in decimals and value is not None else value
    return out


def _load(cls: type[_T], data: Any) -> _T:
    if not isinstance(data, dict):
        raise CorruptRecord(f"expected an object for {cls.__name__}")
    decimals = _DECIMALS[cls]
    values = {}
    try:
        for field in fields(cls):  # type: ignore[arg-type]  # the domain classes are dataclasses
            if field.name not in data:
                continue  # a field added since the record was written keeps its default
            value = data[field.name]
            if field.name in decimals and value is not None:
                value = Decimal(value)
            values[field.name] = value
        return cls(**values)
    except (TypeError, InvalidOperation) as exc:
        raise CorruptRecord(f"bad {cls.__name__}: {exc}") from None


def _load_all(cls: type[_T], data: Any) -> tuple[_T, ...]:
    if not isinstance(data, list):
        raise CorruptRecord(f"expected a list of {cls.__name__}")
    return tuple(_load(cls, item) for item in data)


def encode(record: Record) -> bytes:
    """One journal line (ending in a newline)."""
    body: dict[str, Any] = {"seq": record.seq, "op": record.op}
    if record.symbol:
        body["symbol"] = record.symbol
    if record.orders:
        body["orders"] = [_dump(o) for o in record.orders]
    if record.fills:
        body["fills"] = [_dump(f) for f in record.fills]
    if record.levels:
        body["levels"] = [_dump(lv) for lv in record.levels]
    if record.round_trips:
        body["round_trips"] = [_dump(t) for t in record.round_trips]
    if record.shape is not None:
        body["shape"] = _dump(record.shape)
    if record.fence:
        body["fence"] = record.fence
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Record:
    """The record of one journal line; ``CorruptRecord`` when it is not one."""
    try:
        body = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CorruptRecord("not a JSON object")
    kind, seq = body.get("op"), body.get("seq")
    if kind not in OPS or not isinstance(seq, int):
        raise CorruptRecord(f"unknown record kind {kind!r}")
    fence = body.get("fence", 0)
    symbol = body.get("symbol", "")
    if not isinstance(fence, int) or not isinstance(symbol, str):
        raise CorruptRecord("bad fence or symbol")
    shape = body.get("shape")
    return Record(
        seq=seq,
        op=kind,
        symbol=symbol,
        orders=_load_all(Order, body.get("orders", [])),
        fills=_load_all(Fill, body.get("fills", [])),
        levels=_load_all(LevelState, body.get("levels", [])),
        round_trips=_load_all(RoundTrip, body.get("round_trips", [])),
        shape=None if shape is None else _load(GridShape, shape),
        fence=fence,
    )


def describe(records: Sequence[Record]) -> str:
    """A short text naming what a batch holds, for logs (no values)."""
    kinds: dict[str, int] = {}
    for record in records:
        kinds[record.op] = kinds.get(record.op, 0) + 1
    return ", ".join(f"{n} {op}" for op, n in sorted(kinds.items()))

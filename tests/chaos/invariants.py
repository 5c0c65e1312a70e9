"""Safety invariants of a multi-instance run, checked from the simulator's own records.

Pure functions, no I/O: the caller fetches the records (``SimProcess.orders()``,
``.actions()``, ``.trades()`` in ``tests/exchange/sim/server/support.py``) and the daemons' stored
trade ids, and passes them in. The records are the simulator's JSON:

orders (``GET /_sim/orders``)
    ``symbol`` (``ETH/USDT``), ``side``, ``price`` (decimal string), ``client_order_id``,
    ``exchange_order_id``, ``status``, ``filled`` (decimal string), ``created_at``,
    ``updated_at``, ``closed_at`` (None while open), ``api_key`` (None when unknown).
actions (``GET /_sim/actions``)
    ``t``, ``api_key``, ``action`` (``create`` | ``cancel``), ``symbol``,
    ``client_order_id``, ``exchange_order_id``, ``side``, ``price``, ``result``
    (``accepted`` | ``rejected``), ``code`` (Binance error code or None).
trades (``GET /_sim/trades``)
    ``trade_id``, ``client_order_id``, ``exchange_order_id``, ``symbol``, ``side``,
    ``price``, ``amount``, ``fee``, ``ts``.

Times are the simulator's wall clock (epoch seconds), the same for all three.

Client order ids (``quantmesh.grid.ids``): ``qm.<tag>.<B|S><level>.<cycle>``. A buy on
level ``i`` is placed with the level's cycle ``c`` (``B<i>.<c>``); when it closes having
bought something the level's cycle becomes ``c + 1`` (``ledger.close_buy``), so the sell of
that inventory is ``S<i>.<c+1>``: it carries the level of the buy it sells (it sits on level
``i``, priced one level up), and its cycle is one more than the buy's. A completed sell
leaves the cycle as is, so the level's next buy is ``B<i>.<c+1>``.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import Any

from quantmesh.grid.ids import parse_client_order_id

Record = Mapping[str, Any]

__all__ = [
    "EXPIRED",
    "DoubleBuy",
    "DoubleSell",
    "FillCheck",
    "Interleaving",
    "Leaseless",
    "Overlap",
    "OwnerSwitches",
    "Reuse",
    "double_buys",
    "double_sells",
    "expired_by_key",
    "fills_vs_db",
    "interleavings",
    "late_actions",
    "open_overlaps",
    "owner_switches",
    "reused_after_fill",
    "summary",
]

EXPIRED = -1021  # Binance: the request arrived after its timestamp + recvWindow


# -- open overlaps ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two orders open at the same time on the same symbol, side and price."""

    symbol: str
    side: str
    price: Decimal
    first: str  # client order id of the order created first
    second: str
    first_order_id: str  # exchange order ids
    second_order_id: str
    since: float  # when the second was created (both open from then on)
    until: float  # when the first of the two closed (inf: both still open)


def _closed_at(order: Record) -> float:
    closed = order.get("closed_at")
    return math.inf if closed is None else float(closed)


def open_overlaps(orders: Iterable[Record], *, by_level: bool = False) -> list[Overlap]:
    """Every pair of orders open at once on the same (symbol, side, price): a duplicate, as
    the grid never places a second order on a level, and each level has its own price.
    ``by_level``: on the same (symbol, side, grid level) instead - a liquidation sells
    several levels at one price, each level once.

    An order is open from ``created_at`` until ``closed_at`` (exclusive; None: still open,
    so until +inf). An order closed at the very instant another is created does not overlap
    it. Prices compare as numbers (``"2000"`` equals ``"2000.00"``).
    """
    groups: dict[tuple[str, str, Decimal | str], list[Record]] = {}
    for order in orders:
        where: Decimal | str = Decimal(str(order["price"]))
        if by_level:
            parsed = parse_client_order_id(str(order["client_order_id"]))
            where = (
                str(order["client_order_id"]) if parsed is None else f"{parsed.tag}:{parsed.level}"
            )
        groups.setdefault((str(order["symbol"]), str(order["side"]), where), []).append(order)
    found: list[Overlap] = []
    for (symbol, side, _), group in groups.items():
        group.sort(key=lambda o: (float(o["created_at"]), _order_number(o)))
        active: list[tuple[float, int, Record]] = []  # heap of (closes at, index, order)
        for index, order in enumerate(group):
            start = float(order["created_at"])
            while active and active[0][0] <= start:
                heapq.heappop(active)
            if _closed_at(order) <= start:
                continue  # closed the instant it was created: never open beside another
            for ends, _, other in sorted(active, key=lambda item: item[1]):
                found.append(
                    Overlap(
                        symbol=symbol,
                        side=side,
                        price=Decimal(str(order["price"])),
                        first=str(other["client_order_id"]),
                        second=str(order["client_order_id"]),
                        first_order_id=str(other["exchange_order_id"]),
                        second_order_id=str(order["exchange_order_id"]),
                        since=start,
                        until=min(ends, _closed_at(order)),
                    )
                )
            heapq.heappush(active, (_closed_at(order), index, order))
    found.sort(key=lambda o: (o.since, o.symbol, o.first_order_id))
    return found


def _order_number(order: Record) -> int:
    value = str(order.get("exchange_order_id") or "")
    return int(value) if value.isdigit() else 0


# -- double buys -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoubleBuy:
    """A grid level that bought again while the inventory of its previous buy was unsold."""

    symbol: str
    tag: str
    level: int
    first: str  # client order id of the earlier buy
    second: str  # of the buy that should not have happened
    first_filled_at: float
    second_filled_at: float

    @property
    def same_cycle(self) -> bool:
        """Both buys carry the same cycle: the second was placed from a level state that
        had not seen the first fill (a stale or concurrent instance)."""
        first, second = parse_client_order_id(self.first), parse_client_order_id(self.second)
        return first is not None and second is not None and first.cycle == second.cycle


def _filled_at(order: Record) -> float:
    closed = order.get("closed_at")
    return float(order["updated_at"] if closed is None else closed)


@dataclass(frozen=True, slots=True)
class DoubleSell:
    """A grid level that sold again with no buy since its previous sale: inventory sold
    twice."""

    symbol: str
    tag: str
    level: int
    first: str  # client order id of the earlier sell
    second: str  # of the sell that should not have happened
    first_filled_at: float
    second_filled_at: float


_LevelKey = tuple[str, str, int]  # symbol, grid tag, level


def _fills_by_level(orders: Iterable[Record]) -> dict[_LevelKey, list[tuple[float, str, Record]]]:
    """Per (symbol, grid tag, level), our orders that filled something, in fill order
    (``closed_at``, or ``updated_at`` for an order still open; ties by exchange order id),
    as (filled at, side, order). A sell ``S<level>`` sells the buy of ``<level>``."""
    levels: dict[_LevelKey, list[tuple[float, int, str, Record]]] = {}
    for order in orders:
        key = parse_client_order_id(str(order["client_order_id"]))
        if key is None or Decimal(str(order["filled"])) <= 0:
            continue
        entry = (_filled_at(order), _order_number(order), key.side, order)
        levels.setdefault((str(order["symbol"]), key.tag, key.level), []).append(entry)
    result: dict[_LevelKey, list[tuple[float, str, Record]]] = {}
    for level, entries in levels.items():
        entries.sort(key=lambda e: (e[0], e[1]))
        result[level] = [(filled_at, side, order) for filled_at, _, side, order in entries]
    return result


def _repeats(
    orders: Iterable[Record], side: str
) -> Iterator[tuple[_LevelKey, tuple[float, Record], tuple[float, Record]]]:
    """Per level, each fill of ``side`` with no fill of the other side since the previous
    fill of ``side``: (level, (filled at, earlier order), (filled at, repeated order))."""
    for level, entries in _fills_by_level(orders).items():
        last: tuple[float, Record] | None = None  # the latest fill of ``side``, not yet undone
        for filled_at, order_side, order in entries:
            if order_side != side:
                last = None
                continue
            if last is not None:
                yield level, last, (filled_at, order)
            last = (filled_at, order)


def double_buys(orders: Iterable[Record]) -> list[DoubleBuy]:
    """Levels bought twice without a sell in between.

    Per (symbol, grid tag, level), the orders of ours that filled something (``filled > 0``)
    are taken in fill order (``closed_at``, or ``updated_at`` for an order still open; ties
    by exchange order id). A buy fill puts inventory on the level; any sell fill of the level
    (``S<level>``: the sell of the buy on ``<level>``) takes it off. A second buy while the
    level still holds inventory is a double buy. Foreign orders (ids not of our form) are
    ignored.

    A buy that filled only dust (below the market minimum) leaves the level free to buy
    again by design; the simulator fills every order whole, so that does not arise here.
    """
    found = [
        DoubleBuy(
            symbol=symbol,
            tag=tag,
            level=level,
            first=str(first[1]["client_order_id"]),
            second=str(second[1]["client_order_id"]),
            first_filled_at=first[0],
            second_filled_at=second[0],
        )
        for (symbol, tag, level), first, second in _repeats(orders, "buy")
    ]
    found.sort(key=lambda d: (d.second_filled_at, d.symbol, d.level))
    return found


def double_sells(orders: Iterable[Record]) -> list[DoubleSell]:
    """Levels sold twice without a buy in between: the mirror of ``double_buys``.

    A level sells only what its buy put on it (the simulator fills every order whole), so a
    second sell fill before the next buy fill sells inventory the level no longer holds: a
    new owner that applied a level's facts out of order, or placed a finished sell again.
    """
    found = [
        DoubleSell(
            symbol=symbol,
            tag=tag,
            level=level,
            first=str(first[1]["client_order_id"]),
            second=str(second[1]["client_order_id"]),
            first_filled_at=first[0],
            second_filled_at=second[0],
        )
        for (symbol, tag, level), first, second in _repeats(orders, "sell")
    ]
    found.sort(key=lambda d: (d.second_filled_at, d.symbol, d.level))
    return found


# -- ids placed again after they filled ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reuse:
    """A client order id the exchange accepted again after an order with that id filled."""

    symbol: str
    client_order_id: str
    first_order_id: str  # exchange order ids
    second_order_id: str
    first_filled_at: float
    second_created_at: float
    second_filled: bool  # the repeat filled too: inventory bought or sold twice


def _completed(order: Record) -> bool:
    """Whether ``order`` finished its level's step, so its id's cycle is over: a buy that
    filled anything (the level's cycle moves on), a sell that filled whole (a round trip)."""
    filled = Decimal(str(order["filled"])) > 0
    return filled if order["side"] == "buy" else filled and order["status"] == "filled"


def reused_after_fill(orders: Iterable[Record]) -> list[Reuse]:
    """Our client order ids placed again after an order with the same id completed.

    An id is ``<level>.<cycle>``: a buy cancelled without a fill is placed again with its
    id, and so is the rest of a partly filled sell; but once a buy has filled, or a sell has
    filled whole, the level has moved on, and the same id again acts on that level a second
    time: a buy of inventory already bought, a sale of inventory already sold (an instance
    that placed it from a grid missing that fill, or a request that landed late). Caught as
    soon as the repeat is accepted, before it fills.
    """
    by_id: dict[tuple[str, str], list[Record]] = {}
    for order in orders:
        cid = str(order["client_order_id"])
        if parse_client_order_id(cid) is not None:
            by_id.setdefault((str(order["symbol"]), cid), []).append(order)
    found: list[Reuse] = []
    for (symbol, cid), group in by_id.items():
        group.sort(key=lambda o: (float(o["created_at"]), _order_number(o)))
        done: Record | None = None  # the first copy that completed
        for order in group:
            if done is not None and float(order["created_at"]) >= _filled_at(done):
                found.append(
                    Reuse(
                        symbol=symbol,
                        client_order_id=cid,
                        first_order_id=str(done["exchange_order_id"]),
                        second_order_id=str(order["exchange_order_id"]),
                        first_filled_at=_filled_at(done),
                        second_created_at=float(order["created_at"]),
                        second_filled=Decimal(str(order["filled"])) > 0,
                    )
                )
            if done is None and _completed(order):
                done = order
    found.sort(key=lambda r: (r.second_created_at, r.symbol, r.client_order_id))
    return found


# -- who traded a symbol ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnerSwitches:
    """How often the API key acting on one symbol changed."""

    count: int
    changes: tuple[tuple[float, str, str], ...] = field(default=())  # (t, from key, to key)


def _accepted_by_symbol(actions: Iterable[Record]) -> dict[str, list[Record]]:
    by_symbol: dict[str, list[Record]] = {}
    for action in actions:
        if action.get("result") == "accepted" and action.get("api_key") is not None:
            by_symbol.setdefault(str(action["symbol"]), []).append(action)
    for records in by_symbol.values():
        records.sort(key=lambda a: float(a["t"]))  # stable: log order breaks ties
    return by_symbol


def owner_switches(actions: Iterable[Record]) -> dict[str, OwnerSwitches]:
    """Per symbol, each change of API key between consecutive accepted actions (by ``t``).

    One instance trading a symbol and handing it over on failover gives a handful; two
    instances trading it at once alternate all the time. Rejected actions do not count (a
    refused duplicate is the exchange keeping the second instance out).
    """
    result: dict[str, OwnerSwitches] = {}
    for symbol, records in _accepted_by_symbol(actions).items():
        changes = tuple(
            (float(b["t"]), str(a["api_key"]), str(b["api_key"]))
            for a, b in pairwise(records)
            if a["api_key"] != b["api_key"]
        )
        result[symbol] = OwnerSwitches(len(changes), changes)
    return result


@dataclass(frozen=True, slots=True)
class Interleaving:
    """Key ``key`` acted on ``symbol``, then ``other``, then ``key`` again, within a window."""

    symbol: str
    key: str
    other: str
    start: float  # t of key's first action
    middle: float  # t of other's (the first after start)
    end: float  # t of key's next action


def interleavings(actions: Iterable[Record], window: float) -> dict[str, list[Interleaving]]:
    """Per symbol, every A, B, A pattern of accepted actions (A and B different API keys)
    spanning at most ``window`` seconds: two instances trading one symbol at once.

    Each case pairs an action of A with A's previous action on the symbol, when another key
    acted in between and the two are at most ``window`` apart; every A-B-A within the
    window contains at least one such case. Symbols without a case are left out.
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    result: dict[str, list[Interleaving]] = {}
    for symbol, records in _accepted_by_symbol(actions).items():
        last: dict[str, int] = {}  # key -> index of its latest action
        for index, action in enumerate(records):
            key = str(action["api_key"])
            previous = last.get(key)
            last[key] = index
            if previous is None or index - previous < 2:
                continue
            start, end = float(records[previous]["t"]), float(action["t"])
            if end - start > window:
                continue
            between = records[previous + 1]  # another key: A's own would be ``previous``
            result.setdefault(symbol, []).append(
                Interleaving(symbol, key, str(between["api_key"]), start, float(between["t"]), end)
            )
    return result


# -- requests after their lease ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leaseless:
    """A span in which the instance of API key ``key`` held no lease: its ownership had
    ended (``start``: the fault that cut its renewals, plus the lease TTL, by which its lease
    has ended on its own clock) and it could not have taken one again (``end``: the fault
    was lifted and the instance found every symbol owned elsewhere)."""

    key: str
    start: float
    end: float
    fault: str  # the scenario, for the report


def late_actions(
    actions: Iterable[Record], spans: Iterable[Leaseless]
) -> list[tuple[Leaseless, Record]]:
    """Creates and cancels the exchange accepted from a key inside one of its leaseless
    spans: requests executed after the lease they were sent under had ended.

    Every create and cancel expires before its lease ends, so the exchange refuses a late
    one (-1021) wherever it was held up: in a frozen process between the lease check and
    the socket write, or on the network. An accepted one can be a double buy.
    """
    spans = list(spans)
    found: list[tuple[Leaseless, Record]] = []
    for action in actions:
        if action.get("result") != "accepted":
            continue
        t = float(action["t"])
        for span in spans:
            if action.get("api_key") == span.key and span.start < t <= span.end:
                found.append((span, action))
    found.sort(key=lambda pair: float(pair[1]["t"]))
    return found


def expired_by_key(actions: Iterable[Record]) -> Counter[str]:
    """Creates and cancels the exchange refused as expired (-1021), per API key."""
    return Counter(
        str(a["api_key"])
        for a in actions
        if a.get("result") == "rejected" and a.get("code") == EXPIRED
    )


# -- fills against the database --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FillCheck:
    """Trade ids of the simulator against those the daemons stored (sorted, as strings)."""

    missing: list[str]  # filled on the simulator, stored by no instance
    extra: list[str]  # stored, but the simulator has no such fill
    duplicated: list[str]  # stored more than once

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.duplicated)


def _id_order(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.isdigit() else (1, value)


def fills_vs_db(sim_trades: Iterable[Record], db_trade_ids: Iterable[str | int]) -> FillCheck:
    """Compare the simulator's fills with the trade ids in the daemons' database(s).

    ``db_trade_ids`` lists every stored row's trade id (one entry per row, rows of all
    databases together), so a fill recorded twice shows up as duplicated. The simulator's
    trade ids are unique across its symbols.
    """
    sim_ids = {str(t["trade_id"]) for t in sim_trades}
    counts = Counter(str(i) for i in db_trade_ids)
    return FillCheck(
        missing=sorted(sim_ids - counts.keys(), key=_id_order),
        extra=sorted(counts.keys() - sim_ids, key=_id_order),
        duplicated=sorted((i for i, n in counts.items() if n > 1), key=_id_order),
    )


# -- summary ---------------------------------------------------------------------------------


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counter.items(), key=lambda kv: str(kv[0])))


def summary(
    orders: Sequence[Record],
    actions: Sequence[Record],
    trades: Sequence[Record] = (),
    db_trade_ids: Iterable[str | int] | None = None,
    window: float = 5.0,
) -> str:
    """A few lines on a run: orders and fills, actions per result and key, rejections by
    code, requests refused as expired per key, owner switches and interleavings per
    symbol, duplicates, double buys and sells, ids placed again after they filled, and (with
    ``db_trade_ids``) fills lost or stored twice."""
    status = Counter(str(o["status"]) for o in orders)
    sides = Counter(str(o["side"]) for o in orders)
    kinds = Counter(f"{a['action']}/{a['result']}" for a in actions)
    codes = Counter(a["code"] for a in actions if a.get("result") == "rejected")
    expired = expired_by_key(actions)
    keys = Counter(str(a["api_key"]) for a in actions if a.get("result") == "accepted")
    switches = owner_switches(actions)
    mixed = interleavings(actions, window)
    lines = [
        f"orders: {len(orders)} ({_counts(sides)}; {_counts(status)}), fills: {len(trades)}",
        f"actions: {len(actions)} ({_counts(kinds)})",
        f"rejected by code: {_counts(codes) or 'none'}",
        f"refused as expired ({EXPIRED}) by key: {_counts(expired) or 'none'}",
        f"accepted by key: {_counts(keys) or 'none'}",
        "owner switches: "
        + (", ".join(f"{s}={v.count}" for s, v in sorted(switches.items())) or "none"),
        f"interleavings within {window:g} s: "
        + (", ".join(f"{s}={len(v)}" for s, v in sorted(mixed.items())) or "none"),
        f"open overlaps (duplicates): {len(open_overlaps(orders))}",
        f"double buys: {len(double_buys(orders))}",
        f"double sells: {len(double_sells(orders))}",
        f"ids placed again after they filled: {len(reused_after_fill(orders))}",
    ]
    if db_trade_ids is not None:
        check = fills_vs_db(trades, db_trade_ids)
        lines.append(
            f"fills vs db: missing={len(check.missing)} extra={len(check.extra)} "
            f"duplicated={len(check.duplicated)}"
        )
    return "\n".join(lines)

"""PnL as a trader reads it, from what the ledger and the database hold. Pure and exact (a
private 60-digit decimal context, as the ledger's).

- ``position(levels, progress, price)``: the held inventory, what it cost, its average
  cost, and the unrealized PnL at ``price`` - the value of what is held plus what its
  partial sells already brought in, less what was paid for it;
- ``daily(trades, trips)``: per UTC day, exchange and symbol, the round trips closed,
  realized PnL, buys and sells (count, base amount, quote value) and the fees paid, those
  in the quote currency summed and those in any other currency (BNB on Binance) listed by
  currency, unconverted;
- ``performance(trades, price)``: one grid's figures over its whole history - total PnL,
  fees by currency, the capital it committed, the return on it, and buy-and-hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any, Final

from quantmesh.grid.ids import parse_client_order_id
from quantmesh.grid.ledger import SellProgress
from quantmesh.grid.state import LevelState

_EXACT: Final = Context(prec=60)
ZERO: Final = Decimal(0)
_PLACES: Final = Decimal("1e-18")  # an average cost's decimals, as the database stores

DAILY_COLUMNS: Final = (
    "date", "exchange", "symbol", "round_trips", "realized_pnl", "buys", "sells", "bought",
    "sold", "bought_quote", "sold_quote", "fees_quote", "fees_other",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Position:
    """What a grid holds at one price: base ``inventory``, the quote it ``cost`` (fees in
    quote included; a partly sold level keeps its whole cost, and what its sells brought in
    is ``sold_proceeds``), ``average_cost`` of a unit held net of those proceeds (18
    decimals; None when nothing is held) and ``unrealized`` PnL at ``price``."""

    inventory: Decimal
    cost: Decimal
    sold_proceeds: Decimal
    average_cost: Decimal | None
    unrealized: Decimal


def position(
    levels: Iterable[LevelState],
    progress: Mapping[int, SellProgress],
    price: Decimal,
) -> Position:
    """The grid's position at ``price``. ``progress`` is the ledger's sell progress of each
    level's current cycle, by level index (as the order book keeps it)."""
    inventory = cost = proceeds = ZERO
    for level in levels:
        if level.holding <= 0 and level.cost <= 0:
            continue
        inventory = _EXACT.add(inventory, level.holding)
        cost = _EXACT.add(cost, level.cost)
        sold = progress.get(level.index)
        if sold is not None:
            proceeds = _EXACT.add(proceeds, sold.proceeds)
    value = _EXACT.multiply(inventory, price)
    unrealized = _EXACT.subtract(_EXACT.add(value, proceeds), cost)
    average = None
    if inventory:
        average = _EXACT.quantize(
            _EXACT.divide(_EXACT.subtract(cost, proceeds), inventory), _PLACES
        )
    return Position(inventory, cost, proceeds, average, unrealized)


def day_of(timestamp: float) -> str:
    """The UTC date of a Unix time, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def quote_of(symbol: str) -> str:
    """``ETH/USDT`` -> ``USDT``."""
    return symbol.partition("/")[2]


@dataclass(slots=True)
class _Day:
    round_trips: int = 0
    realized_pnl: Decimal = ZERO
    buys: int = 0
    sells: int = 0
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    bought_quote: Decimal = ZERO
    sold_quote: Decimal = ZERO
    fees_quote: Decimal = ZERO
    fees_other: dict[str, Decimal] | None = None

    def fill(self, side: str, amount: Decimal, value: Decimal) -> None:
        if side == "buy":
            self.buys += 1
            self.bought = _EXACT.add(self.bought, amount)
            self.bought_quote = _EXACT.add(self.bought_quote, value)
        else:
            self.sells += 1
            self.sold = _EXACT.add(self.sold, amount)
            self.sold_quote = _EXACT.add(self.sold_quote, value)

    def fee(self, amount: Decimal, currency: str, quote: str) -> None:
        if not amount:
            return
        if currency == quote:
            self.fees_quote = _EXACT.add(self.fees_quote, amount)
        else:
            other = self.fees_other if self.fees_other is not None else {}
            other[currency] = _EXACT.add(other.get(currency, ZERO), amount)
            self.fees_other = other


def daily(
    trades: Iterable[Mapping[str, Any]], trips: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (UTC day, exchange, symbol) with any fill or round trip, in that order.

    ``trades`` and ``trips`` are the export's records (``storage.export``: ``time``, ``side``,
    ``amount``, ``quote_amount``, ``fee``, ``fee_currency``; ``closed_at``, ``pnl``).
    ``fees_other`` reads ``BNB 0.0001; ...`` (sorted by currency), empty when none.
    """
    days: dict[tuple[str, str, str], _Day] = {}

    def of(at: float, record: Mapping[str, Any]) -> _Day:
        key = (day_of(at), str(record["exchange"]), str(record["symbol"]))
        return days.setdefault(key, _Day())

    for trade in trades:
        day = of(trade["time"], trade)
        day.fill(trade["side"], trade["amount"], trade["quote_amount"])
        day.fee(trade["fee"], trade["fee_currency"], quote_of(trade["symbol"]))
    for trip in trips:
        day = of(trip["closed_at"], trip)
        day.round_trips += 1
        day.realized_pnl = _EXACT.add(day.realized_pnl, trip["pnl"])
    rows = []
    for (date, exchange, symbol), day in sorted(days.items()):
        other = day.fees_other or {}
        rows.append(
            {
                "date": date,
                "exchange": exchange,
                "symbol": symbol,
                "round_trips": day.round_trips,
                "realized_pnl": day.realized_pnl,
                "buys": day.buys,
                "sells": day.sells,
                "bought": day.bought,
                "sold": day.sold,
                "bought_quote": day.bought_quote,
                "sold_quote": day.sold_quote,
                "fees_quote": day.fees_quote,
                "fees_other": "; ".join(f"{c} {_plain(v)}" for c, v in sorted(other.items())),
            }
        )
    return rows


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


@dataclass(frozen=True, slots=True)
class Performance:
    """One grid's figures over the trades given (``performance``).

    ``total``: realized plus unrealized PnL - what the sells brought in less what the buys
    cost, fees in the quote currency included, plus what is held at the price (None
    without a price). Fees in another currency (BNB) are not converted (no rate is
    stored with a fill): they are in ``fees`` by currency only. ``capital``: the most quote
    the grid held in inventory at cost at one time (open buys not counted: the database
    keeps fills, not a history of open orders). ``return_percent``: ``total`` on
    ``capital``; ``hold_percent``: that capital in the base currency from the first fill's
    price to ``price`` instead.
    """

    total: Decimal | None
    fees: dict[str, Decimal]
    capital: Decimal
    first_price: Decimal | None
    return_percent: Decimal | None
    hold_percent: Decimal | None


def performance(trades: Iterable[Mapping[str, Any]], price: Decimal | None) -> Performance:
    """The figures of one grid's ``trades`` (export records, oldest first) at ``price``."""
    cash = base = capital = committed = ZERO
    first: Decimal | None = None
    fees: dict[str, Decimal] = {}
    held: dict[int | None, tuple[Decimal, Decimal]] = {}  # level -> (base, cost)
    for trade in trades:
        symbol = str(trade["symbol"])
        quote, asset = quote_of(symbol), symbol.partition("/")[0]
        amount, value = trade["amount"], trade["quote_amount"]
        fee, currency = trade["fee"], str(trade["fee_currency"])
        first = trade["price"] if first is None else first
        if fee:
            fees[currency] = _EXACT.add(fees.get(currency, ZERO), fee)
        quote_fee = fee if fee and currency == quote else ZERO
        base_fee = fee if fee and currency == asset else ZERO
        key = parse_client_order_id(str(trade["client_order_id"]))
        level = None if key is None else key.level
        level_base, level_cost = held.get(level, (ZERO, ZERO))
        if trade["side"] == "buy":
            cash = _EXACT.subtract(cash, _EXACT.add(value, quote_fee))
            got = _EXACT.subtract(amount, base_fee)
            base = _EXACT.add(base, got)
            level_base = _EXACT.add(level_base, got)
            level_cost = _EXACT.add(level_cost, _EXACT.add(value, quote_fee))
        else:
            cash = _EXACT.add(cash, _EXACT.subtract(value, quote_fee))
            gone = _EXACT.add(amount, base_fee)
            base = _EXACT.subtract(base, gone)
            if level_base > 0:  # the level's cost goes with the share of it sold
                share = min(_EXACT.divide(gone, level_base), Decimal(1))
                level_cost = _EXACT.subtract(level_cost, _EXACT.multiply(level_cost, share))
            level_base = max(_EXACT.subtract(level_base, gone), ZERO)
        committed = _EXACT.add(committed, _EXACT.subtract(level_cost, held.get(level, (0, 0))[1]))
        held[level] = (level_base, level_cost)
        capital = max(capital, committed)
    total = None if price is None else _EXACT.add(cash, _EXACT.multiply(base, price))
    hundred = Decimal(100)
    return Performance(
        total=total,
        fees=fees,
        capital=capital,
        first_price=first,
        return_percent=(
            None
            if total is None or not capital
            else _percent(_EXACT.divide(_EXACT.multiply(total, hundred), capital))
        ),
        hold_percent=(
            None
            if price is None or not first
            else _percent(_EXACT.multiply(_EXACT.subtract(_EXACT.divide(price, first), 1), hundred))
        ),
    )


def _percent(value: Decimal) -> Decimal:
    """Two decimals; a loss too small to show is 0, not -0."""
    rounded = _EXACT.quantize(value, _CENT)
    return rounded if rounded else ZERO


_CENT: Final = Decimal("0.01")

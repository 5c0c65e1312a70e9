"""The simulated exchange's matching engine: pure, synchronous, no I/O.

Orders are limit orders that fill fully, either at once at the last price when they are
marketable (taker) or later at their own price when a price update crosses them (maker).
A price crosses an order when it reaches the order's price (``touch``, the default) or, with
``fill_rule="through"``, only when it goes strictly beyond it. Fees are charged in the quote
currency on both sides, at one rate or at a market's own maker and taker rates. The whole state can be exported as a
JSON-compatible snapshot and restored, so a caller can persist it; ``snapshot_header`` and
``order_snapshot`` let the caller write only what changed.

Resting orders are indexed by price, one sorted list per side and market (best first, then
oldest first), so a price update looks only at the orders it crosses: a prefix of each list.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from quantmesh.domain import Fill, MarketRules, Order, OrderRequest, OrderStatus, OrderUpdate
from quantmesh.errors import (
    DuplicateOrder,
    InsufficientFunds,
    InvalidOrder,
    MarketNotFound,
    OrderNotFound,
)

SNAPSHOT_VERSION = 1
# Binance accepts client order ids matching this pattern; enforcing it here makes an id scheme
# that Binance would refuse fail in simulation first.
CLIENT_ORDER_ID_PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")

Snapshot = dict[str, Any]
FillRule = Literal["touch", "through"]
_Entry = tuple[Decimal, int, str]
"""An open order in its side's price index: (-price for a buy, price for a sell; the
numeric order id; the order id). In ascending order: best price first, then oldest."""
_AFTER_ALL = float("inf")  # above every order id, for a bisect past a price's last order


@dataclass(frozen=True, slots=True)
class Fees:
    """A market's fee rates: ``maker`` for a resting order filled later, ``taker`` for one
    that filled when it was placed."""

    maker: Decimal
    taker: Decimal


@dataclass(frozen=True, slots=True)
class Balance:
    """One asset's balance: ``locked`` is reserved by open orders."""

    free: Decimal
    locked: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


class MatchingEngine:
    """Limit orders, balances and fills for a set of markets."""

    def __init__(
        self,
        markets: Mapping[str, MarketRules],
        balances: Mapping[str, Decimal],
        fee_rate: Decimal,
        clock: Callable[[], float],
        *,
        fill_rule: FillRule = "touch",
    ) -> None:
        for symbol, rules in markets.items():
            if symbol != rules.symbol:
                raise ValueError(f"market key {symbol} differs from its rules' {rules.symbol}")
        _check_fee(fee_rate)
        for asset, amount in balances.items():
            if amount < 0:
                raise ValueError(f"initial balance of {asset} is negative: {amount}")
        self._markets = dict(markets)
        self._fee_rate = fee_rate
        self._fees: dict[str, Fees] = {}  # markets with their own rates
        self._default_fees = Fees(fee_rate, fee_rate)  # the others'
        self._through = fill_rule == "through"
        self._clock = clock
        self._free: dict[str, Decimal] = dict(balances)
        self._locked: dict[str, Decimal] = {}
        self._last: dict[str, Decimal] = {}
        self._orders: dict[str, Order] = {}  # by exchange order id, in acceptance order
        self._reserved: dict[str, Decimal] = {}  # open order id -> amount locked for it
        self._fills: dict[str, Fill] = {}  # order id -> its (single) fill
        self._latest: dict[tuple[str, str], str] = {}  # (symbol, client id) -> order id
        self._open: dict[str, dict[str, None]] = {s: {} for s in markets}  # ordered sets
        self._bids: dict[str, list[_Entry]] = {s: [] for s in markets}  # open buys, indexed
        self._asks: dict[str, list[_Entry]] = {s: [] for s in markets}  # open sells, indexed
        self._next_order_id = 1
        self._next_trade_id = 1

    # -- queries ------------------------------------------------------------------------

    @property
    def fee_rate(self) -> Decimal:
        return self._fee_rate

    def fees(self, symbol: str) -> Fees:
        """The maker and taker rates of ``symbol``."""
        self.rules(symbol)
        return self._fees.get(symbol) or self._default_fees

    def has_market(self, symbol: str) -> bool:
        return symbol in self._markets

    def rules(self, symbol: str) -> MarketRules:
        try:
            return self._markets[symbol]
        except KeyError:
            raise MarketNotFound(symbol) from None

    def last_price(self, symbol: str) -> Decimal | None:
        self.rules(symbol)
        return self._last.get(symbol)

    def get(self, symbol: str, client_order_id: str) -> Order:
        """The latest order placed on ``symbol`` with this client order id."""
        self.rules(symbol)
        order_id = self._latest.get((symbol, client_order_id))
        if order_id is None:
            raise OrderNotFound(client_order_id)
        return self._orders[order_id]

    def order_fills(self, symbol: str, client_order_id: str) -> list[Fill]:
        """The fills of the latest order with this client order id (none or one)."""
        order = self.get(symbol, client_order_id)
        fill = self._fills.get(order.exchange_order_id)
        return [] if fill is None else [fill]

    def open_orders(self, symbol: str) -> list[Order]:
        self.rules(symbol)
        return [self._orders[i] for i in self._open.get(symbol, {})]

    def all_orders(self) -> list[Order]:
        """Every order ever accepted, in acceptance order, in its latest state."""
        return list(self._orders.values())

    def fills(self) -> list[Fill]:
        """Every fill, in the order the orders were accepted."""
        return [self._fills[i] for i in self._orders if i in self._fills]

    def balances(self) -> dict[str, Balance]:
        assets = sorted(set(self._free) | set(self._locked))
        return {
            a: Balance(self._free.get(a, Decimal(0)), self._locked.get(a, Decimal(0)))
            for a in assets
        }

    # -- commands -----------------------------------------------------------------------

    def add_market(self, rules: MarketRules, fees: Fees | None = None) -> None:
        """Trade ``rules.symbol`` from now on (at ``fees``, else at the engine's rate); a
        market already known keeps its rules and fees."""
        if rules.symbol in self._markets:
            return
        if fees is not None:
            _check_fee(fees.maker)
            _check_fee(fees.taker)
            self._fees[rules.symbol] = fees
        self._markets[rules.symbol] = rules
        self._open.setdefault(rules.symbol, {})
        self._bids.setdefault(rules.symbol, [])
        self._asks.setdefault(rules.symbol, [])

    def place(self, request: OrderRequest) -> Order:
        """Accept a limit order; see ``submit``."""
        return self.submit(request).order

    def submit(self, request: OrderRequest) -> OrderUpdate:
        """Accept a limit order; a marketable one fills at once (the update carries its fill).

        Raises ``MarketNotFound``, ``InvalidOrder``, ``DuplicateOrder`` or
        ``InsufficientFunds``; a rejected order changes nothing.
        """
        rules = self.rules(request.symbol)
        self._validate(rules, request)
        if self._is_open(request.symbol, request.client_order_id):
            raise DuplicateOrder(request.client_order_id)
        asset, reserve = self._reservation(rules, request)
        free = self._free.get(asset, Decimal(0))
        if reserve > free:
            raise InsufficientFunds(
                f"insufficient {asset} balance for {request.side} {request.amount} "
                f"{request.symbol} @ {request.price}: need {reserve}, free {free}"
            )
        now = self._clock()
        order_id = str(self._next_order_id)
        self._next_order_id += 1
        order = Order(
            symbol=request.symbol,
            side=request.side,
            price=request.price,
            amount=request.amount,
            client_order_id=request.client_order_id,
            exchange_order_id=order_id,
            status="open",
            filled=Decimal(0),
            created_at=now,
            updated_at=now,
        )
        self._free[asset] = free - reserve
        self._locked[asset] = self._locked.get(asset, Decimal(0)) + reserve
        self._reserved[order_id] = reserve
        self._orders[order_id] = order
        self._latest[(request.symbol, request.client_order_id)] = order_id
        self._open.setdefault(request.symbol, {})[order_id] = None
        self._index(order)
        last = self._last.get(request.symbol)
        if last is not None and self._crosses(order, last):
            return self._fill(order, last, now, self.fees(request.symbol).taker)
        return OrderUpdate(order)

    def cancel(self, symbol: str, client_order_id: str) -> Order:
        """Cancel an open order and release its reservation; a closed one is returned as is."""
        order = self.get(symbol, client_order_id)
        if not order.is_open:
            return order
        rules = self._markets[symbol]
        self._release(order, rules)
        cancelled = _closed(order, "canceled", order.filled, self._clock())
        self._orders[order.exchange_order_id] = cancelled
        return cancelled

    def on_price(self, symbol: str, price: Decimal) -> list[OrderUpdate]:
        """Set the last price and fill, at their own price, every open order it crossed."""
        self.rules(symbol)
        if not price.is_finite() or price <= 0:
            raise ValueError(f"price of {symbol} must be positive, got {price}")
        self._last[symbol] = price
        bids = self._bids.get(symbol, [])
        asks = self._asks.get(symbol, [])
        # Crossed: the buys at or above the price (strictly above, through) and the sells at
        # or below it - the first entries of each side's index.
        if self._through:
            buys = bisect_left(bids, (-price,))
            sells = bisect_left(asks, (price,))
        else:
            buys = bisect_right(bids, (-price, _AFTER_ALL))
            sells = bisect_right(asks, (price, _AFTER_ALL))
        if not buys and not sells:
            return []
        # Price priority (best buy first, best sell first), then time priority; the buys
        # before the sells, as a key of -price for a buy and price for a sell orders them.
        crossed = bids[:buys] + asks[:sells]
        now = self._clock()
        maker = self.fees(symbol).maker
        orders = self._orders
        return [self._fill(orders[oid], orders[oid].price, now, maker) for _, _, oid in crossed]

    # -- internals ----------------------------------------------------------------------

    def _validate(self, rules: MarketRules, request: OrderRequest) -> None:
        price, amount = request.price, request.amount
        if not CLIENT_ORDER_ID_PATTERN.match(request.client_order_id):
            raise InvalidOrder(
                f"client order id {request.client_order_id!r} must be 1-36 characters of "
                "letters, digits and . : / _ -"
            )
        if request.side not in ("buy", "sell"):
            raise InvalidOrder(f"side must be buy or sell, got {request.side!r}")
        if not price.is_finite() or price <= 0:
            raise InvalidOrder(f"price {price} must be positive")
        if not _is_multiple(price, rules.tick_size):
            raise InvalidOrder(f"price {price} is not a multiple of tick size {rules.tick_size}")
        if not amount.is_finite() or amount <= 0:
            raise InvalidOrder(f"amount {amount} must be positive")
        if not _is_multiple(amount, rules.lot_size):
            raise InvalidOrder(f"amount {amount} is not a multiple of lot size {rules.lot_size}")
        if amount < rules.min_amount:
            raise InvalidOrder(f"amount {amount} is below the minimum amount {rules.min_amount}")
        if price * amount < rules.min_notional:
            raise InvalidOrder(
                f"notional {price * amount} is below the minimum notional {rules.min_notional}"
            )

    def _is_open(self, symbol: str, client_order_id: str) -> bool:
        # An open order is always the latest with its id: no other could be placed meanwhile.
        order_id = self._latest.get((symbol, client_order_id))
        return order_id is not None and order_id in self._open.get(symbol, {})

    def _reservation(self, rules: MarketRules, request: OrderRequest) -> tuple[str, Decimal]:
        if request.side == "buy":
            fees = self.fees(rules.symbol)
            rate = max(fees.maker, fees.taker)
            return rules.quote, request.price * request.amount * (1 + rate)
        return rules.base, request.amount

    def _crosses(self, order: Order, price: Decimal) -> bool:
        if self._through:
            return price < order.price if order.side == "buy" else price > order.price
        return price <= order.price if order.side == "buy" else price >= order.price

    def _index(self, order: Order) -> None:
        """Enter an open order in its side's price index."""
        order_id = order.exchange_order_id
        if order.side == "buy":
            insort(self._bids[order.symbol], (-order.price, int(order_id), order_id))
        else:
            insort(self._asks[order.symbol], (order.price, int(order_id), order_id))

    def _unindex(self, order: Order) -> None:
        order_id = order.exchange_order_id
        if order.side == "buy":
            book, entry = self._bids[order.symbol], (-order.price, int(order_id), order_id)
        else:
            book, entry = self._asks[order.symbol], (order.price, int(order_id), order_id)
        del book[bisect_left(book, entry)]

    def _release(self, order: Order, rules: MarketRules) -> None:
        """Unlock the reservation of an open order and forget it as open."""
        asset = rules.quote if order.side == "buy" else rules.base
        reserved = self._reserved.pop(order.exchange_order_id)
        self._locked[asset] -= reserved
        self._free[asset] = self._free.get(asset, Decimal(0)) + reserved
        del self._open[order.symbol][order.exchange_order_id]
        self._unindex(order)

    def _fill(self, order: Order, price: Decimal, now: float, rate: Decimal) -> OrderUpdate:
        rules = self._markets[order.symbol]
        self._release(order, rules)
        notional = price * order.amount
        fee = notional * rate
        base, quote = rules.base, rules.quote
        zero = Decimal(0)
        if order.side == "buy":
            self._free[quote] = self._free.get(quote, zero) - notional - fee
            self._free[base] = self._free.get(base, zero) + order.amount
        else:
            self._free[base] = self._free.get(base, zero) - order.amount
            self._free[quote] = self._free.get(quote, zero) + notional - fee
        fill = Fill(
            trade_id=str(self._next_trade_id),
            symbol=order.symbol,
            side=order.side,
            price=price,
            amount=order.amount,
            fee=fee,
            fee_currency=quote,
            client_order_id=order.client_order_id,
            exchange_order_id=order.exchange_order_id,
            ts=now,
        )
        self._next_trade_id += 1
        filled = _closed(order, "filled", order.amount, now)
        self._orders[order.exchange_order_id] = filled
        self._fills[order.exchange_order_id] = fill
        return OrderUpdate(filled, (fill,))

    # -- persistence --------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Everything needed to rebuild this engine, as JSON-compatible values."""
        snap = self.snapshot_header()
        snap["orders"] = [self.order_snapshot(i) for i in self._orders]
        return snap

    def snapshot_header(self) -> Snapshot:
        """The snapshot without its orders: balances, last prices and counters."""
        return {
            "version": SNAPSHOT_VERSION,
            "next_order_id": self._next_order_id,
            "next_trade_id": self._next_trade_id,
            "balances": {
                a: {"free": str(b.free), "locked": str(b.locked)}
                for a, b in self.balances().items()
            },
            "last_prices": {s: str(p) for s, p in self._last.items()},
        }

    def order_snapshot(self, exchange_order_id: str) -> Snapshot:
        """One order of the snapshot, with its reservation (open) or its fill (filled)."""
        order = self._orders[exchange_order_id]
        record: Snapshot = {
            "symbol": order.symbol,
            "side": order.side,
            "price": str(order.price),
            "amount": str(order.amount),
            "client_order_id": order.client_order_id,
            "exchange_order_id": order.exchange_order_id,
            "status": order.status,
            "filled": str(order.filled),
            "created_at": order.created_at,
            "updated_at": order.updated_at,
        }
        if exchange_order_id in self._reserved:
            record["reserved"] = str(self._reserved[exchange_order_id])
        fill = self._fills.get(exchange_order_id)
        if fill is not None:
            record["fill"] = {
                "trade_id": fill.trade_id,
                "price": str(fill.price),
                "amount": str(fill.amount),
                "fee": str(fill.fee),
                "fee_currency": fill.fee_currency,
                "ts": fill.ts,
            }
        return record

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole state by ``snapshot``; raises ``ValueError`` if it is invalid."""
        try:
            state = _RestoredState.parse(snapshot)
        except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError) as exc:
            raise ValueError(f"invalid matching engine snapshot: {exc!r}") from exc
        self._free = state.free
        self._locked = state.locked
        self._last = state.last
        self._orders = state.orders
        self._reserved = state.reserved
        self._fills = state.fills
        self._latest = {(o.symbol, o.client_order_id): i for i, o in state.orders.items()}
        self._open = {s: {} for s in self._markets}
        self._bids = {s: [] for s in self._markets}
        self._asks = {s: [] for s in self._markets}
        for order_id, order in state.orders.items():
            if order.is_open:
                self._open.setdefault(order.symbol, {})[order_id] = None
                self._bids.setdefault(order.symbol, [])
                self._asks.setdefault(order.symbol, [])
                self._index(order)
        self._next_order_id = state.next_order_id
        self._next_trade_id = state.next_trade_id


def _closed(order: Order, status: OrderStatus, filled: Decimal, now: float) -> Order:
    """``order`` with a closing status (``dataclasses.replace``'s result, built directly)."""
    return Order(
        symbol=order.symbol,
        side=order.side,
        price=order.price,
        amount=order.amount,
        client_order_id=order.client_order_id,
        exchange_order_id=order.exchange_order_id,
        status=status,
        filled=filled,
        created_at=order.created_at,
        updated_at=now,
        lock_fence=order.lock_fence,
    )


def _check_fee(rate: Decimal) -> None:
    if not Decimal(0) <= rate < 1:
        raise ValueError(f"fee rate must be in [0, 1), got {rate}")


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    try:
        return value % step == 0
    except InvalidOperation:  # the quotient does not fit the context's precision
        return False


@dataclass(slots=True)
class _RestoredState:
    free: dict[str, Decimal]
    locked: dict[str, Decimal]
    last: dict[str, Decimal]
    orders: dict[str, Order]
    reserved: dict[str, Decimal]
    fills: dict[str, Fill]
    next_order_id: int
    next_trade_id: int

    @classmethod
    def parse(cls, snap: Snapshot) -> _RestoredState:
        if snap["version"] != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {snap['version']!r}")
        state = cls(
            free={a: Decimal(b["free"]) for a, b in snap["balances"].items()},
            locked={a: Decimal(b["locked"]) for a, b in snap["balances"].items()},
            last={s: Decimal(p) for s, p in snap["last_prices"].items()},
            orders={},
            reserved={},
            fills={},
            next_order_id=int(snap["next_order_id"]),
            next_trade_id=int(snap["next_trade_id"]),
        )
        for rec in sorted(snap["orders"], key=lambda r: int(r["exchange_order_id"])):
            state._add_order(rec)
        if state.orders and max(map(int, state.orders)) >= state.next_order_id:
            raise ValueError("next_order_id is not above every order id")
        return state

    def _add_order(self, rec: Snapshot) -> None:
        if rec["side"] not in ("buy", "sell"):
            raise ValueError(f"bad side {rec['side']!r}")
        if rec["status"] not in ("open", "filled", "canceled", "rejected", "expired"):
            raise ValueError(f"bad status {rec['status']!r}")
        order = Order(
            symbol=rec["symbol"],
            side=rec["side"],
            price=Decimal(rec["price"]),
            amount=Decimal(rec["amount"]),
            client_order_id=rec["client_order_id"],
            exchange_order_id=rec["exchange_order_id"],
            status=rec["status"],
            filled=Decimal(rec["filled"]),
            created_at=float(rec["created_at"]),
            updated_at=float(rec["updated_at"]),
        )
        order_id = order.exchange_order_id
        self.orders[order_id] = order
        if order.is_open:
            self.reserved[order_id] = Decimal(rec["reserved"])
        fill = rec.get("fill")
        if fill is not None:
            self.fills[order_id] = Fill(
                trade_id=fill["trade_id"],
                symbol=order.symbol,
                side=order.side,
                price=Decimal(fill["price"]),
                amount=Decimal(fill["amount"]),
                fee=Decimal(fill["fee"]),
                fee_currency=fill["fee_currency"],
                client_order_id=order.client_order_id,
                exchange_order_id=order_id,
                ts=float(fill["ts"]),
            )

"""``grid.pnl``: the position at a price, and the daily rows of ``quantmesh export daily``.

The property: for any buy, any sells of it (partial or whole, fees in base or quote) and
any mark price, realized plus unrealized PnL equals the change in the account's value
(quote cash plus base held at the mark)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from quantmesh.grid.ledger import (
    SellProgress,
    apply_buy_fill,
    apply_sell_fill,
    close_buy,
    close_sell,
)
from quantmesh.grid.pnl import daily, day_of, performance, position
from quantmesh.grid.state import LevelState
from tests.trading.support import RULES

D = Decimal
prices = st.decimals(min_value=D("100"), max_value=D("5000"), places=2)
fee_rates = st.sampled_from([D(0), D("0.001"), D("0.00075")])


def test_an_empty_grid_has_no_position() -> None:
    held = position([], {}, D("2000"))
    assert held.inventory == 0 and held.unrealized == 0 and held.average_cost is None


def test_average_cost_and_unrealized_of_two_levels() -> None:
    levels = [
        LevelState(-1, holding=D("0.01"), cost=D("19.9"), cycle=1),
        LevelState(-2, holding=D("0.02"), cost=D("39.6"), cycle=3),
        LevelState(-3),  # empty: not counted
    ]
    held = position(levels, {}, D("2000"))
    assert held.inventory == D("0.03")
    assert held.cost == D("59.5")
    assert held.average_cost == D("1983.333333333333333333")
    assert held.unrealized == D("60.00") - D("59.5")


def test_a_partly_sold_level_counts_what_its_sells_brought_in() -> None:
    level = LevelState(-1, holding=D("0.004"), cost=D("20"), cycle=2)
    progress = {-1: SellProgress(D("0.006"), D("12.6")), -2: SellProgress(D(1), D(9))}
    held = position([level], progress, D("2000"))
    assert held.sold_proceeds == D("12.6")  # another level's progress is not this one's
    assert held.unrealized == D("8") + D("12.6") - D("20")
    assert held.average_cost == D("1850")


@settings(max_examples=300, deadline=None)
@given(
    buy=prices,
    amount=st.decimals(min_value=D("0.001"), max_value=D("1"), places=4),
    buy_fee=fee_rates,
    fee_in_base=st.booleans(),
    sells=st.lists(st.tuples(prices, st.integers(1, 4)), min_size=0, max_size=4),
    sell_all=st.booleans(),
    mark=prices,
)
def test_realized_plus_unrealized_is_the_change_in_account_value(
    buy: Decimal,
    amount: Decimal,
    buy_fee: Decimal,
    fee_in_base: bool,
    sells: list[tuple[Decimal, int]],
    sell_all: bool,
    mark: Decimal,
) -> None:
    currency = RULES.base if fee_in_base else RULES.quote
    fee = (amount if fee_in_base else buy * amount) * buy_fee
    level = close_buy(apply_buy_fill(LevelState(0), amount, buy, fee, currency, RULES))
    cash = -(buy * amount) - (fee if not fee_in_base else 0)
    base = amount - (fee if fee_in_base else 0)

    progress, realized = SellProgress(), D(0)
    sold: list[tuple[Decimal, Decimal]] = []
    weights = sum(w for _, w in sells)
    for price, weight in sells:
        part = (level.holding * weight / (weights + (0 if sell_all else 1))).quantize(
            D("0.00000001")
        )
        if part <= 0:
            continue
        sell_fee = price * part * buy_fee  # in quote
        level, progress = apply_sell_fill(
            level, progress, part, price, sell_fee, RULES.quote, RULES
        )
        cash += price * part - sell_fee
        base -= part
        sold.append((price, part))
    outcome = close_sell(level, progress, RULES, symbol="ETH/USDT", ts=0.0)
    if outcome.round_trip is not None:
        realized = outcome.round_trip.pnl
        # the unsold dust of a closed level counts as sold at cost: it leaves the books
        cash_value_of_dust = base * mark
    else:
        cash_value_of_dust = D(0)
    held = position([outcome.level], {0: outcome.progress}, mark)
    assert realized + held.unrealized == cash + base * mark - cash_value_of_dust
    # the same history as the database keeps it: performance's total agrees
    records = [_fill("buy", 0, amount, buy, fee, currency)] + [
        _fill("sell", 1, part, price, price * part * buy_fee, RULES.quote) for price, part in sold
    ]
    assert performance(records, mark).total == realized + held.unrealized + cash_value_of_dust


def _fill(
    side: str, cycle: int, amount: Decimal, price: Decimal, fee: Decimal, currency: str
) -> dict[str, object]:
    """A trade record of level 0, as ``storage.export`` reads it."""
    tag = "S" if side == "sell" else "B"
    return {
        "symbol": "ETH/USDT", "side": side, "price": price, "amount": amount,
        "quote_amount": price * amount, "fee": fee, "fee_currency": currency,
        "client_order_id": f"qm.abcdef.{tag}0.{cycle}",
    }  # fmt: skip


def test_performance_sums_a_grids_history_and_compares_it_with_holding() -> None:
    trades = [
        _fill("buy", 0, D("0.015"), D(2000), D("0.03"), "USDT"),
        _fill("buy", 0, D("0.015"), D(1990), D("0.00005"), "BNB"),  # level 0 again: a cycle
        _fill("sell", 1, D("0.015"), D(2010), D("0.03015"), "USDT"),
    ]
    trades[1]["client_order_id"] = "qm.abcdef.B-1.0"
    figures = performance(trades, D(2100))
    # cash: -30.03 - 29.85 + 30.15 - 0.03015 = -29.76015; held 0.015 at 2100 = 31.5
    assert figures.total == D("1.73985")
    assert figures.fees == {"USDT": D("0.06015"), "BNB": D("0.00005")}
    assert figures.capital == D("59.88")  # both levels held at once, at cost
    assert figures.first_price == D(2000)
    assert figures.return_percent == D("2.91")  # 1.73985 / 59.88
    assert figures.hold_percent == D("5.00")  # 2000 -> 2100
    assert performance(trades, None).total is None
    tiny = performance(trades, D("1983.99")).return_percent  # -0.0005 %: shown as 0
    assert tiny is not None and str(tiny) == "0"
    empty = performance([], D(2000))
    assert (empty.total, empty.capital, empty.return_percent) == (D(0), D(0), None)


def _trade(
    ts: float, side: str, amount: str, price: str, fee: str, currency: str
) -> dict[str, object]:
    return {
        "time": ts, "exchange": "binance", "symbol": "ETH/USDT", "side": side,
        "amount": D(amount), "quote_amount": D(amount) * D(price), "fee": D(fee),
        "fee_currency": currency,
    }  # fmt: skip


def test_daily_rows_split_by_utc_day_and_sum_fees_by_currency() -> None:
    day1, day2 = 1_767_225_600.0, 1_767_312_000.0  # 2026-01-01 and 02, 00:00 UTC
    trades = [
        _trade(day1 + 10, "buy", "0.01", "2000", "0.02", "USDT"),
        _trade(day1 + 20, "buy", "0.01", "1990", "0.00001", "BNB"),
        _trade(day2 - 0.001, "sell", "0.01", "2010", "0.0201", "USDT"),  # still day 1
        _trade(day2 + 5, "sell", "0.01", "2000", "0.00002", "BNB"),
    ]
    trips = [
        {"closed_at": day2 - 0.001, "exchange": "binance", "symbol": "ETH/USDT", "pnl": D("0.06")},
        {"closed_at": day2 + 5, "exchange": "binance", "symbol": "ETH/USDT", "pnl": D("0.09")},
    ]
    rows = daily(trades, trips)
    assert [r["date"] for r in rows] == ["2026-01-01", "2026-01-02"]
    first, second = rows
    assert (first["buys"], first["sells"], first["round_trips"]) == (2, 1, 1)
    assert first["bought"] == D("0.02") and first["bought_quote"] == D("39.90")
    assert first["fees_quote"] == D("0.0401") and first["fees_other"] == "BNB 0.00001"
    assert first["realized_pnl"] == D("0.06")
    assert (second["sells"], second["sold_quote"], second["fees_quote"]) == (1, D("20.00"), 0)
    assert second["fees_other"] == "BNB 0.00002" and second["realized_pnl"] == D("0.09")
    assert day_of(day2) == "2026-01-02"

"""The chaos invariants over hand-made simulator records: each catches its violation and
passes clean data."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from .invariants import (
    Leaseless,
    double_buys,
    double_sells,
    expired_by_key,
    fills_vs_db,
    interleavings,
    late_actions,
    open_overlaps,
    owner_switches,
    reused_after_fill,
    summary,
)

TAG = "a1b2c3"
_ids = iter(range(1, 10_000))


def order(
    cid: str,
    created: float,
    closed: float | None,
    *,
    side: str | None = None,
    price: str = "1990",
    filled: str = "0",
    symbol: str = "ETH/USDT",
    status: str | None = None,
) -> dict[str, Any]:
    """An ``/_sim/orders`` record; the side defaults to the id's ``B``/``S``."""
    if side is None:
        side = "sell" if ".S" in cid else "buy"
    if status is None:
        status = "open" if closed is None else ("filled" if Decimal(filled) > 0 else "canceled")
    return {
        "symbol": symbol,
        "side": side,
        "price": price,
        "amount": "0.01",
        "client_order_id": cid,
        "exchange_order_id": str(next(_ids)),
        "status": status,
        "filled": filled,
        "created_at": created,
        "updated_at": created if closed is None else closed,
        "closed_at": closed,
        "api_key": "k1",
    }


def action(
    t: float, key: str, symbol: str = "ETH/USDT", result: str = "accepted", code: int | None = None
) -> dict[str, Any]:
    return {
        "t": t,
        "api_key": key,
        "action": "create",
        "symbol": symbol,
        "client_order_id": f"c{t}",
        "exchange_order_id": None if result == "rejected" else str(next(_ids)),
        "side": "buy",
        "price": "1990",
        "result": result,
        "code": code,
    }


def cid(kind: str, level: int, cycle: int, tag: str = TAG) -> str:
    return f"qm.{tag}.{kind}{level}.{cycle}"


# -- open overlaps ---------------------------------------------------------------------------


def test_open_overlaps_pass_orders_that_follow_each_other() -> None:
    orders = [
        order("x1", 10, 20),
        order("x2", 20, 30),  # created the instant x1 closed
        order("x3", 31, None),
        order("x4", 15, 25, side="sell"),  # other side
        order("x5", 15, 25, price="1980"),  # other price
        order("x6", 15, 25, symbol="BTC/USDT"),  # other symbol
        order("x7", 26, 26),  # filled the instant it was placed
    ]
    assert open_overlaps(orders) == []


def test_open_overlaps_catch_two_open_at_once() -> None:
    first = order("x1", 10, 20)
    second = order("x2", 15, None, price="1990.00")  # the same price, written otherwise
    third = order("x3", 25, 40)
    (overlap_a, overlap_b) = open_overlaps([third, second, first])
    assert (overlap_a.first, overlap_a.second) == ("x1", "x2")
    assert (overlap_a.since, overlap_a.until) == (15, 20)
    assert overlap_a.price == Decimal(1990) and overlap_a.side == "buy"
    assert (overlap_b.first, overlap_b.second, overlap_b.since, overlap_b.until) == (
        "x2",
        "x3",
        25,
        40,
    )


def test_open_overlaps_by_level_allow_one_price_for_several_levels_not_two_on_one() -> None:
    """A liquidation sells several levels at one price; one level twice at once is wrong."""
    levels = [order(f"qm.{TAG}.S{level}.1", 10, None, price="1993.99") for level in (-1, -2)]
    assert len(open_overlaps(levels)) == 1  # by price: flagged
    assert open_overlaps(levels, by_level=True) == []
    again = order(f"qm.{TAG}.S-1.1", 12, None, price="1990")  # level -1 a second time
    (overlap,) = open_overlaps([*levels, again], by_level=True)
    assert (overlap.first, overlap.second) == (f"qm.{TAG}.S-1.1", f"qm.{TAG}.S-1.1")
    assert overlap.price == Decimal(1990)


def test_open_overlaps_report_each_pair_of_three_once() -> None:
    orders = [order("x1", 1, None), order("x2", 2, None), order("x3", 3, None)]
    pairs = {(o.first, o.second) for o in open_overlaps(orders)}
    assert pairs == {("x1", "x2"), ("x1", "x3"), ("x2", "x3")}
    assert all(o.until == float("inf") for o in open_overlaps(orders))


# -- double buys -----------------------------------------------------------------------------


def test_double_buys_pass_buy_sell_round_trips() -> None:
    orders = [
        order(cid("B", 3, 0), 1, 2, filled="0.01"),
        order(cid("S", 3, 1), 2, 5, filled="0.01", price="2000"),
        order(cid("B", 3, 1), 6, 7, filled="0.01"),
        order(cid("S", 3, 2), 7, 9, filled="0.01", price="2000"),
        order(cid("B", 3, 2), 10, 12),  # cancelled unfilled: bought nothing
        order(cid("B", 3, 2), 13, None),  # placed again, still open
        order(cid("B", 4, 0), 1, 3, filled="0.01"),  # another level
        order(cid("B", 3, 0, tag="ffffff"), 1, 3, filled="0.01"),  # another grid
        order("foreign-1", 1, 2, filled="0.01"),
        order("foreign-2", 3, 4, filled="0.01"),
    ]
    assert double_buys(orders) == []


def test_double_buys_catch_a_second_buy_before_the_sell() -> None:
    orders = [
        order(cid("B", 3, 0), 1, 2, filled="0.01"),
        order(cid("B", 3, 0), 3, 4, filled="0.01"),  # stale state: same cycle, bought again
        order(cid("S", 3, 1), 4, 6, filled="0.01", price="2000"),
        order(cid("B", 3, 1), 7, 8, filled="0.01"),
        order(cid("B", 3, 2), 9, 10, filled="0.01"),  # next cycle, but the sell never came
    ]
    first, second = double_buys(orders)
    assert (first.symbol, first.tag, first.level) == ("ETH/USDT", TAG, 3)
    assert (first.first, first.second) == (cid("B", 3, 0), cid("B", 3, 0))
    assert (first.first_filled_at, first.second_filled_at) == (2, 4)
    assert first.same_cycle
    assert (second.first, second.second) == (cid("B", 3, 1), cid("B", 3, 2))
    assert not second.same_cycle


def test_double_buys_order_by_fill_time_not_creation() -> None:
    # The sell was placed after the second buy but filled before it.
    orders = [
        order(cid("B", 5, 0), 1, 2, filled="0.01"),
        order(cid("B", 5, 1), 3, 9, filled="0.01"),
        order(cid("S", 5, 1), 4, 5, filled="0.01", price="2000"),
    ]
    assert double_buys(orders) == []
    orders[2] = order(cid("S", 5, 1), 4, 10, filled="0.01", price="2000")
    (caught,) = double_buys(orders)
    assert caught.second == cid("B", 5, 1)


def test_double_buys_read_an_open_order_by_its_update_time() -> None:
    partly = order(cid("B", 2, 0), 3, None, filled="0.005")
    partly["updated_at"] = 4
    orders = [order(cid("B", 2, 0), 1, 2, filled="0.01"), partly]
    (caught,) = double_buys(orders)
    assert caught.second_filled_at == 4


def test_double_sells_pass_round_trips_and_catch_a_second_sale() -> None:
    trips = [
        order(cid("B", 3, 0), 1, 2, filled="0.01"),
        order(cid("S", 3, 1), 2, 5, filled="0.01", price="2000"),
        order(cid("S", 4, 1), 2, 5, filled="0.01", price="2002"),  # one sale is no repeat
        order(cid("B", 3, 1), 6, 7, filled="0.01"),
        order(cid("S", 3, 2), 7, 9, filled="0.01", price="2000"),
        order(cid("S", 3, 3), 10, 12, price="2000"),  # cancelled unfilled: sold nothing
    ]
    assert [(d.first, d.second) for d in double_sells(trips)] == []
    # a new owner applied the sell before the buy it sold, and sold the level again
    again = [*trips, order(cid("S", 3, 2), 13, 14, filled="0.01", price="2000")]
    (caught,) = double_sells(again)
    assert (caught.level, caught.first, caught.second) == (3, cid("S", 3, 2), cid("S", 3, 2))
    assert (caught.first_filled_at, caught.second_filled_at) == (9, 14)


# -- ids placed again after they filled ------------------------------------------------------


def test_reused_after_fill_pass_ids_placed_again_before_any_fill() -> None:
    orders = [
        order(cid("B", 3, 0), 1, 2),  # cancelled unfilled, placed again with its id
        order(cid("B", 3, 0), 3, 4, filled="0.01"),
        order(cid("S", 3, 1), 4, 5, filled="0.004", price="2000", status="canceled"),
        order(cid("S", 3, 1), 6, 7, filled="0.006", price="2000"),  # the rest of the sale
        order(cid("B", 3, 1), 8, None),
        order("foreign", 1, 2, filled="0.01"),
        order("foreign", 3, 4, filled="0.01"),
    ]
    assert reused_after_fill(orders) == []


def test_reused_after_fill_catch_a_buy_or_sell_placed_again_after_it_filled() -> None:
    orders = [
        order(cid("B", 3, 0), 1, 2, filled="0.01"),
        order(cid("B", 3, 0), 5, 6, filled="0.01"),  # landed late, or placed from a stale grid
        order(cid("S", 4, 1), 1, 3, filled="0.01", price="2000"),
        order(cid("S", 4, 1), 4, None, price="2000"),  # open: caught before it sells twice
    ]
    first, second = reused_after_fill(orders)
    assert (second.client_order_id, second.first_filled_at, second.second_created_at) == (
        cid("B", 3, 0),
        2,
        5,
    )
    assert second.second_filled
    assert first.client_order_id == cid("S", 4, 1) and not first.second_filled


# -- owner switches and interleavings --------------------------------------------------------


def test_owner_switches_count_changes_of_key_per_symbol() -> None:
    actions = [
        action(1, "a"),
        action(2, "a"),
        action(3, "b", result="rejected", code=-2010),  # refused: not an owner
        action(5, "b"),  # failover: one switch
        action(6, "b"),
        action(1.5, "c", symbol="BTC/USDT"),
    ]
    switches = owner_switches(actions)
    assert switches["ETH/USDT"].count == 1
    assert switches["ETH/USDT"].changes == ((5.0, "a", "b"),)
    assert switches["BTC/USDT"].count == 0


def test_owner_switches_catch_two_keys_alternating() -> None:
    actions = [action(float(t), "ab"[t % 2]) for t in range(10)]
    assert owner_switches(reversed(actions))["ETH/USDT"].count == 9


def test_interleavings_pass_a_clean_handover() -> None:
    actions = [action(1, "a"), action(2, "a"), action(3, "b"), action(4, "b")]
    assert interleavings(actions, window=100) == {}
    # A returns, but long after: a second failover, not concurrent trading.
    assert interleavings([*actions, action(60, "a")], window=10) == {}


def test_interleavings_catch_a_b_a_within_the_window() -> None:
    actions = [
        action(1, "a"),
        action(2, "b"),
        action(2.5, "b"),
        action(3, "a"),
        action(3.2, "x", symbol="BTC/USDT"),
        action(3.5, "x", symbol="BTC/USDT"),
    ]
    result = interleavings(actions, window=5)
    (case,) = result["ETH/USDT"]
    assert (case.key, case.other, case.start, case.middle, case.end) == ("a", "b", 1, 2, 3)
    assert "BTC/USDT" not in result
    assert interleavings(actions, window=1.5) == {}
    with pytest.raises(ValueError):
        interleavings(actions, window=-1)


def test_interleavings_ignore_rejected_actions() -> None:
    actions = [action(1, "a"), action(2, "b", result="rejected", code=-2010), action(3, "a")]
    assert interleavings(actions, window=10) == {}


# -- fills against the database --------------------------------------------------------------


def test_fills_vs_db() -> None:
    trades = [{"trade_id": str(i)} for i in (1, 2, 3, 10)]
    clean = fills_vs_db(trades, ["1", "2", "3", "10"])
    assert clean.ok and clean.missing == clean.extra == clean.duplicated == []
    check = fills_vs_db(trades, ["1", "10", 10, "3", "77"])
    assert not check.ok
    assert check.missing == ["2"]
    assert check.extra == ["77"]
    assert check.duplicated == ["10"]


# -- requests after their lease ---------------------------------------------------------------


def test_late_actions_catch_an_accepted_request_after_the_lease() -> None:
    frozen = Leaseless("a", start=10.0, end=20.0, fault="SIGSTOP")
    on_time = action(9.9, "a")  # sent under the lease, executed as the process froze
    landed = action(14.0, "a")  # held in the frozen process, executed on thaw
    refused = action(14.1, "a", result="rejected", code=-1021)
    other = action(15.0, "b")  # the new owner
    again = action(20.5, "a")  # after the span: owner again
    found = late_actions([on_time, landed, refused, other, again], [frozen])
    assert found == [(frozen, landed)]


def test_late_actions_pass_refused_requests_and_other_keys() -> None:
    spans = [Leaseless("a", 10.0, 20.0, "SIGSTOP"), Leaseless("b", 30.0, 40.0, "partition")]
    actions = [
        action(12.0, "a", result="rejected", code=-1021),
        action(12.0, "b"),
        action(35.0, "a"),
        action(35.0, "b", result="rejected", code=-1021),
    ]
    assert late_actions(actions, spans) == []
    assert late_actions(actions, []) == []


def test_expired_by_key_counts_refusals_as_expired_per_key() -> None:
    actions = [
        action(1, "a", result="rejected", code=-1021),
        action(2, "a", result="rejected", code=-1021),
        action(3, "b", result="rejected", code=-1021),
        action(4, "b", result="rejected", code=-2010),
        action(5, "c"),
    ]
    assert expired_by_key(actions) == {"a": 2, "b": 1}


# -- summary ---------------------------------------------------------------------------------


def test_summary_names_each_finding() -> None:
    orders = [
        order(cid("B", 1, 0), 1, 2, filled="0.01"),
        order(cid("B", 1, 0), 3, 4, filled="0.01"),
        order("x", 5, None),
        order("y", 6, None),
    ]
    actions = [
        action(1, "a"),
        action(2, "b"),
        action(3, "a"),
        action(4, "b", "ETH/USDT", "rejected", -2010),
        action(5, "a", "ETH/USDT", "rejected", -1021),
    ]
    text = summary(orders, actions, [{"trade_id": "1"}, {"trade_id": "2"}], ["1", "1"], window=5)
    lines = text.splitlines()
    assert lines[0] == "orders: 4 (buy=4; filled=2, open=2), fills: 2"
    assert "create/rejected=2" in lines[1]
    assert lines[2] == "rejected by code: -1021=1, -2010=1"
    assert lines[3] == "refused as expired (-1021) by key: a=1"
    assert lines[4] == "accepted by key: a=2, b=1"
    assert lines[5] == "owner switches: ETH/USDT=2"
    assert lines[6] == "interleavings within 5 s: ETH/USDT=1"
    assert lines[7] == "open overlaps (duplicates): 1"
    assert lines[8] == "double buys: 1"
    assert lines[9] == "double sells: 0"
    assert lines[10] == "ids placed again after they filled: 1"
    assert lines[11] == "fills vs db: missing=1 extra=0 duplicated=1"
    clean = summary(orders[:1], actions[:1])
    assert "open overlaps (duplicates): 0" in clean and "double buys: 0" in clean
    assert "refused as expired (-1021) by key: none" in clean
    assert "fills vs db" not in clean

"""The trader's book: effects are pure until committed; stale and foreign news ignored."""

from __future__ import annotations

from decimal import Decimal

from quantmesh.domain import Fill, Order, OrderRequest, OrderStatus, OrderUpdate
from quantmesh.grid.ids import client_order_id
from quantmesh.grid.state import GridState, LevelState
from quantmesh.trading.book import OrderBook

from .support import RULES, SETTINGS, SYMBOL

TAG = "abcdef"
BUY0 = client_order_id(TAG, 0, "buy", 0)


def _book() -> OrderBook:
    return OrderBook(
        SETTINGS.grid.anchored_at(Decimal(2000)), RULES, GridState(SYMBOL, Decimal(2000)), TAG
    )


def _order(status: OrderStatus, xid: str = "1", filled: str = "0", cid: str = BUY0) -> Order:
    return Order(
        SYMBOL, "buy", Decimal(2000), Decimal("0.015"), cid, xid, status, Decimal(filled), 0.0, 0.0
    )


def _fill(trade_id: str, xid: str = "1") -> Fill:
    return Fill(
        trade_id,
        SYMBOL,
        "buy",
        Decimal(2000),
        Decimal("0.015"),
        Decimal("0.03"),
        "USDT",
        BUY0,
        xid,
        0.0,
    )


def _apply(book: OrderBook, update: OrderUpdate) -> None:
    effect = book.effect(update, 0.0)
    assert effect is not None
    book.commit(effect)


def test_an_effect_changes_nothing_until_committed() -> None:
    book = _book()
    effect = book.effect(OrderUpdate(_order("filled", filled="0.015"), (_fill("t1"),)), 0.0)
    assert effect is not None and effect.level.holding == Decimal("0.015")
    assert book.state.level(0).holding == 0
    book.commit(effect)
    assert book.state.level(0).holding == Decimal("0.015") and book.state.level(0).cycle == 1


def test_a_fill_seen_twice_counts_once() -> None:
    book = _book()
    _apply(book, OrderUpdate(_order("open"), ()))
    _apply(book, OrderUpdate(_order("open", filled="0.015"), (_fill("t1"),)))
    _apply(book, OrderUpdate(_order("filled", filled="0.015"), (_fill("t1"),)))
    assert book.state.level(0).holding == Decimal("0.015")
    assert book.state.level(0).cycle == 1


def test_foreign_orders_and_other_grids_are_ignored() -> None:
    book = _book()
    assert book.effect(OrderUpdate(_order("open", cid="manual-order-1")), 0.0) is None
    other = client_order_id("123456", 0, "buy", 0)
    assert book.effect(OrderUpdate(_order("open", cid=other)), 0.0) is None


def test_a_late_open_of_a_closed_order_does_not_reopen_it() -> None:
    book = _book()
    _apply(book, OrderUpdate(_order("open")))
    _apply(book, OrderUpdate(_order("canceled")))
    assert book.effect(OrderUpdate(_order("open")), 0.0) is None
    assert book.open_orders() == []


def test_news_of_a_replaced_order_does_not_close_the_one_tracked() -> None:
    book = _book()
    _apply(book, OrderUpdate(_order("open", xid="1")))
    _apply(book, OrderUpdate(_order("canceled", xid="1")))
    _apply(book, OrderUpdate(_order("open", xid="2")))  # the same id placed again
    assert book.effect(OrderUpdate(_order("canceled", xid="1")), 0.0) is None
    assert [o.client_order_id for o in book.open_orders()] == [BUY0]


def test_an_unknown_outcome_blocks_the_level_until_forgotten() -> None:
    book = _book()
    book.track_unknown(OrderRequest(SYMBOL, "buy", Decimal(2000), Decimal("0.015"), BUY0))
    assert [(o.level, o.side) for o in book.open_orders()] == [(0, "buy")]
    assert book.unknown_ids() == [BUY0]
    book.forget(BUY0)
    assert book.open_orders() == [] and book.unknown_ids() == []


def test_a_buy_cancelled_before_any_fill_completes_no_cycle() -> None:
    book = _book()
    book.state.set_level(LevelState(0, holding=Decimal("0.00001"), cost=Decimal("0.02")))  # dust
    _apply(book, OrderUpdate(_order("open")))
    _apply(book, OrderUpdate(_order("canceled")))
    assert book.state.level(0).cycle == 0
    assert book.open_orders() == []

"""SqlRepository against a real database: every Repository method."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from quantmesh.errors import StorageError
from quantmesh.grid.state import GridShape, GridState, LevelState
from quantmesh.storage.base import Repository, SymbolSummary, TradeFilter
from quantmesh.storage.repository import SqlRepository
from tests.support import FakeClock

from .conftest import RepoFactory
from .support import SYMBOL, fill, order, round_trip

BIG = "123456789012345678.123456789012345678"  # 36 digits, 18 of them decimals


def test_sql_repository_satisfies_the_protocol(repo: SqlRepository) -> None:
    checked: Repository = repo
    for name in (n for n in dir(Repository) if not n.startswith("_")):
        assert callable(getattr(checked, name)), name


def test_sql_repository_has_no_write_buffer(repo: SqlRepository) -> None:
    assert repo.durability() is None


# --- decimals -----------------------------------------------------------------------------


async def test_decimals_round_trip_exactly(repo: SqlRepository) -> None:
    exact = Decimal("0.1") + Decimal("0.2")
    tiny = Decimal("0.000000000000000001")
    await repo.save_order(order(price=str(exact), amount=BIG, filled=str(tiny)))
    await repo.save_fill(fill(price=BIG, amount=str(tiny), fee="-0.000000000000000123"))

    stored = await repo.get_order("c1")
    assert stored is not None
    assert isinstance(stored.price, Decimal)
    assert stored.price == Decimal("0.3")
    assert stored.amount == Decimal(BIG)
    assert stored.filled == tiny
    (trade,) = await repo.get_trades(TradeFilter())
    assert (trade.price, trade.amount, trade.fee) == (
        Decimal(BIG),
        tiny,
        Decimal("-0.000000000000000123"),
    )


@pytest.mark.parametrize("bad", ["0.0000000000000000001", "1234567890123456789", "NaN", "Infinity"])
async def test_decimals_numeric_36_18_cannot_hold_are_refused(
    repo: SqlRepository, bad: str
) -> None:
    with pytest.raises(StorageError, match="price"):
        await repo.save_order(order(price=bad))
    assert await repo.get_order("c1") is None


# --- orders -------------------------------------------------------------------------------


async def test_save_order_inserts_and_get_order_reads_it_back(repo: SqlRepository) -> None:
    placed = order(exchange_order_id="x1")
    await repo.save_order(placed)
    assert await repo.get_order("c1") == placed
    assert await repo.get_order("nope") is None


async def test_save_order_updates_status_filled_exchange_id_and_time(repo: SqlRepository) -> None:
    await repo.save_order(order())
    done = order(status="filled", filled="0.3", exchange_order_id="x1", updated_at=1005.0)
    await repo.save_order(done)
    assert await repo.get_order("c1") == done


async def test_a_closed_order_is_never_reopened_by_a_stale_update(repo: SqlRepository) -> None:
    done = order(status="filled", filled="0.3", exchange_order_id="x1", updated_at=1005.0)
    await repo.save_order(done)
    await repo.save_order(order(status="open", filled="0.1", updated_at=1001.0))
    assert await repo.get_order("c1") == done
    assert await repo.get_open_orders(SYMBOL) == []


async def test_filled_never_decreases(repo: SqlRepository) -> None:
    await repo.save_order(order(filled="0.2", updated_at=1002.0))
    await repo.save_order(order(filled="0.1", updated_at=1003.0))
    stored = await repo.get_order("c1")
    assert stored is not None
    assert stored.filled == Decimal("0.2")
    assert stored.updated_at == 1003.0


async def test_a_closed_order_may_change_to_another_closed_status(repo: SqlRepository) -> None:
    await repo.save_order(order(status="canceled", filled="0.1"))
    await repo.save_order(order(status="filled", filled="0.3"))
    stored = await repo.get_order("c1")
    assert stored is not None
    assert (stored.status, stored.filled) == ("filled", Decimal("0.3"))


async def test_first_write_fixes_price_amount_side_and_created_at(repo: SqlRepository) -> None:
    first = order(exchange_order_id="x1")
    await repo.save_order(
        replace(first, price=Decimal(1), amount=Decimal(2), side="sell", created_at=5.0)
    )
    # a lost exchange order id in a later update does not erase the stored one
    await repo.save_order(replace(first, exchange_order_id=""))
    stored = await repo.get_order("c1")
    assert stored is not None
    assert (stored.price, stored.amount, stored.side, stored.created_at) == (
        Decimal(1),
        Decimal(2),
        "sell",
        5.0,
    )
    assert stored.exchange_order_id == "x1"


async def test_save_orders_merges_updates_of_one_order_in_a_batch(repo: SqlRepository) -> None:
    await repo.save_orders(
        [
            order("a"),
            order("b", status="filled", filled="0.3", updated_at=1010.0),
            order("a", filled="0.1", updated_at=1001.0),
            order("b", status="open", updated_at=1002.0),  # stale
            order("a", status="canceled", filled="0.05", updated_at=1003.0),
        ]
    )
    a, b = await repo.get_order("a"), await repo.get_order("b")
    assert a is not None
    assert b is not None
    assert (a.status, a.filled, a.updated_at) == ("canceled", Decimal("0.1"), 1003.0)
    assert (b.status, b.filled, b.updated_at) == ("filled", Decimal("0.3"), 1010.0)


async def test_get_open_orders_by_symbol_and_exchange(make_repo: RepoFactory) -> None:
    binance, okx = await make_repo("binance"), await make_repo("okx")
    await binance.save_orders(
        [
            order("late", created_at=1002.0),
            order("early", created_at=1001.0),
            order("done", status="filled", filled="0.3"),
            order("other", symbol="BTC/USDT"),
        ]
    )
    await okx.save_order(order("okx-open"))
    opened = await binance.get_open_orders(SYMBOL)
    assert [o.client_order_id for o in opened] == ["early", "late"]
    assert await okx.get_order("early") is None
    assert [o.client_order_id for o in await okx.get_open_orders(SYMBOL)] == ["okx-open"]


async def test_overlong_ids_are_refused_before_writing(repo: SqlRepository) -> None:
    with pytest.raises(StorageError, match="client_order_id"):
        await repo.save_orders([order("ok"), order("x" * 65)])
    assert await repo.get_order("ok") is None


# --- fills --------------------------------------------------------------------------------


async def test_saving_a_fill_twice_stores_it_once(repo: SqlRepository) -> None:
    first = fill("t1")
    await repo.save_fill(first)
    await repo.save_fill(replace(first, price=Decimal(999)))
    assert await repo.get_trades(TradeFilter()) == [first]


async def test_save_fills_batch_with_duplicates(repo: SqlRepository) -> None:
    await repo.save_fill(fill("t1"))
    await repo.save_fills([fill("t1"), fill("t2"), fill("t2", price="5"), fill("t3")])
    trades = await repo.get_trades(TradeFilter())
    assert [t.trade_id for t in trades] == ["t1", "t2", "t3"]
    assert trades[1].price == Decimal(100)
    await repo.save_fills([])


async def test_same_trade_id_on_another_symbol_or_exchange_is_another_fill(
    make_repo: RepoFactory,
) -> None:
    binance, okx = await make_repo("binance"), await make_repo("okx")
    await binance.save_fills([fill("t1"), fill("t1", symbol="BTC/USDT")])
    await okx.save_fill(fill("t1"))
    assert len(await binance.get_trades(TradeFilter())) == 2
    assert len(await okx.get_trades(TradeFilter())) == 1


async def test_known_trade_ids(repo: SqlRepository) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    await repo.init_grid("BTC/USDT", Decimal(100))
    level = LevelState(0, Decimal("0.2"), Decimal(20), 1)
    bought = order("c1", status="filled", filled="0.2")
    assert await repo.record_execution(bought, [fill("t1"), fill("t2")], [level], [], fence=1)
    other = order("c1", symbol="BTC/USDT", status="filled", filled="0.1")
    assert await repo.record_execution(other, [fill("t3", symbol="BTC/USDT")], [level], [], 1)
    assert await repo.known_trade_ids(SYMBOL, ["t1", "t3", "t9", "t1"]) == {"t1"}
    assert await repo.known_trade_ids(SYMBOL, []) == set()


# --- fills stored without their level (a former owner's replay under a stale fence) -------


async def test_fills_stored_without_their_level_are_not_known_until_applied(
    repo: SqlRepository,
) -> None:
    """The fenced replay keeps the facts without the level: the fills are stored, yet the
    owner must not take them for fills whose effect on the level is stored."""
    await repo.init_grid(SYMBOL, Decimal(100))
    assert await repo.save_levels(SYMBOL, [], fence=5)  # the new owner's fence
    bought = order("B-1.0", status="filled", filled="0.2", exchange_order_id="x1")
    fills = [fill("t1", client_order_id="B-1.0"), fill("t2", client_order_id="B-1.0")]
    assert await repo.record_batch(SYMBOL, [bought], fills, [], [], None) is True
    assert await repo.get_order("B-1.0") == bought  # the facts are stored
    assert [f.trade_id for f in await repo.get_trades(TradeFilter())] == ["t1", "t2"]
    assert await repo.known_trade_ids(SYMBOL, ["t1", "t2"]) == set()
    assert await repo.unapplied_order_ids(SYMBOL) == ["B-1.0"]
    grid = await repo.load_grid(SYMBOL)
    assert grid is not None and grid.levels == {}

    # the owner applies them under its fence: now they are known, and no longer listed
    level = LevelState(-1, Decimal("0.2"), Decimal(20), 1)
    assert await repo.record_execution(bought, fills, [level], [], fence=5) is True
    assert await repo.known_trade_ids(SYMBOL, ["t1", "t2"]) == {"t1", "t2"}
    assert await repo.unapplied_order_ids(SYMBOL) == []
    assert await repo.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {-1: level}, 5)
    assert len(await repo.get_trades(TradeFilter())) == 2


async def test_a_fill_stored_with_its_level_is_never_marked_unapplied(repo: SqlRepository) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    level = LevelState(0, Decimal("0.1"), Decimal(10), 1)
    done = order("c1", status="filled", filled="0.1")
    assert await repo.record_execution(done, [fill("t1")], [level], [], fence=1)
    # the same fill again without its level: a late replay, a plain save
    assert await repo.record_batch(SYMBOL, [done], [fill("t1")], [], [], None)
    await repo.save_fills([fill("t1")])
    await repo.save_fill(fill("t1"))
    assert await repo.known_trade_ids(SYMBOL, ["t1"]) == {"t1"}
    assert await repo.unapplied_order_ids(SYMBOL) == []


async def test_save_fills_stores_fills_not_applied_to_their_level(repo: SqlRepository) -> None:
    await repo.save_fills([fill("t1"), fill("t2", client_order_id="c2")])
    await repo.save_fill(fill("t3", client_order_id="c3", ts=999.0))
    assert await repo.known_trade_ids(SYMBOL, ["t1", "t2", "t3"]) == set()
    assert await repo.unapplied_order_ids(SYMBOL) == ["c3", "c1", "c2"]


async def test_a_stale_fence_neither_writes_levels_nor_applies_fills(repo: SqlRepository) -> None:
    """Applying stored fills is a grid write: under a refused fence it changes nothing."""
    await repo.init_grid(SYMBOL, Decimal(100))
    assert await repo.save_levels(SYMBOL, [], fence=5)
    bought = order("b1", status="filled", filled="0.1")
    assert await repo.record_batch(
        SYMBOL, [bought], [fill("t1", client_order_id="b1")], [], [], None
    )
    level = LevelState(-1, Decimal("0.1"), Decimal(10), 1)
    stale = await repo.record_batch(
        SYMBOL, [bought], [fill("t1", client_order_id="b1")], [level], [], fence=4
    )
    assert stale is False
    assert (
        await repo.record_execution(bought, [fill("t1", client_order_id="b1")], [level], [], 4)
        is False
    )
    assert await repo.known_trade_ids(SYMBOL, ["t1"]) == set()
    assert await repo.unapplied_order_ids(SYMBOL) == ["b1"]
    assert await repo.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {}, 5)


async def test_unapplied_order_ids_oldest_first_of_this_symbol_and_exchange(
    make_repo: RepoFactory,
) -> None:
    repo, okx = await make_repo("binance"), await make_repo("okx")
    await repo.init_grid(SYMBOL, Decimal(100))
    await repo.save_fills(
        [
            fill("t1", client_order_id="late", ts=300.0),
            fill("t2", client_order_id="early", ts=100.0),
            fill("t3", client_order_id="late", ts=50.0),  # its oldest fill decides: 50
            fill("t4", client_order_id="tie-a", ts=200.0),
            fill("t5", client_order_id="tie-b", ts=200.0),  # same time: stored later, after
            fill("t6", client_order_id="other-symbol", symbol="BTC/USDT", ts=1.0),
        ]
    )
    await okx.save_fill(fill("t7", client_order_id="other-exchange", ts=1.0))
    level = LevelState(0, Decimal("0.1"), Decimal(10), 1)
    applied = order("applied", status="filled", filled="0.1")
    assert await repo.record_execution(
        applied, [fill("t8", client_order_id="applied", ts=2.0)], [level], [], fence=1
    )
    assert await repo.unapplied_order_ids(SYMBOL) == ["late", "early", "tie-a", "tie-b"]
    assert await repo.unapplied_order_ids("BTC/USDT") == ["other-symbol"]
    assert await okx.unapplied_order_ids(SYMBOL) == ["other-exchange"]
    assert await repo.unapplied_order_ids("XRP/USDT") == []
    # applying one of an order's fills leaves the order listed while another waits
    assert await repo.record_execution(
        order("late", status="filled", filled="0.2"),
        [fill("t3", client_order_id="late", ts=50.0)],
        [level],
        [],
        fence=1,
    )
    assert await repo.unapplied_order_ids(SYMBOL) == ["early", "tie-a", "tie-b", "late"]


async def test_get_trades_filters(repo: SqlRepository) -> None:
    await repo.save_fills(
        [
            fill("a", ts=10.0),
            fill("b", ts=20.0, side="sell"),
            fill("c", ts=30.0),
            fill("d", ts=20.0, symbol="BTC/USDT"),
        ]
    )

    async def ids(**kw: object) -> list[str]:
        return [t.trade_id for t in await repo.get_trades(TradeFilter(**kw))]  # type: ignore[arg-type]

    assert await ids() == ["a", "b", "d", "c"]
    assert await ids(symbol=SYMBOL) == ["a", "b", "c"]
    assert await ids(side="sell") == ["b"]
    assert await ids(since=20.0) == ["b", "d", "c"]
    assert await ids(until=20.0) == ["a"]
    assert await ids(symbol=SYMBOL, side="buy", since=10.0, until=30.0) == ["a"]
    assert await ids(limit=0) == []


async def test_get_trades_pages_in_ts_then_insertion_order(repo: SqlRepository) -> None:
    # same timestamp for all but one: insertion order breaks the tie
    await repo.save_fills([fill(f"t{i}", ts=5.0) for i in (3, 1, 2)] + [fill("t0", ts=1.0)])
    pages = [
        [t.trade_id for t in await repo.get_trades(TradeFilter(limit=3, offset=offset))]
        for offset in (0, 3, 6)
    ]
    assert pages == [["t0", "t3", "t1"], ["t2"], []]


async def test_get_trades_rejects_negative_paging(repo: SqlRepository) -> None:
    with pytest.raises(ValueError, match="negative"):
        await repo.get_trades(TradeFilter(offset=-1))


# --- round trips --------------------------------------------------------------------------


async def test_round_trips_are_saved_once_and_read_in_closing_order(repo: SqlRepository) -> None:
    late, early = round_trip(0, 1, closed_at=20.0), round_trip(1, 1, pnl="-0.5", closed_at=10.0)
    await repo.save_round_trip(late)
    await repo.save_round_trip(early)
    await repo.save_round_trip(replace(late, pnl=Decimal(99)))
    await repo.save_round_trip(round_trip(0, 1, symbol="BTC/USDT"))
    assert await repo.get_round_trips(SYMBOL) == [early, late]


# --- grid state ---------------------------------------------------------------------------


async def test_load_grid_of_an_unknown_symbol_is_none(repo: SqlRepository) -> None:
    assert await repo.load_grid(SYMBOL) is None


async def test_init_grid_first_anchor_wins(make_repo: RepoFactory) -> None:
    repo, other = await make_repo("binance"), await make_repo("okx")
    first = await repo.init_grid(SYMBOL, Decimal("2000.5"))
    assert first == GridState(SYMBOL, Decimal("2000.5"), {}, 0)
    again = await repo.init_grid(SYMBOL, Decimal(1800))
    assert again.anchor == Decimal("2000.5")
    assert (await other.init_grid(SYMBOL, Decimal(1800))).anchor == Decimal(1800)


async def test_save_levels_and_load_keeps_only_non_default_levels(repo: SqlRepository) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    levels = [
        LevelState(-2, Decimal("0.3"), Decimal("29.97"), 1),
        LevelState(-1, Decimal(0), Decimal(0), 3),  # sold again: kept for its cycle
        LevelState(4),  # default: not loaded
    ]
    assert await repo.save_levels(SYMBOL, levels, fence=1) is True
    grid = await repo.load_grid(SYMBOL)
    assert grid == GridState(SYMBOL, Decimal(100), {-2: levels[0], -1: levels[1]}, fence=1)

    sold = LevelState(-2, Decimal(0), Decimal(0), 1)
    assert await repo.save_levels(SYMBOL, [sold], fence=1) is True
    grid = await repo.load_grid(SYMBOL)
    assert grid is not None
    assert grid.levels == {-2: sold, -1: levels[1]}


async def test_save_levels_refuses_an_older_fence_and_writes_nothing(repo: SqlRepository) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    kept = LevelState(1, Decimal("0.1"), Decimal(10), 1)
    assert await repo.save_levels(SYMBOL, [kept], fence=7) is True

    stale = [
        LevelState(1, Decimal("0.9"), Decimal(90), 2),
        LevelState(2, Decimal(1), Decimal(1), 1),
    ]
    assert await repo.save_levels(SYMBOL, stale, fence=6) is False
    assert await repo.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {1: kept}, fence=7)

    newer = LevelState(1, Decimal(0), Decimal(0), 1)
    assert await repo.save_levels(SYMBOL, [newer], fence=8) is True
    assert await repo.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {1: newer}, fence=8)


async def test_save_levels_without_a_grid_is_an_error(repo: SqlRepository) -> None:
    with pytest.raises(StorageError, match="not initialised"):
        await repo.save_levels(SYMBOL, [LevelState(1, Decimal(1), Decimal(1), 1)], fence=0)


async def test_record_execution_writes_everything(repo: SqlRepository) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    sell = order("s1", side="sell", status="filled", filled="0.3")
    level = LevelState(0, Decimal(0), Decimal(0), 1)
    trip = round_trip(0, 1)
    fills = [fill("t1", side="sell", client_order_id="s1"), fill("t1", side="sell")]
    assert await repo.record_execution(sell, fills, [level], [trip], fence=2) is True
    assert await repo.get_order("s1") == sell
    assert [t.trade_id for t in await repo.get_trades(TradeFilter())] == ["t1"]
    assert await repo.get_round_trips(SYMBOL) == [trip]
    assert await repo.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {0: level}, 2)
    # replaying it changes nothing
    assert await repo.record_execution(sell, fills, [level], [trip], fence=2) is True
    assert len(await repo.get_trades(TradeFilter())) == 1


async def test_record_execution_with_a_stale_fence_writes_nothing(repo: SqlRepository) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    assert await repo.save_levels(SYMBOL, [], fence=5) is True
    written = await repo.record_execution(
        order("s1", status="filled", filled="0.3"),
        [fill("t1")],
        [LevelState(0, Decimal("0.3"), Decimal(30), 1)],
        [round_trip()],
        fence=4,
    )
    assert written is False
    assert await repo.get_order("s1") is None
    assert await repo.get_trades(TradeFilter()) == []
    assert await repo.get_round_trips(SYMBOL) == []
    assert await repo.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {}, 5)


async def test_save_last_price(repo: SqlRepository) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    await repo.save_last_price(SYMBOL, Decimal("101.25"), 1234.5)
    await repo.save_last_price("BTC/USDT", Decimal(1), 1.0)  # no grid: ignored
    (summary,) = await repo.summaries()
    assert (summary.last_price, summary.last_price_at) == (Decimal("101.25"), 1234.5)


# --- summaries ----------------------------------------------------------------------------


async def test_summaries_across_exchanges(make_repo: RepoFactory, clock: FakeClock) -> None:
    binance, okx = await make_repo("binance"), await make_repo("okx")
    for repo in (binance, okx):
        await repo.init_grid(SYMBOL, Decimal(100))
    await binance.init_grid("BTC/USDT", Decimal(30000))

    await binance.save_levels(
        SYMBOL,
        [
            LevelState(0, Decimal(BIG), Decimal(1), 1),
            LevelState(1, Decimal("0.000000000000000002"), Decimal(1), 1),
            LevelState(2, Decimal(0), Decimal(0), 4),
        ],
        fence=0,
    )
    await binance.save_orders([order("a"), order("b"), order("c", status="canceled")])
    await binance.save_order(order("d", symbol="BTC/USDT", status="filled", filled="0.3"))
    await binance.save_round_trip(round_trip(0, 1, pnl="0.1"))
    await binance.save_round_trip(round_trip(0, 2, pnl="0.2"))
    await binance.save_round_trip(round_trip(1, 1, pnl="-0.000000000000000001"))
    await binance.save_last_price(SYMBOL, Decimal("100.5"), 99.0)
    await okx.save_order(order("a"))
    await okx.save_round_trip(round_trip(0, 1, pnl="7"))

    assert await okx.summaries() == [
        SymbolSummary("binance", "BTC/USDT", None, None, Decimal(0), 0, Decimal(0), 0),
        SymbolSummary(
            "binance",
            SYMBOL,
            Decimal("100.5"),
            99.0,
            Decimal("123456789012345678.123456789012345680"),
            2,
            Decimal("0.299999999999999999"),
            3,
        ),
        SymbolSummary("okx", SYMBOL, None, None, Decimal(0), 1, Decimal(7), 1),
    ]


async def test_the_grid_shape_is_stored_and_changed_under_the_fence(make_repo: RepoFactory) -> None:
    repo = await make_repo("simulated")
    created = await repo.init_grid(SYMBOL, Decimal(100), GridShape("geometric", Decimal("0.005")))
    assert created.shape == GridShape("geometric", Decimal("0.005"))
    assert await repo.save_levels(SYMBOL, [], fence=7)
    assert not await repo.set_grid_shape(SYMBOL, GridShape("arithmetic", Decimal(1)), fence=6)
    assert await repo.set_grid_shape(SYMBOL, GridShape("arithmetic", Decimal(1)), fence=7)
    loaded = await repo.load_grid(SYMBOL)
    assert loaded is not None and loaded.shape == GridShape("arithmetic", Decimal(1))


async def test_a_client_order_id_placed_again_describes_the_later_order(
    repo: SqlRepository,
) -> None:
    # A buy cancelled before any fill is placed again with the same client order id.
    await repo.save_order(order("c1", exchange_order_id="x1", status="canceled", created_at=1000.0))
    again = order("c1", exchange_order_id="x2", amount="0.29", created_at=2000.0)
    await repo.save_order(again)
    assert await repo.get_order("c1") == again
    assert [o.client_order_id for o in await repo.get_open_orders(SYMBOL)] == ["c1"]
    # A late word about the first order changes nothing.
    await repo.save_order(order("c1", exchange_order_id="x1", status="canceled", updated_at=2500.0))
    assert await repo.get_order("c1") == again


async def test_last_order_time_is_the_latest_placement(make_repo: RepoFactory) -> None:
    repo, other = await make_repo("simulated"), await make_repo("binance")
    assert await repo.last_order_time(SYMBOL) is None
    await repo.save_orders([order("a", created_at=1000.0), order("b", created_at=1500.0)])
    await other.save_order(order("c", created_at=9000.0))
    assert await repo.last_order_time(SYMBOL) == 1500.0

"""Buffered writes survive the journal exactly; the seed's DSN kinds are recognised."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from quantmesh.grid.state import GridShape, LevelState
from quantmesh.storage.dsn import guess_type
from quantmesh.storage.records import CorruptRecord, Record, decode, encode

from .support import SYMBOL, fill, order, round_trip


@pytest.mark.parametrize(
    "record",
    [
        Record(
            1, "orders", orders=(replace(order("c1", price="0.000000000000000001"), lock_fence=7),)
        ),
        Record(2, "fills", fills=(fill("t1", amount="123456789012345678.123456789012345678"),)),
        Record(3, "round_trips", round_trips=(round_trip(3, 9, pnl="-0.5"),)),
        Record(
            4,
            "levels",
            symbol=SYMBOL,
            levels=(LevelState(-3, Decimal("0.3"), Decimal(30), 2),),
            fence=5,
        ),
        Record(5, "shape", symbol=SYMBOL, shape=GridShape("geometric", Decimal("1.01")), fence=1),
        Record(
            6,
            "execution",
            symbol=SYMBOL,
            orders=(order("b", status="filled", filled="0.3"),),
            fills=(fill("t2", ts=1700000000.123456),),
            levels=(LevelState(0),),
            round_trips=(round_trip(),),
            fence=2**40,
        ),
    ],
    ids=lambda r: r.op,
)
def test_a_record_round_trips_through_its_journal_line_exactly(record: Record) -> None:
    line = encode(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = decode(line)
    assert back == record
    assert [o.lock_fence for o in back.orders] == [o.lock_fence for o in record.orders]


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"seq": 1, "op": "drop_tables"}\n',
        b'{"seq": "1", "op": "fills"}\n',
        b'{"seq": 1, "op": "fills", "fills": [{"trade_id": "t", "price": "abc"}]}\n',
        b'{"seq": 1, "op": "fills", "fills": {"trade_id": "t"}}\n',
        b'{"seq": 1, "op": "orders", "orders": [{"nonsense": 1}]}\n',
        b"\xff\xfe\n",
    ],
)
def test_a_damaged_line_is_a_corrupt_record(line: bytes) -> None:
    with pytest.raises(CorruptRecord):
        decode(line)


@pytest.mark.parametrize(
    ("dsn", "kind"),
    [
        ("./data/quantmesh.db", "sqlite"),
        ("sqlite:///data/q.db", "sqlite"),
        ("host=localhost user=q password=p dbname=q", "postgres"),
        ("postgresql+asyncpg://q@db/q", "postgres"),
        ("q:p@tcp(db:3306)/q?charset=utf8mb4", "mysql"),
        ("q@unix(/run/mysqld.sock)/q", "mysql"),
        ("mariadb://q@db/q", "mysql"),
    ],
)
def test_the_database_kind_of_a_dsn_is_recognised(dsn: str, kind: str) -> None:
    assert guess_type(dsn) == kind

"""Which symbols an instance wants: static masters, standbys, rendezvous hashing. Pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quantmesh.coordination.allocation import Member, rendezvous_owner, wanted

SYMBOLS = frozenset(f"C{i}/USDT" for i in range(40))


def master(name: str, symbols: frozenset[str] = SYMBOLS) -> Member:
    return Member(name, "master", symbols)


def standby(name: str, symbols: frozenset[str] = SYMBOLS) -> Member:
    return Member(name, "standby", symbols)


def test_a_static_master_wants_all_its_symbols_whoever_else_is_live() -> None:
    me = master("a", frozenset({"ETH/USDT"}))
    assert wanted("static", me, [me, master("b", frozenset({"ETH/USDT"}))]) == {"ETH/USDT"}
    assert wanted("static", me, []) == {"ETH/USDT"}


def test_a_standby_wants_only_what_no_live_master_claims() -> None:
    me = standby("s", frozenset({"ETH/USDT", "BTC/USDT", "SOL/USDT"}))
    m1 = master("m1", frozenset({"ETH/USDT"}))
    m2 = master("m2", frozenset({"BTC/USDT"}))
    assert wanted("static", me, [me, m1, m2]) == {"SOL/USDT"}
    assert wanted("static", me, [me, m2]) == {"ETH/USDT", "SOL/USDT"}  # m1 gone
    assert wanted("static", me, [me]) == me.symbols
    # another standby claims nothing
    assert wanted("static", me, [me, standby("s2")]) == me.symbols


def test_dynamic_gives_every_symbol_to_exactly_one_live_member() -> None:
    fleet = [master(n) for n in ("a", "b", "c")]
    shares = [wanted("dynamic", m, fleet) for m in fleet]
    assert frozenset().union(*shares) == SYMBOLS
    assert sum(len(s) for s in shares) == len(SYMBOLS)
    assert all(len(s) >= 5 for s in shares), [len(s) for s in shares]  # roughly balanced


def test_dynamic_moves_only_the_symbols_of_a_member_that_leaves() -> None:
    fleet = [master(n) for n in ("a", "b", "c")]
    before = {m.id: wanted("dynamic", m, fleet) for m in fleet}
    rest = fleet[:2]
    after = {m.id: wanted("dynamic", m, rest) for m in rest}
    for name in ("a", "b"):
        assert before[name] <= after[name]  # nobody loses a symbol when another leaves
    assert after["a"] | after["b"] == SYMBOLS


def test_dynamic_ignores_members_not_configured_with_a_symbol() -> None:
    a = master("a", frozenset({"ETH/USDT"}))
    b = master("b", frozenset({"BTC/USDT"}))
    assert wanted("dynamic", a, [a, b]) == {"ETH/USDT"}
    assert rendezvous_owner("SOL/USDT", [a, b]) is None


@given(
    names=st.lists(
        st.text("abcdefgh0123", min_size=1, max_size=6), min_size=1, max_size=6, unique=True
    ),
    symbol=st.sampled_from(sorted(SYMBOLS)),
)
def test_every_member_computes_the_same_owner_whatever_the_order(
    names: list[str], symbol: str
) -> None:
    fleet = [master(n) for n in names]
    owner = rendezvous_owner(symbol, fleet)
    assert owner == rendezvous_owner(symbol, list(reversed(fleet)))
    assert owner in names
    # exactly the owner wants it
    assert [m.id for m in fleet if symbol in wanted("dynamic", m, fleet)] == [owner]

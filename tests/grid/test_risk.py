"""``grid.risk``: each trigger fires once with the values that crossed it; a resume watches
again from the equity of that moment, a price trigger only once its price came back."""

from __future__ import annotations

from decimal import Decimal

from quantmesh.grid.risk import InstanceLimits, InstanceWatch, RiskLimits, RiskWatch

D = Decimal
ORDER = D(30)


def test_stop_loss_and_take_profit_fire_at_their_prices_once() -> None:
    watch = RiskWatch(RiskLimits(stop_loss_price=D(1800), take_profit_price=D(2600),
                                 actions={"stop_loss": "stop_buys"}))  # fmt: skip
    assert watch.check(D("1800.01"), D(0), D(0), ORDER) is None
    fired = watch.check(D(1800), D(-5), D(60), ORDER)
    assert fired is not None and (fired.trigger, fired.action) == ("stop_loss", "stop_buys")
    assert fired.reason == "risk stop_loss (price 1800, stop_loss_price 1800): stop_buys"
    assert watch.check(D(1700), D(-9), D(60), ORDER) is None  # once
    high = RiskWatch(RiskLimits(take_profit_price=D(2600)))
    fired = high.check(D(2600.5), D(3), D(0), ORDER)
    assert fired is not None and (fired.trigger, fired.action) == ("take_profit", "halt")


def test_max_loss_fires_below_the_floor_only() -> None:
    watch = RiskWatch(RiskLimits(max_loss=D(100)))
    assert watch.check(D(2000), D(-100), D(500), ORDER) is None  # at the floor: not below
    fired = watch.check(D(2000), D("-100.01"), D(500), ORDER)
    assert fired is not None and fired.values == (("equity", "-100.01"), ("max_loss", "100"))


def test_max_drawdown_in_quote_is_measured_from_the_peak() -> None:
    watch = RiskWatch(RiskLimits(max_drawdown=D(50)))
    for equity in (D(0), D(40), D(80), D(31)):  # peak 80, fallen 49
        assert watch.check(D(2000), equity, D(300), ORDER) is None
    fired = watch.check(D(2000), D("29.9"), D(300), ORDER)
    assert fired is not None and fired.trigger == "max_drawdown"
    assert dict(fired.values) == {"drawdown": "50.1", "peak": "80", "max_drawdown": "50"}


def test_max_drawdown_in_percent_is_of_the_capital_committed_at_the_peak() -> None:
    watch = RiskWatch(RiskLimits(max_drawdown_percent=D(10)))
    assert watch.check(D(2000), D(20), D(400), ORDER) is None  # peak 20 with 400 committed
    assert watch.check(D(2000), D(-20), D(900), ORDER) is None  # fallen 40 = 10 %: not above
    fired = watch.check(D(2000), D("-20.5"), D(900), ORDER)
    assert fired is not None and dict(fired.values)["drawdown"] == "10.12%"  # 10.125, to even


def test_a_resume_watches_again_from_then_and_waits_for_the_price_to_come_back() -> None:
    watch = RiskWatch(RiskLimits(stop_loss_price=D(1800), max_drawdown=D(50)))
    assert watch.check(D(1790), D(0), D(0), ORDER) is not None
    watch.resume(D(1790), D(-60), D(100), ORDER)  # still below the stop, equity -60
    assert watch.check(D(1780), D(-100), D(100), ORDER) is None  # no refire; drawdown 40
    assert watch.check(D(1810), D(-100), D(100), ORDER) is None  # back above: armed again
    fired = watch.check(D(1799), D(-100), D(100), ORDER)
    assert fired is not None and fired.trigger == "stop_loss"
    watch.resume(D(1900), D(-100), D(100), ORDER)
    fired = watch.check(D(1900), D("-150.5"), D(100), ORDER)
    assert fired is not None and fired.trigger == "max_drawdown"


def test_limits_with_nothing_set_are_off() -> None:
    assert not RiskLimits().any
    assert RiskLimits(max_loss=D(1)).any
    assert RiskLimits().action("stop_loss") == "halt"


DAY, NEXT = "2026-12-04", "2026-12-05"


def test_max_daily_loss_fires_once_and_a_resume_allows_as_much_again() -> None:
    watch = InstanceWatch(InstanceLimits(max_daily_loss=D(500)))
    assert watch.check(DAY, D(-500), D(9000)) is None  # at the limit: not beyond
    fired = watch.check(DAY, D("-500.5"), D(9000))
    assert fired is not None and (fired.trigger, fired.action) == ("max_daily_loss", "halt")
    assert fired.reason == "risk max_daily_loss (day_pnl -500.5, max_daily_loss 500): halt"
    assert watch.check(DAY, D(-900), D(0)) is None  # in force: quiet
    watch.resume(DAY, D(-600), D(0))
    assert watch.check(DAY, D(-1100), D(0)) is None  # another 500 from -600
    assert watch.check(DAY, D("-1100.01"), D(0)) is not None
    watch.resume(DAY, D(-1200), D(0))
    assert watch.check(NEXT, D(-499), D(0)) is None  # a new day starts from zero
    assert watch.check(NEXT, D(-501), D(0)) is not None


def test_max_total_position_waits_after_a_resume_until_it_came_back_under() -> None:
    limits = InstanceLimits(max_total_position=D(1000))
    assert limits.action("max_total_position") == "stop_buys"
    watch = InstanceWatch(limits)
    assert watch.check(DAY, D(0), D(1000)) is None
    fired = watch.check(DAY, D(0), D(1200))
    assert fired is not None and fired.values == (
        ("exposure", "1200"),
        ("max_total_position", "1000"),
    )
    watch.resume(DAY, D(0), D(1100))  # still above: a resume is not undone at once
    assert watch.check(DAY, D(0), D(1150)) is None
    assert watch.check(DAY, D(0), D(900)) is None  # back under
    assert watch.check(DAY, D(0), D(1001)) is not None


def test_an_instance_without_limits_never_fires() -> None:
    watch = InstanceWatch(InstanceLimits())
    assert not watch.limits.any
    assert watch.check(DAY, D(-1e9), D(1e9)) is None

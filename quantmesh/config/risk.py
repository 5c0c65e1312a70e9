"""The risk settings: a symbol's exits (``trading.symbols[].risk``) and the instance's
limits across its symbols (``risk``), as ``grid.risk`` and ``grid.liquidate`` read them."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator, model_validator

from quantmesh.config.fields import Dec, PositiveDecimal, Seconds, Section, as_number
from quantmesh.config.problems import FieldProblems
from quantmesh.grid.risk import (
    INSTANCE_TRIGGERS,
    TRIGGERS,
    InstanceLimits,
    RiskAction,
    RiskLimits,
)

if TYPE_CHECKING:  # the grid's liquidation imports the planner: not for check-config
    from quantmesh.grid.liquidate import Liquidation


class RiskActionsSettings(Section):
    """The action each trigger takes (``stop_buys``: keep selling what is held; ``halt``:
    cancel every order and place nothing; ``liquidate``: cancel the buys and sell what is
    held at the market's price)."""

    stop_loss: RiskAction = "halt"
    take_profit: RiskAction = "halt"
    max_drawdown: RiskAction = "halt"
    max_loss: RiskAction = "halt"


class RiskSettings(Section):
    """``trading.symbols[].risk``: the symbol's exits (each off unless set)."""

    stop_loss_price: PositiveDecimal | None = None
    take_profit_price: PositiveDecimal | None = None
    max_drawdown: Annotated[str, Field(min_length=1)] | PositiveDecimal | None = None
    max_loss: PositiveDecimal | None = None
    actions: RiskActionsSettings = RiskActionsSettings()
    # seconds between re-pricings of a liquidation's sells that the price fell away from
    reprice_interval: Seconds = 2.0
    # after market_after seconds of a liquidation: sell up to market_slippage_percent below
    # the price, to fill at once as a market order would, within that bound
    allow_market: bool = False
    market_after: Seconds = 60.0
    market_slippage_percent: Annotated[Dec, Field(gt=0, lt=100)] = Decimal(1)

    @field_validator("max_drawdown", mode="before")
    @classmethod
    def _drawdown(cls, value: Any) -> Any:
        value = as_number(value)
        if isinstance(value, str) and not value.strip().endswith("%"):
            try:
                return Decimal(value.strip())
            except ArithmeticError:
                raise ValueError(
                    "must be an amount in quote currency (150) or a percentage ('15%')"
                ) from None
        return value

    @model_validator(mode="after")
    def _check_risk(self) -> RiskSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        low, high = self.stop_loss_price, self.take_profit_price
        if low is not None and high is not None and high <= low:
            problems.append((("take_profit_price",), f"must be above stop_loss_price ({low})"))
        if isinstance(self.max_drawdown, str):
            try:
                percent = Decimal(self.max_drawdown.strip()[:-1])
            except ArithmeticError:
                percent = Decimal(-1)
            if not 0 < percent <= 100:
                problems.append(
                    (("max_drawdown",), "a percentage must be above 0% and at most 100% ('15%')")
                )
        if problems:
            raise FieldProblems(problems)
        return self

    def liquidation(self) -> Liquidation:
        """How this symbol liquidates, as the trader reads it."""
        from quantmesh.grid.liquidate import Liquidation

        return Liquidation(
            reprice_interval=self.reprice_interval,
            allow_market=self.allow_market,
            market_after=self.market_after,
            market_slippage=self.market_slippage_percent / 100,
        )

    def limits(self) -> RiskLimits:
        """These settings as the risk watch reads them."""
        amount = self.max_drawdown if isinstance(self.max_drawdown, Decimal) else None
        percent = None
        if isinstance(self.max_drawdown, str):
            percent = Decimal(self.max_drawdown.strip()[:-1])
        return RiskLimits(
            stop_loss_price=self.stop_loss_price,
            take_profit_price=self.take_profit_price,
            max_drawdown=amount,
            max_drawdown_percent=percent,
            max_loss=self.max_loss,
            actions={trigger: getattr(self.actions, trigger) for trigger in TRIGGERS},
        )


class InstanceRiskActionsSettings(Section):
    """The action each of the instance's triggers takes on every symbol it trades."""

    max_daily_loss: RiskAction = "halt"
    max_total_position: RiskAction = "stop_buys"


class InstanceRiskSettings(Section):
    """``risk``: limits across the symbols this instance trades (each off unless set)."""

    max_daily_loss: PositiveDecimal | None = None  # quote: the UTC day's realized + unrealized
    max_total_position: PositiveDecimal | None = None  # quote: held at the price + open buys
    actions: InstanceRiskActionsSettings = InstanceRiskActionsSettings()

    def limits(self) -> InstanceLimits:
        """These settings as the instance's risk watch reads them."""
        return InstanceLimits(
            max_daily_loss=self.max_daily_loss,
            max_total_position=self.max_total_position,
            actions={t: getattr(self.actions, t) for t in INSTANCE_TRIGGERS},
        )

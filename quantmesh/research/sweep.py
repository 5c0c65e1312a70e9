"""Parameter sweeps: a grid of settings, each run as a whole backtest, ranked.

A sweep is one or more ``NAME=VALUES`` specs over the grid settings of every symbol:

- ``NAME=A:B:N``: ``N`` values evenly spaced from ``A`` to ``B``, both included;
- ``NAME=V1,V2,...``: these values.

A value ending in ``%`` is a share: for ``price_interval`` of each symbol's first price
in the period (the grid's anchor), rounded to the market's tick; for ``grid_ratio`` the
ratio itself (``0.5%`` = ``0.005``). Window sizes and ``cancel_hysteresis`` take whole
numbers. Every combination of the specs is one run; each combination's settings are
validated as the daemon validates its YAML.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from pydantic import ValidationError

from quantmesh.config import SymbolSettings
from quantmesh.config.problems import validation_problems
from quantmesh.research.errors import ResearchError

__all__ = ["RANKINGS", "SWEEPABLE", "Combination", "apply", "combinations", "parse_sweep"]

SWEEPABLE = (
    "price_interval", "grid_ratio", "order_quantity", "buy_window_size", "sell_window_size",
    "min_order_value", "max_position", "cancel_hysteresis", "lower_price", "upper_price",
)  # fmt: skip
_WHOLE = frozenset({"buy_window_size", "sell_window_size", "cancel_hysteresis"})
_PERCENT = frozenset({"price_interval", "grid_ratio"})
RANKINGS: dict[str, bool] = {  # metric -> higher is better
    "return_pct": True,
    "total_pnl": True,
    "realized_pnl": True,
    "round_trips": True,
    "max_drawdown_pct": False,
    "committed_capital": False,
}
MAX_COMBINATIONS = 10_000


@dataclass(frozen=True, slots=True)
class Value:
    """One swept value: a number, or a share (``%``) of something per symbol."""

    number: Decimal
    percent: bool = False

    def __str__(self) -> str:
        text = f"{self.number.normalize():f}"
        return f"{text}%" if self.percent else text


Combination = tuple[tuple[str, Value], ...]


def _number(name: str, text: str, spec: str) -> Value:
    text = text.strip()
    percent = text.endswith("%")
    if percent:
        text = text[:-1].strip()
        if name not in _PERCENT:
            raise ResearchError(
                f"--sweep {spec}: only price_interval and grid_ratio take a % value"
            )
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ResearchError(f"--sweep {spec}: {text!r} is not a number") from None
    if not number.is_finite():
        raise ResearchError(f"--sweep {spec}: {text!r} is not a finite number")
    if name in _WHOLE and number != number.to_integral_value():
        raise ResearchError(f"--sweep {spec}: {name} takes whole numbers")
    return Value(number, percent)


def _values(name: str, text: str, spec: str) -> list[Value]:
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ResearchError(f"--sweep {spec}: a range is FROM:TO:COUNT, e.g. 0.2%:1%:5")
        low, high = _number(name, parts[0], spec), _number(name, parts[1], spec)
        if low.percent != high.percent:
            raise ResearchError(f"--sweep {spec}: both ends in % or neither")
        try:
            count = int(parts[2])
        except ValueError:
            raise ResearchError(
                f"--sweep {spec}: COUNT {parts[2]!r} is not a whole number"
            ) from None
        if count < 2:
            raise ResearchError(f"--sweep {spec}: COUNT must be at least 2")
        step = (high.number - low.number) / (count - 1)
        values = [Value(low.number + step * i, low.percent) for i in range(count)]
        if name in _WHOLE:
            values = [Value(v.number.to_integral_value(ROUND_HALF_EVEN)) for v in values]
        else:
            values = [Value(Decimal(f"{v.number:.10g}"), v.percent) for v in values]
    else:
        values = [_number(name, part, spec) for part in text.split(",") if part.strip()]
    if not values:
        raise ResearchError(f"--sweep {spec}: no values")
    unique = list(dict.fromkeys(values))
    return unique


def parse_sweep(specs: list[str]) -> dict[str, list[Value]]:
    """``["price_interval=0.2%:1%:5", "buy_window_size=5,10,20"]`` -> values by name."""
    swept: dict[str, list[Value]] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not text.strip():
            raise ResearchError(f"--sweep {spec}: expected NAME=FROM:TO:COUNT or NAME=V1,V2")
        if name not in SWEEPABLE:
            raise ResearchError(
                f"--sweep {spec}: {name!r} cannot be swept; use one of {', '.join(SWEEPABLE)}"
            )
        if name in swept:
            raise ResearchError(f"--sweep {spec}: {name} is swept twice")
        swept[name] = _values(name, text, spec)
    return swept


def combinations(swept: dict[str, list[Value]]) -> list[Combination]:
    """Every combination of the swept values, in a stable order."""
    names = list(swept)
    combos = [
        tuple(zip(names, values, strict=True))
        for values in itertools.product(*(swept[n] for n in names))
    ]
    if len(combos) > MAX_COMBINATIONS:
        raise ResearchError(
            f"--sweep: {len(combos)} combinations; at most {MAX_COMBINATIONS}, sweep fewer values"
        )
    return combos


def label(combo: Combination) -> str:
    """``price_interval=0.2% buy_window_size=5``."""
    return " ".join(f"{name}={value}" for name, value in combo)


def apply(
    settings: SymbolSettings, combo: Combination, first_price: Decimal, tick: Decimal
) -> SymbolSettings:
    """``settings`` with the combination's values, validated like the YAML."""
    data = settings.model_dump()
    for name, value in combo:
        number = value.number
        if value.percent and name == "price_interval":
            number = (first_price * number / 100 / tick).to_integral_value(ROUND_HALF_EVEN) * tick
            if number <= 0:
                number = tick
        elif value.percent:
            number = number / 100
        data[name] = int(number) if name in _WHOLE else number
    try:
        return SymbolSettings.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, SymbolSettings)
        where = f"{settings.symbol} with {label(combo)}"
        raise ResearchError(f"--sweep: {where}: {'; '.join(problems)}") from None

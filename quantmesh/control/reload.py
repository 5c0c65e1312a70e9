"""What a reload of the settings file changes: a pure difference of two settings.

- ``diff(old, new)`` lists per change one line, in the order symbols, their grids, the
  service's own settings, then what needs a restart:
  ``symbol added: SOL/USDT``, ``symbol removed: BTC/USDT``,
  ``ETH/USDT: buy_window_size 3 -> 5`` (a symbol's settings by their YAML keys),
  ``trading: shutdown_grace 5 -> 3``, ``database.dsn: needs a restart (not applied)``;
- ``effective(old, new, kept)`` the settings in force after a reload: the new file, except
  what needs a restart and the symbols whose change was refused (``kept``);
- ``ReloadReport`` what one reload did, for ``/api/status``, the log and ``quantmesh
  reload``.

Applied live: the symbols (added, removed) and their grid parameters, and
``trading.cancel_on_exit``, ``cancel_timeout``, ``shutdown_grace``. Everything else needs
a restart. Secret values are never written into a line, only their paths.

The settings are read through the protocols below: ``config`` sits above this package
(``quantmesh.config.Settings`` is what callers pass).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

# ``trading`` settings applied to a running service without a restart.
LIVE_TRADING = ("cancel_on_exit", "cancel_timeout", "shutdown_grace")
# Grid parameters that give the levels their meaning: changing them on a grid that holds
# inventory or orders is refused (the trader's rule at start). ``STEP`` names them as
# ``GridParams`` does, ``STEP_SETTINGS`` as the YAML file does.
STEP = ("spacing", "interval")
STEP_SETTINGS = ("spacing", "price_interval", "grid_ratio")
NEEDS_RESTART = "needs a restart (not applied)"


class SymbolConfig(Protocol):
    """One ``trading.symbols`` entry (``quantmesh.config.SymbolSettings``)."""

    @property
    def symbol(self) -> str: ...

    def model_dump(self) -> dict[str, Any]: ...


class TradingConfig(Protocol):
    @property
    def symbols(self) -> Sequence[SymbolConfig]: ...


class ReloadableSettings(Protocol):
    """What ``diff`` reads of ``quantmesh.config.Settings``."""

    @property
    def trading(self) -> TradingConfig: ...

    def model_dump(self) -> dict[str, Any]: ...

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Any: ...


S = TypeVar("S", bound=ReloadableSettings)


@dataclass(frozen=True, slots=True)
class FieldChange:
    name: str
    old: str
    new: str

    def line(self, prefix: str) -> str:
        return f"{prefix}: {self.name} {self.old} -> {self.new}"


@dataclass(frozen=True, slots=True)
class SymbolChange:
    """A symbol configured before and after, with other grid parameters."""

    symbol: str
    fields: tuple[FieldChange, ...]

    @property
    def step_changed(self) -> bool:
        """Whether the levels would mean other prices (spacing or step changed)."""
        return any(change.name in STEP_SETTINGS for change in self.fields)

    def lines(self) -> list[str]:
        return [change.line(self.symbol) for change in self.fields]


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """Every difference between the settings in force and the file, by what it takes."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[SymbolChange, ...] = ()
    trading: tuple[FieldChange, ...] = ()  # LIVE_TRADING settings
    restart: tuple[str, ...] = ()  # dotted paths of settings that need a restart

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.trading or self.restart)

    def lines(self, refused: Mapping[str, str] | None = None) -> list[str]:
        """One line per change; those of a symbol in ``refused`` end with its reason."""
        return [line for line, _ in self.entries(refused)]

    def entries(self, refused: Mapping[str, str] | None = None) -> list[tuple[str, bool]]:
        """Each line, and whether it is applied (not refused, not left for a restart)."""
        refused = refused or {}

        def of(symbol: str, line: str) -> tuple[str, bool]:
            why = refused.get(symbol)
            return (line, True) if why is None else (f"{line}: {why}", False)

        return [
            *(of(symbol, f"symbol added: {symbol}") for symbol in self.added),
            *((f"symbol removed: {symbol}", True) for symbol in self.removed),
            *(of(change.symbol, line) for change in self.changed for line in change.lines()),
            *((change.line("trading"), True) for change in self.trading),
            *((f"{path}: {NEEDS_RESTART}", False) for path in self.restart),
        ]


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What one reload did: ``changes`` (one line each, refused ones saying so) when the
    file was valid, else its ``problems`` (check-config's lines) and nothing changed."""

    at: float  # Unix time
    ok: bool
    changes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"at": self.at, "ok": self.ok}
        if self.ok:
            body["changes"] = list(self.changes)
        else:
            body["problems"] = list(self.problems)
        return body


def diff(old: ReloadableSettings, new: ReloadableSettings) -> ReloadPlan:
    """What differs between the settings in force (``old``) and the file (``new``)."""
    before = {entry.symbol: entry for entry in old.trading.symbols}
    after = {entry.symbol: entry for entry in new.trading.symbols}
    changed = []
    for symbol, entry in after.items():
        if symbol in before:
            fields = _symbol_changes(before[symbol], entry)
            if fields:
                changed.append(SymbolChange(symbol, fields))
    old_dump, new_dump = old.model_dump(), new.model_dump()
    old_trading, new_trading = old_dump.pop("trading"), new_dump.pop("trading")
    trading = tuple(
        FieldChange(name, _text(old_trading[name]), _text(new_trading[name]))
        for name in LIVE_TRADING
        if old_trading[name] != new_trading[name]
    )
    rest = {k: v for k, v in old_trading.items() if k not in (*LIVE_TRADING, "symbols")}
    rest_new = {k: v for k, v in new_trading.items() if k not in (*LIVE_TRADING, "symbols")}
    restart = _paths(old_dump, new_dump, "") + _paths(rest, rest_new, "trading.")
    return ReloadPlan(
        added=tuple(symbol for symbol in after if symbol not in before),
        removed=tuple(symbol for symbol in before if symbol not in after),
        changed=tuple(changed),
        trading=trading,
        restart=tuple(restart),
    )


def effective(old: S, new: S, kept: Collection[str] = ()) -> S:
    """The settings in force after applying ``new`` over ``old``: ``new`` except what
    needs a restart (kept from ``old``), and for each symbol in ``kept`` (its change was
    refused) its ``old`` entry, or none when it was not configured before."""
    new_dump = new.model_dump()
    before = {entry.symbol: entry for entry in old.trading.symbols}
    symbols: list[SymbolConfig] = []
    for entry in new.trading.symbols:
        if entry.symbol not in kept:
            symbols.append(entry)
        elif entry.symbol in before:
            symbols.append(before[entry.symbol])
    symbols += [
        entry
        for symbol, entry in before.items()
        if symbol in kept and all(s.symbol != symbol for s in new.trading.symbols)
    ]
    update: dict[str, Any] = {name: new_dump["trading"][name] for name in LIVE_TRADING}
    update["symbols"] = tuple(symbols)
    trading: Any = old.trading  # a pydantic model, as Settings is
    merged: S = old.model_copy(update={"trading": trading.model_copy(update=update)})
    return merged


def _symbol_changes(old: SymbolConfig, new: SymbolConfig) -> tuple[FieldChange, ...]:
    """The settings of one symbol that differ, by their YAML keys (every one of them is a
    grid parameter - ``SymbolSettings.grid_params`` - or a risk limit, by its dotted key)."""
    before, after = _flat(old.model_dump()), _flat(new.model_dump())
    return tuple(
        FieldChange(key, _text(before.get(key)), _text(after[key]))
        for key in after
        if key != "symbol" and before.get(key) != after[key]
    )


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings (``risk``) by dotted key: ``risk.stop_loss_price``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _paths(old: Any, new: Any, prefix: str) -> list[str]:
    """The dotted paths of the leaves that differ between two dumps."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            if key not in old or key not in new:
                out.append(f"{prefix}{key}")
            else:
                out += _paths(old[key], new[key], f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _text(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)

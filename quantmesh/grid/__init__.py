"""The grid strategy, pure: no I/O, no ``await``; the daemon and a backtest share it.

- ``state``: the grid's data - its parameters (``GridParams``, ``GridSpec``), its shape,
  per-level state and round trips.
- ``levels``: level maths - where each level sits, rounding to the market's tick and lot.
- ``planner``: (spec, rules, state, price, open orders) -> the orders to cancel and place.
- ``ledger``: per-level accounting of fills, and the round trips (PnL) they close.
- ``ids``: deterministic client order ids, one per (grid, level, side, cycle).
"""

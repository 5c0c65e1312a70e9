"""Pure grid strategy: no I/O, no ``await``.

Level maths (``levels``), the planner, the ledger (PnL), the grid's state and its client
order ids (``ids``): the daemon and a backtest share them.
"""

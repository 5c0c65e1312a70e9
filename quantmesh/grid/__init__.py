"""Pure grid strategy: level maths, the planner, the ledger (PnL), the grid's state and
its client order ids (``ids``); no I/O, no ``await``."""

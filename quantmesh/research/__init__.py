"""Research: stored price history, backtests of the grid on it, and parameter sweeps.

- ``errors``: what goes wrong with a request (bad input, missing data), one line each.
- ``candles``: OHLCV candles as columns, timeframes, gaps (pure).
- ``trades``: public trades (prints) as columns (pure).
- ``history``: candles and trades stored as Parquet, one file per exchange/symbol/timeframe.
- ``download``: fetching candles and trades through ccxt, resumable, rate limits honoured.
- ``path``: the path a price took inside a candle (the explicit fill model).
- ``engine``: one symbol's grid run over candles, in simulated time, through the daemon's
  planner, order book (ledger), client ids and matching engine.
- ``prints``: the same over trade prints, each a price the matching engine sees in order.
- ``summary``: the figures of a run (PnL, drawdown, capital, ...).
- ``setup``: settings (and the data's market rules) -> what a backtest needs per symbol.
- ``report``: the JSON file and the terminal table; ``html``: the offline HTML report;
  ``png``: the equity curve as a PNG.
- ``sweep``: parameter grids, run in parallel processes and ranked.

Nothing here runs an event loop; ``pyarrow`` and ``ccxt`` are imported only by the
modules that read or fetch data.
"""

"""The exchange simulator (a testing tool, never a real venue).

- ``matching``: the matching engine (pure);
- ``feeds``: random walk and CSV price feeds;
- ``store``: the engine's state file;
- ``simulated``: the in-process ``SimulatedExchange``;
- ``markets``: settings -> markets and the exchange;
- ``server/``: the Binance-compatible server that ``quantmesh sim-exchange`` runs.
"""

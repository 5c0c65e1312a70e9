"""Exchanges: the ``Exchange`` protocol and its two families.

- ``base``: the protocol the trader uses, and the exchange clock's measurement;
- ``ccxt/``: any live exchange through ccxt (REST, streams, error mapping, request expiry);
- ``sim/``: the simulator: matching engine, price feeds, the in-process simulated
  exchange, and the Binance-compatible server (``quantmesh sim-exchange``);
- ``fanout``, ``backoff``: what both families use (subscriptions, retry delays).
"""

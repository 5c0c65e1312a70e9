"""The live exchange adapter: the ``Exchange`` protocol over any ccxt.pro exchange.

- ``exchange``: ``CcxtExchange`` - order safety, retries, rate limits;
- ``client``: the ccxt.pro client and the adapter, built from the settings;
- ``streams``: the price and order loops of each symbol;
- ``errors``: ccxt errors -> ``quantmesh.errors``;
- ``convert``: ccxt answers -> domain values;
- ``ids``: client order ids on the wire;
- ``expiry``: request expiry the exchange enforces, and the exchange's clock.
"""

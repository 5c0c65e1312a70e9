"""The live exchange adapter: the ``Exchange`` protocol over any ccxt.pro exchange.

``exchange`` (``CcxtExchange``: order safety, retries, rate limits), ``client`` (built
from the settings), ``streams`` (price and order loops), ``errors`` (ccxt errors ->
``quantmesh.errors``), ``convert`` (ccxt answers -> domain values), ``ids`` (client
order ids on the wire), ``expiry`` (request expiry the exchange enforces, its clock).
"""

"""A Binance-spot-compatible exchange simulator server (a testing tool, never a real venue).

``server`` (REST, WebSockets and the ``/_sim`` endpoints on one port), ``rest``,
``streams``, ``binance`` (the wire format), ``clock`` (the server's skewable clock),
``faults`` (injected latency, errors, rate limits, dropped connections).
"""

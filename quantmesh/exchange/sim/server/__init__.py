"""A Binance-spot-compatible exchange simulator server (a testing tool, never a real venue).

- ``server``: REST, WebSockets and the ``/_sim`` endpoints on one port;
- ``rest``: the REST API and the signed-call checks;
- ``streams``: market streams and the WebSocket API;
- ``binance``: the wire format;
- ``clock``: the server's skewable clock and its expiry check;
- ``faults``: injected latency, errors, rate limits, dropped connections.
"""

"""A Binance-spot-compatible exchange simulator (a testing tool, never a real venue)."""

"""Exchanges: the protocol, the in-process simulated exchange and its parts."""

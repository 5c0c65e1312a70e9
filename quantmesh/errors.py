"""The error hierarchy: one root, one subclass per boundary, structured attributes.

Only ``quantmesh.cli`` turns these into exit codes.
"""

from __future__ import annotations


class QuantMeshError(Exception):
    """Root of every error QuantMesh raises on purpose."""


class ConfigError(QuantMeshError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class StartupError(QuantMeshError):
    """The daemon cannot start (data directory unusable, database unreachable, ...)."""


class ExchangeError(QuantMeshError):
    """An exchange call failed."""


class Disconnected(ExchangeError):
    """The exchange could not be reached; the outcome of the call is unknown."""


class RateLimited(ExchangeError):
    """The exchange asked us to slow down."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class AuthenticationFailed(ExchangeError):
    """Credentials were refused; nothing can be traded."""


class MarketNotFound(ExchangeError):
    """The exchange does not list the symbol."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        super().__init__(f"market {symbol} does not exist on this exchange")


class OrderNotFound(ExchangeError):
    """The exchange knows no order with this client order id."""

    def __init__(self, client_order_id: str) -> None:
        self.client_order_id = client_order_id
        super().__init__(f"order {client_order_id} not found")


class OrderRejected(ExchangeError):
    """The exchange refused the order; retrying the same request will not help."""

    def __init__(self, message: str, reason: str = "rejected") -> None:
        self.reason = reason
        super().__init__(message)


class RequestExpired(OrderRejected):
    """The request's expiry passed before the exchange executed it: it was refused (Binance
    -1021, OKX 50102) or never sent because too little of its lease was left. Certain: the
    order was not placed, or the cancel not done."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="expired")


class InsufficientFunds(OrderRejected):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="insufficient_funds")


class InvalidOrder(OrderRejected):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="invalid_order")


class DuplicateOrder(OrderRejected):
    """An open order with the same client order id exists: it was already placed."""

    def __init__(self, client_order_id: str) -> None:
        self.client_order_id = client_order_id
        super().__init__(f"duplicate client order id {client_order_id}", reason="duplicate")


class LockError(QuantMeshError):
    """The lock backend failed."""


class LockUnavailable(LockError):
    """The lock backend cannot be reached; no lease can be granted."""


class LockLost(LockError):
    """A lease expired or was taken over before the work finished."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"lock {key} lost")


class InstanceIdInUse(QuantMeshError):
    """Another live instance of the fleet runs with this instance's id."""


class StorageError(QuantMeshError):
    """A repository call failed for a reason other than connectivity."""


class StorageUnavailable(StorageError):
    """The database cannot be reached."""


class LockTimeout(LockError):
    """``lock(key, ttl, timeout)`` found the key held by another holder until the timeout."""

    def __init__(self, key: str, timeout: float) -> None:
        self.key = key
        self.timeout = timeout
        super().__init__(f"lock {key} still held elsewhere after {timeout:g} s")


class StorageRejected(StorageError):
    """The database refused the data itself (constraint, type, length): retrying the same
    write will never succeed. The write buffer dead-letters these."""

"""Building the ccxt.pro client and the ``CcxtExchange`` from the ``exchange`` settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quantmesh.config.schema import ExchangeSettings
from quantmesh.errors import AuthenticationFailed, StartupError
from quantmesh.exchange.ccxt.exchange import CcxtExchange, CcxtSettings
from quantmesh.exchange.ccxt.streams import StreamSettings


def create_client(
    exchange_id: str,
    *,
    api_key: str = "",
    secret: str = "",
    password: str = "",
    sandbox: bool = False,
    urls: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
    rate_limit: float | None = None,
) -> Any:
    """A ccxt.pro client; ``urls`` and ``options`` are deep-merged into ccxt's own."""
    import ccxt.pro

    cls = getattr(ccxt.pro, exchange_id, None)
    if cls is None:
        raise StartupError(
            f"exchange.name: ccxt has no WebSocket (ccxt.pro) class for {exchange_id!r}"
        )
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": int(timeout * 1000),
        "options": dict(options or {}),
    }
    if rate_limit is not None:
        config["rateLimit"] = rate_limit * 1000  # ccxt counts milliseconds
    if urls:
        config["urls"] = dict(urls)
    for key, value in (("apiKey", api_key), ("secret", secret), ("password", password)):
        if value:
            config[key] = value
    client = cls(config)
    if sandbox:
        client.set_sandbox_mode(True)
        if urls:  # the sandbox swapped the urls for the testnet's: the override wins
            client.urls = client.deep_extend(client.urls, dict(urls))
    return client


def stream_settings(settings: ExchangeSettings) -> StreamSettings:
    """The stream-or-poll timings of the ``exchange`` settings."""
    return StreamSettings(
        streams=settings.streams,
        price_stale_after=settings.price_stale_after,
        price_poll_interval=settings.price_poll_interval,
        order_poll_interval=settings.order_poll_interval,
        order_resync_interval=settings.order_resync_interval,
        stream_failures_before_polling=settings.stream_failures_before_polling,
        stream_retry_after=settings.stream_retry_after,
        reconnect_max_delay=settings.reconnect_max_delay,
    )


def build_ccxt_exchange(settings: ExchangeSettings) -> CcxtExchange:
    """A ``CcxtExchange`` from the ``exchange`` section of the settings.

    Missing credentials are refused here, before anything is created or connected.
    """
    if settings.verify_credentials and not (
        settings.api_key.get_secret_value() and settings.secret.get_secret_value()
    ):
        raise AuthenticationFailed(
            f"exchange.name is {settings.name!r}, which needs exchange.api_key and "
            "exchange.secret: set them (e.g. api_key: ${BINANCE_API_KEY}) or use 'simulated'"
        )
    client = create_client(
        settings.name,
        api_key=settings.api_key.get_secret_value(),
        secret=settings.secret.get_secret_value(),
        password=settings.password.get_secret_value(),
        sandbox=settings.sandbox,
        urls=settings.urls,
        options=settings.options,
        timeout=settings.request_timeout,
        rate_limit=settings.rate_limit,
    )
    return CcxtExchange(
        client,
        CcxtSettings(
            stream=stream_settings(settings),
            verify_credentials=settings.verify_credentials,
            client_order_id_param=settings.client_order_id_param,
            client_order_id_style=settings.client_order_id_style,
        ),
    )

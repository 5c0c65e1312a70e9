"""``quantmesh sim-exchange``: the Binance-spot-compatible simulator as a command.

A testing tool: it trades nothing real. It runs until SIGTERM or SIGINT.

- Markets, balances and the fee come from a YAML file shaped like the
  ``exchange.simulated`` section of the daemon's config (read as the daemon reads its
  own: a duplicate key is refused, ``${VAR}`` is expanded), from flags, or both (flags
  win).
- Faults are flags, and can be changed at run time through ``POST /_sim/faults``.
- The server clock's skew (``--clock-skew``, env ``QM_SIM_CLOCK_SKEW``, or ``clock_skew``
  in the file; flag, then variable, then file) moves what the simulator calls "now" -
  ``/api/v3/time`` and every request expiry check - and can be changed at run time
  through ``POST /_sim/clock``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantmesh.cli.exit_codes import EXIT_FAILURE, EXIT_OK, print_error
from quantmesh.errors import ConfigError

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers

DEFAULT_PORT = 8765
DEFAULT_MARKET = "ETH/USDT=2000"


def register(subparsers: Subparsers) -> None:
    add_arguments(
        subparsers.add_parser("sim-exchange", help="run the exchange simulator (testing)")
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``sim-exchange`` on ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help="0: any free port")
    parser.add_argument(
        "-c", "--config", type=Path, help="YAML: markets, balances, fee_rate, state_path"
    )
    parser.add_argument(
        "--market",
        action="append",
        default=[],
        metavar="SYMBOL=PRICE",
        help=f"a market and its start price (repeatable; default {DEFAULT_MARKET})",
    )
    parser.add_argument(
        "--balance", action="append", default=[], metavar="ASSET=AMOUNT", help="repeatable"
    )
    parser.add_argument("--fee-rate", help="fee per fill, e.g. 0.001")
    parser.add_argument("--state", type=Path, help="state file (default: in memory)")
    parser.add_argument("--volatility", type=float, help="random walk step stdev")
    parser.add_argument("--tick-interval", type=float, help="seconds between prices")
    parser.add_argument("--seed", type=int, help="seed of the price walks and of the faults")
    parser.add_argument(
        "--clock-skew",
        type=_seconds,
        metavar="SECONDS",
        help="the server clock runs this far ahead of the wall clock (negative: behind); "
        "/api/v3/time and every request expiry check use it (env QM_SIM_CLOCK_SKEW, "
        "or clock_skew in the config file; default 0)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("QM_SIM_API_KEY", "sim-key"),
        help="accepted API key (env QM_SIM_API_KEY)",
    )
    parser.add_argument(
        "--api-secret",
        default=os.environ.get("QM_SIM_API_SECRET", "sim-secret"),
        help="its secret (env QM_SIM_API_SECRET)",
    )
    parser.add_argument(
        "--extra-key",
        action="append",
        default=[],
        type=_key_pair,
        metavar="KEY:SECRET",
        help="one more accepted API key and its secret (repeatable; env QM_SIM_EXTRA_KEYS, "
        "comma-separated KEY:SECRET pairs); each client is told apart by its key in "
        "GET /_sim/actions",
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument("--latency", type=float, default=0.0, help="seconds per call")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share of calls -> 503")
    faults.add_argument("--rate-limit-rate", type=float, default=0.0, help="share of calls -> 429")
    faults.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of a 429")
    faults.add_argument(
        "--accept-timeout-rate",
        type=float,
        default=0.0,
        help="share of new orders accepted whose answer never comes",
    )
    faults.add_argument("--hang", type=float, default=30.0, help="how long that answer hangs")
    faults.add_argument(
        "--ws-drop-after", type=float, default=0.0, help="close WebSockets after N s"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])


def _port(value: str) -> int:
    """argparse type: a TCP port number, 0 for any free one."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def _seconds(value: str) -> float:
    """argparse type: a finite number of seconds, negative allowed."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number of seconds")
    return seconds


def _key_pair(value: str) -> tuple[str, str]:
    """argparse type: ``KEY:SECRET`` (the key has no colon; the secret may)."""
    key, sep, secret = value.partition(":")
    if not sep or not key or not secret or key != key.strip() or "," in key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY:SECRET")
    return key, secret


def api_keys(args: argparse.Namespace) -> dict[str, str]:
    """Every accepted API key and its secret: ``--api-key``, ``QM_SIM_EXTRA_KEYS``, then
    each ``--extra-key``; ``ConfigError`` for a malformed variable or a key given twice."""
    pairs: list[tuple[str, str]] = [(args.api_key, args.api_secret)]
    env = os.environ.get("QM_SIM_EXTRA_KEYS", "").strip()
    for item in env.split(",") if env else []:
        try:
            pairs.append(_key_pair(item.strip()))
        except argparse.ArgumentTypeError as exc:
            raise ConfigError([f"QM_SIM_EXTRA_KEYS: {exc}"]) from None
    pairs.extend(args.extra_key)
    keys: dict[str, str] = {}
    for key, secret in pairs:
        if key in keys:
            raise ConfigError([f"API key {key!r} is given twice"])
        keys[key] = secret
    return keys


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, number = value.partition("=")
        if not sep or not key.strip() or not number.strip():
            raise ConfigError([f"{flag} {value!r}: expected NAME=NUMBER"])
        out[key.strip()] = number.strip()
    return out


def _config_file(args: argparse.Namespace) -> dict[str, Any]:
    """The mapping in ``--config`` (empty without one), read as the daemon reads its
    settings: duplicate keys refused, ``${VAR}`` expanded; ``ConfigError`` if unusable."""
    if args.config is None:
        return {}
    from quantmesh.config.source import load_mapping, read_config_file  # not for --version

    text = read_config_file(args.config)
    return load_mapping(text, os.environ, str(args.config)) or {}


def clock_skew(args: argparse.Namespace) -> float:
    """The server clock's skew in seconds: ``--clock-skew``, else ``QM_SIM_CLOCK_SKEW``,
    else ``clock_skew`` in the config file, else 0; ``ConfigError`` if not a number."""
    if args.clock_skew is not None:
        return float(args.clock_skew)
    for where, value in (
        ("QM_SIM_CLOCK_SKEW", os.environ.get("QM_SIM_CLOCK_SKEW", "").strip() or None),
        (f"{args.config}: clock_skew", _config_file(args).get("clock_skew")),
    ):
        if value is None:
            continue
        try:
            if isinstance(value, bool):
                raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds")
            return _seconds(str(value))
        except argparse.ArgumentTypeError as exc:
            raise ConfigError([f"{where}: {exc}"]) from None
    return 0.0


def sim_settings(args: argparse.Namespace) -> Any:
    """The ``SimulatedExchangeSettings`` of the file and flags; ``ConfigError`` if invalid."""
    from pydantic import ValidationError

    from quantmesh.config.schema import SimulatedExchangeSettings

    data = _config_file(args)
    data.pop("clock_skew", None)  # the server's, not the exchange's: see clock_skew()
    markets = dict(data.get("markets") or {})
    for symbol, price in _pairs(args.market, "--market").items():
        markets[symbol] = {**(markets.get(symbol) or {}), "price": price}
    if not markets:
        symbol, _, price = DEFAULT_MARKET.partition("=")
        markets[symbol] = {"price": price}
    for market in markets.values():
        feed = market.setdefault("feed", {})
        if args.volatility is not None:
            feed["volatility"] = args.volatility
        if args.tick_interval is not None:
            feed["interval"] = args.tick_interval
        if args.seed is not None:
            feed.setdefault("seed", args.seed)
    data["markets"] = markets
    if args.balance:
        data["balances"] = {**(data.get("balances") or {}), **_pairs(args.balance, "--balance")}
    if args.fee_rate is not None:
        data["fee_rate"] = args.fee_rate
    try:
        return SimulatedExchangeSettings.model_validate(data)
    except ValidationError as exc:
        from quantmesh.config.problems import validation_problems

        raise ConfigError(validation_problems(exc, SimulatedExchangeSettings)) from exc


async def _serve(args: argparse.Namespace, keys: dict[str, str]) -> None:
    from quantmesh.exchange.sim.markets import build_simulated
    from quantmesh.exchange.sim.server.faults import Faults
    from quantmesh.exchange.sim.server.server import SimServer

    settings = sim_settings(args)
    skew = clock_skew(args)
    try:
        faults = Faults(
            latency=args.latency,
            error_rate=args.error_rate,
            rate_limit_rate=args.rate_limit_rate,
            retry_after=args.retry_after,
            accept_timeout_rate=args.accept_timeout_rate,
            hang=args.hang,
            ws_drop_after=args.ws_drop_after,
        )
    except ValueError as exc:
        raise ConfigError([str(exc)]) from exc
    exchange = build_simulated(settings, args.state)
    server = SimServer(exchange, keys, faults, seed=args.seed, clock_skew=skew)
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    port = await server.start(args.host, args.port)
    try:
        print(f"sim-exchange listening on http://{args.host}:{port}", flush=True)
        await stop.wait()
    finally:
        await server.close()


def run(args: argparse.Namespace) -> int:
    import asyncio  # here: the parser of every command loads this module

    from quantmesh.observability.logging import configure_logging

    keys = api_keys(args)
    configure_logging(args.log_level, "auto", list(keys.values()))
    try:
        asyncio.run(_serve(args, keys))
    except OSError as exc:  # the port is taken, the state file is unusable
        print_error(f"sim-exchange cannot start: {exc}")
        return EXIT_FAILURE
    return EXIT_OK

"""Running the service as a process runs it: the first SIGTERM or SIGINT stops it
gracefully (in-flight calls finish, the traders stop, as ``Service.run`` says), a second
one forces the exit; SIGHUP reloads the settings file."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import structlog

from quantmesh.app import RunResult, Service

log = structlog.get_logger(__name__)

# The same signal again within this many seconds is the same stop request: some
# supervisors deliver it twice (GNU timeout signals the process and its group).
REPEAT_WINDOW = 0.5


async def serve(service: Service) -> RunResult:
    """Run ``service`` with signal handling: first SIGTERM/SIGINT graceful, second forced;
    SIGHUP reloads the settings file."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    signals = 0
    first: tuple[int, float] | None = None

    def on_signal(signum: int) -> None:
        nonlocal signals, first
        if first is not None and first[0] == signum and loop.time() - first[1] < REPEAT_WINDOW:
            log.debug("signal_repeated", signal=signal.Signals(signum).name)
            return
        signals += 1
        if signals == 1:
            first = (signum, loop.time())
            log.info("signal_received", signal=signal.Signals(signum).name)
            stop.set()
        elif main is not None:
            log.warning("forced_exit", signal=signal.Signals(signum).name)
            main.cancel()

    def on_reload() -> None:
        log.info("signal_received", signal="SIGHUP")
        if not stop.is_set():
            service.request_reload()

    installed = []
    handlers: list[tuple[signal.Signals, Callable[..., None], tuple[object, ...]]] = [
        (signal.SIGINT, on_signal, (signal.SIGINT,)),
        (signal.SIGTERM, on_signal, (signal.SIGTERM,)),
        (signal.SIGHUP, on_reload, ()),
    ]
    for signum, handler, args in handlers:
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signum, handler, *args)
            installed.append(signum)
    try:
        return await service.run(stop)
    except asyncio.CancelledError:
        if signals < 2 or main is None:
            raise
        main.uncancel()
        return RunResult(fatal="stopped by a second signal before shutdown finished")
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if signal.SIGHUP in installed:  # its default would end the process from here on
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGHUP, signal.SIG_IGN)

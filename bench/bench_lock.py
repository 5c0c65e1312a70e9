"""Lock costs: NopLock overhead, and RedisLock against redis-py's Lock and the raw floor.

The trader pays one ``try_lock`` and one ``unlock`` around every order it places or
cancels; with the single-instance ``NopLock`` that must cost next to nothing beyond the
two awaits themselves. Rounds of the lock loop and the baseline loop alternate and the
fastest round of each is kept, so a burst of noise hits neither side alone.

``measure_redis_lock`` starts its own ``redis-server`` and runs try_lock+unlock cycles at
a given concurrency (each worker its own level key of one symbol, so every cycle is
granted) through three implementations on the same client and server, round-robin:
``RedisLock``; redis-py's ``redis.asyncio.lock.Lock`` (``SET NX PX`` + its Lua release,
one Lock object reused per worker); and the raw floor, the same two EVALSHA commands
``RedisLock`` sends, with nothing around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from bench.stats import percentile
from quantmesh.config.schema import RedisSettings
from quantmesh.lock.base import Lease
from quantmesh.lock.connection import redis_client
from quantmesh.lock.nop import NopLock
from quantmesh.lock.redis import ACQUIRE, RELEASE, RedisClient, RedisLock

__all__ = ["measure_nop_lock", "measure_redis_lock", "redis_server_binary"]

_KEY = "order:simulated:ETHUSDT:3"
_TTL = 5.0
_LEASE = Lease(_KEY, "nop", 1, math.inf)


async def _noop_lock(key: str, ttl: float) -> Lease | None:
    return _LEASE


async def _noop_unlock(lease: Lease) -> bool:
    return True


async def _lock_round(lock: NopLock, cycles: int) -> float:
    start = time.perf_counter()
    for _ in range(cycles):
        lease = await lock.try_lock(_KEY, _TTL)
        if lease is not None:
            await lock.unlock(lease)
    return time.perf_counter() - start


async def _baseline_round(cycles: int) -> float:
    start = time.perf_counter()
    for _ in range(cycles):
        lease = await _noop_lock(_KEY, _TTL)
        if lease is not None:
            await _noop_unlock(lease)
    return time.perf_counter() - start


async def _measure(cycles: int, rounds: int) -> tuple[float, float]:
    lock = NopLock()
    await _lock_round(lock, min(cycles, 1000))  # warm up
    await _baseline_round(min(cycles, 1000))
    best_lock = best_base = math.inf
    for _ in range(rounds):
        best_lock = min(best_lock, await _lock_round(lock, cycles))
        best_base = min(best_base, await _baseline_round(cycles))
    return best_lock, best_base


def measure_nop_lock(cycles: int = 200_000, rounds: int = 5) -> dict[str, float]:
    """Microseconds per try_lock+unlock cycle, per baseline cycle, and their difference."""
    if cycles < 1 or rounds < 1:
        raise ValueError("cycles and rounds must be at least 1")
    lock_s, base_s = asyncio.run(_measure(cycles, rounds))
    lock_us = lock_s / cycles * 1e6
    base_us = base_s / cycles * 1e6
    return {
        "lock_us_per_cycle": lock_us,
        "baseline_us_per_cycle": base_us,
        "overhead_us_per_cycle": lock_us - base_us,
    }


Cycle = Callable[[int], Awaitable[None]]  # one try_lock+unlock by worker n
_TAG = "{order:bench:ETHUSDT}"


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(p).exists()),
        None,
    )


@contextlib.contextmanager
def _redis_server() -> Iterator[int]:
    """A throwaway redis-server on a free loopback port, without persistence."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="qm-bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", workdir, "--logfile", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield port
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _cycles(client: Redis, concurrency: int) -> dict[str, Cycle]:
    ours = RedisLock(client)
    keys = [f"{_TAG}:{n}" for n in range(concurrency)]
    names = [ours.prefix + key for key in keys]
    fence = f"{ours.prefix}{_TAG}:fence"
    theirs = [Lock(client, name, timeout=_TTL, blocking=False) for name in names]
    ttl_ms = int(_TTL * 1000)

    async def redis_lock(n: int) -> None:
        lease = await ours.try_lock(keys[n], _TTL)
        assert lease is not None
        await ours.unlock(lease)

    async def redis_py_lock(n: int) -> None:
        assert await theirs[n].acquire()
        await theirs[n].release()

    conn: RedisClient = client  # the same client, typed by what is called on it

    async def raw(n: int) -> None:
        name = names[n]
        await conn.execute_command("EVALSHA", ACQUIRE.sha, 2, name, fence, "t", ttl_ms)
        await conn.execute_command("EVALSHA", RELEASE.sha, 1, name, "t")

    return {"redis_lock": redis_lock, "redis_py_lock": redis_py_lock, "raw": raw}


async def _round(cycle: Cycle, concurrency: int, per_worker: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def worker(n: int) -> None:
        clock = time.perf_counter
        for _ in range(per_worker):
            start = clock()
            await cycle(n)
            latencies.append(clock() - start)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for n in range(concurrency):
            tg.create_task(worker(n))
    return time.perf_counter() - start, latencies


async def _measure_redis(port: int, cycles: int, concurrency: int, rounds: int) -> dict[str, float]:
    settings = RedisSettings(addr=f"127.0.0.1:{port}", pool_size=max(concurrency, 10))
    client = redis_client(settings)
    assert isinstance(client, Redis)
    try:
        impls = _cycles(client, concurrency)
        per_worker = max(cycles // concurrency, 1)
        for cycle in impls.values():  # warm up: connections, scripts loaded
            await _round(cycle, concurrency, min(per_worker, 200))
        best = dict.fromkeys(impls, math.inf)
        samples: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(rounds):
            for name, cycle in impls.items():
                elapsed, latencies = await _round(cycle, concurrency, per_worker)
                best[name] = min(best[name], elapsed)
                samples[name] += latencies
        out: dict[str, float] = {"concurrency": concurrency}
        for name in impls:
            out[f"{name}_cycles_per_s"] = per_worker * concurrency / best[name]
            out[f"{name}_p50_ms"] = percentile(samples[name], 0.5) * 1000
            out[f"{name}_p99_ms"] = percentile(samples[name], 0.99) * 1000
        return out
    finally:
        await client.aclose()


def measure_redis_lock(
    cycles: int = 20_000, concurrency: int = 1, rounds: int = 3
) -> dict[str, float]:
    """Cycles/s and p50/p99 latency (ms) of RedisLock, redis-py's Lock and the raw floor."""
    if cycles < 1 or rounds < 1 or concurrency < 1:
        raise ValueError("cycles, concurrency and rounds must be at least 1")
    with _redis_server() as port:
        return asyncio.run(_measure_redis(port, cycles, concurrency, rounds))


if __name__ == "__main__":
    print(measure_nop_lock())
    for c in (1, 50):
        print(measure_redis_lock(concurrency=c))

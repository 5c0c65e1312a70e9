"""Lock costs: NopLock overhead; RedisLock against redis-py's Lock and the raw floor; EtcdLock
against its raw floor.

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

``measure_etcd_lock`` does the same against its own one-member ``etcd`` (data on disk, as
etcd always runs): ``EtcdLock`` and the raw floor, the same three requests to etcd's JSON
gateway (lease grant, create-if-absent transaction, lease revoke) on an aiohttp session
with the same pool, with nothing around them. Every etcd write is fsynced before it is
answered, so the disk sets most of the time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from bench.stats import percentile
from bench.table import Row, fmt, ratio
from quantmesh.config.schema import RedisSettings
from quantmesh.lock.base import Lease
from quantmesh.lock.connection import redis_client
from quantmesh.lock.etcd import EtcdGateway, EtcdLock
from quantmesh.lock.nop import NopLock
from quantmesh.lock.redis import ACQUIRE, RELEASE, RedisClient, RedisLock

__all__ = [
    "etcd_lock_rows",
    "etcd_server_binary",
    "measure_etcd_lock",
    "measure_nop_lock",
    "measure_redis_lock",
    "redis_server_binary",
]

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


async def _compare(
    impls: dict[str, Cycle], cycles: int, concurrency: int, rounds: int
) -> dict[str, float]:
    """Rounds of every implementation in turn; the best round's rate, every latency."""
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


async def _measure_redis(port: int, cycles: int, concurrency: int, rounds: int) -> dict[str, float]:
    settings = RedisSettings(addr=f"127.0.0.1:{port}", pool_size=max(concurrency, 10))
    client = redis_client(settings)
    assert isinstance(client, Redis)
    try:
        return await _compare(_cycles(client, concurrency), cycles, concurrency, rounds)
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


def etcd_server_binary() -> str | None:
    return shutil.which("etcd") or next(
        (p for p in ("/usr/bin/etcd", "/usr/local/bin/etcd") if Path(p).exists()), None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=0.5) as reply:
            return bool(json.loads(reply.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _etcd_server() -> Iterator[str]:
    """A throwaway one-member etcd on free loopback ports; its client URL."""
    binary = etcd_server_binary()
    if binary is None:
        raise RuntimeError("etcd is not installed")
    url, peer = f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
    workdir = tempfile.mkdtemp(prefix="qm-bench-etcd-")
    proc = subprocess.Popen(
        [binary, "--name", "bench", "--data-dir", f"{workdir}/data",
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"bench={peer}", "--logger", "zap", "--log-outputs", "stderr"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not _etcd_healthy(url):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("etcd did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


_JSON = {"Content-Type": "application/json"}


def _etcd_cycles(
    ours: EtcdLock, url: str, concurrency: int, session: aiohttp.ClientSession
) -> dict[str, Cycle]:
    keys = [f"{_TAG}:{n}" for n in range(concurrency)]
    names = [base64.b64encode((ours.prefix + key).encode()).decode() for key in keys]
    grant_url, txn_url, revoke_url = (url + p for p in ("/v3/lease/grant", "/v3/kv/txn",
                                                        "/v3/lease/revoke"))  # fmt: skip
    grant_body = json.dumps({"TTL": math.ceil(_TTL)}).encode()
    value = base64.b64encode(b"t").decode()

    async def etcd_lock(n: int) -> None:
        lease = await ours.try_lock(keys[n], _TTL)
        assert lease is not None
        await ours.unlock(lease)

    async def post(target: str, body: bytes) -> Any:
        async with session.post(target, data=body, headers=_JSON) as reply:
            return json.loads(await reply.read())

    async def raw(n: int) -> None:
        lease_id = (await post(grant_url, grant_body))["ID"]
        txn = {
            "compare": [{"key": names[n], "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": names[n], "value": value, "lease": lease_id}}],
            "failure": [{"request_range": {"key": names[n]}}],
        }  # fmt: skip
        assert (await post(txn_url, json.dumps(txn).encode())).get("succeeded")
        await post(revoke_url, json.dumps({"ID": lease_id}).encode())

    return {"etcd_lock": etcd_lock, "raw": raw}


async def _measure_etcd(url: str, cycles: int, concurrency: int, rounds: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=max(concurrency, 10))
    ours = EtcdLock(EtcdGateway([url], pool_size=max(concurrency, 10)))
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            impls = _etcd_cycles(ours, url, concurrency, session)
            return await _compare(impls, cycles, concurrency, rounds)
        finally:
            await ours.close()


def measure_etcd_lock(
    cycles: int = 2_000, concurrency: int = 1, rounds: int = 3
) -> dict[str, float]:
    """Cycles/s and p50/p99 latency (ms) of EtcdLock and its raw floor."""
    if cycles < 1 or rounds < 1 or concurrency < 1:
        raise ValueError("cycles, concurrency and rounds must be at least 1")
    with _etcd_server() as url:
        return asyncio.run(_measure_etcd(url, cycles, concurrency, rounds))


ETCD_LOCK_VS_RAW = 0.85  # EtcdLock cycles/s at least this share of the raw requests' floor
ETCD_LOCK_P50_MS = (5.0, 10.0)  # the seed's etcd band for one lock operation


def etcd_lock_rows(r: dict[str, float], concurrency: int) -> list[Row]:
    """The etcd rows of the benchmark table: cycles/s against the raw floor, latencies."""
    ours, floor = r["etcd_lock_cycles_per_s"], r["raw_cycles_per_s"]
    p50 = r["etcd_lock_p50_ms"]
    return [
        Row(
            f"EtcdLock try_lock+unlock, {concurrency} task{'s' if concurrency > 1 else ''}",
            "cycles/s (vs raw gateway floor)",
            fmt(ours),
            fmt(floor),
            ratio(ours, floor),
            f">= {ETCD_LOCK_VS_RAW:g}x",
            ours >= ETCD_LOCK_VS_RAW * floor,
        ),
        Row(
            "",
            "p50/p99 ms: EtcdLock | raw",
            f"{fmt(p50)}/{fmt(r['etcd_lock_p99_ms'])}",
            f"{fmt(r['raw_p50_ms'])}/{fmt(r['raw_p99_ms'])}",
            ratio(p50, r["raw_p50_ms"]),
            f"p50 <= {ETCD_LOCK_P50_MS[1]:g} ms (seed: 5-10)" if concurrency == 1 else "",
            p50 <= ETCD_LOCK_P50_MS[1] if concurrency == 1 else None,
        ),
    ]


def etcd_rows(quick: bool) -> tuple[list[Row], dict[str, object]]:
    """The etcd rows at 1 and 50 tasks, or one line saying why they are skipped."""
    if etcd_server_binary() is None:
        return [Row("EtcdLock try_lock+unlock", "skipped: etcd is not installed", "-")], {}
    rows: list[Row] = []
    raw: dict[str, object] = {}
    for concurrency in (1, 50):
        r = measure_etcd_lock(
            500 if quick else 5_000, concurrency=concurrency, rounds=3 if quick else 5
        )
        raw[f"etcd_lock_c{concurrency}"] = r
        rows += etcd_lock_rows(r, concurrency)
    return rows, raw


if __name__ == "__main__":
    from bench.table import render

    print(measure_nop_lock())
    for c in (1, 50):
        print(measure_redis_lock(concurrency=c))
    print(render(etcd_rows(quick=False)[0]))

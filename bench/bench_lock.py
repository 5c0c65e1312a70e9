"""Lock costs: NopLock overhead; RedisLock against redis-py's Lock and the raw floor; EtcdLock
and SqlLock (PostgreSQL, MariaDB) against their raw floors; the seed's lock table.

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

``measure_sql_lock`` does the same against its own PostgreSQL or MariaDB (``tests/servers``:
no fsync, each commit written to the operating system before it is answered): ``SqlLock``
and the raw floor, the same two statements (acquire, release) on driver connections of
the same engine (the daemon's driver and settings), one per worker, with nothing around
them.

``lock_table`` measures every lock once and prints the seed's table beside ours (``python
-m bench.bench_lock [--quick]``; ``python -m bench`` includes it): many short rounds, each
lock's beside its floor's, the target checked on the median of the rounds' ratios, and
their spread printed - this machine's noise moves whole rounds, a ratio of neighbours less.
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
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import aiohttp
from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from bench.stats import median_spread, percentile
from bench.table import Row, fmt, ratio
from quantmesh.config.lock_servers import RedisSettings
from quantmesh.lock.base import Lease
from quantmesh.lock.connection import redis_client
from quantmesh.lock.etcd import EtcdGateway, EtcdLock
from quantmesh.lock.nop import NopLock
from quantmesh.lock.redis import ACQUIRE, RELEASE, RedisClient, RedisLock
from quantmesh.lock.sql import MY_ACQUIRE, MY_RELEASE, PG_ACQUIRE, PG_RELEASE, SqlLock

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
    """Rounds of every implementation in turn; the best round's rate, every latency, and
    for each pair the median (and spread) of the rate ratios of rounds run side by side."""
    per_worker = max(cycles // concurrency, 1)
    for cycle in impls.values():  # warm up: connections, scripts loaded
        await _round(cycle, concurrency, min(per_worker, 200))
    best = dict.fromkeys(impls, math.inf)
    samples: dict[str, list[float]] = {name: [] for name in impls}
    elapsed_by: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(rounds):
        for name, cycle in impls.items():
            elapsed, latencies = await _round(cycle, concurrency, per_worker)
            best[name] = min(best[name], elapsed)
            samples[name] += latencies
            elapsed_by[name].append(elapsed)
    out: dict[str, float] = {"concurrency": concurrency}
    for name in impls:
        out[f"{name}_cycles_per_s"] = per_worker * concurrency / best[name]
        out[f"{name}_p50_ms"] = percentile(samples[name], 0.5) * 1000
        out[f"{name}_p99_ms"] = percentile(samples[name], 0.99) * 1000
        for other in impls:  # each round against the other's round beside it
            if other != name:
                pairs = zip(elapsed_by[other], elapsed_by[name], strict=True)
                ratios = [theirs / ours for theirs, ours in pairs]
                out[f"{name}_vs_{other}"], out[f"{name}_vs_{other}_spread"] = median_spread(ratios)
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


# --- the database lock ---------------------------------------------------------------------

SqlType = Literal["postgres", "mysql"]
SQL_LOCK_VS_RAW = 0.85  # SqlLock cycles/s at least this share of the raw statements' floor


@contextlib.contextmanager
def _sql_server(db_type: SqlType) -> Iterator[str]:
    """A throwaway PostgreSQL or MariaDB (``tests/servers``: no fsync) with the lock's
    table, each commit written to the operating system before it is answered, as the
    lock tests run it; its SQLAlchemy URL."""
    from tests.lock.backends import create_lock_table
    from tests.servers.mariadb import MariaDBServer
    from tests.servers.postgres import PostgresServer

    server = PostgresServer() if db_type == "postgres" else MariaDBServer()
    try:
        server.start()
        yield create_lock_table(server)
    finally:
        server.close()


def sql_server_available(db_type: SqlType) -> str | None:
    """Why the server cannot be started here, or None."""
    binary = "postgres" if db_type == "postgres" else "mariadbd"
    found = shutil.which(binary) or any(
        Path(p).exists()
        for p in ("/usr/lib/postgresql/15/bin/postgres", "/usr/lib/postgresql/16/bin/postgres",
                  "/usr/sbin/mariadbd", "/usr/sbin/mysqld")
        if binary in p or (binary == "mariadbd" and "mysqld" in p)
    )  # fmt: skip
    return None if found else f"{binary} is not installed"


def _sql_cycles(ours: SqlLock, db_type: SqlType, conns: list[Any]) -> dict[str, Cycle]:
    """``SqlLock`` and the raw floor: the same statements on driver connections of the
    same engine, one per worker (the lock keeps as many), with nothing around them."""
    keys = [f"{_TAG}:{n}" for n in range(len(conns))]
    names = [ours.prefix + key for key in keys]
    ttl_us = int(_TTL * 1_000_000)

    async def sql_lock(n: int) -> None:
        lease = await ours.try_lock(keys[n], _TTL)
        assert lease is not None
        await ours.unlock(lease)

    async def raw_pg(n: int) -> None:
        conn, name = conns[n], names[n]
        assert await conn.fetchval(PG_ACQUIRE, name, "t", ttl_us) is not None
        await conn.execute(PG_RELEASE, name, "t")

    async def raw_my(n: int) -> None:
        name = names[n]
        async with conns[n].cursor() as cur:
            assert await cur.execute(MY_ACQUIRE, (ttl_us, "t", name, "t"))  # the row exists
            await cur.execute(MY_RELEASE, (name, "t"))

    return {"sql_lock": sql_lock, "raw": raw_pg if db_type == "postgres" else raw_my}


async def _measure_sql(
    db_type: SqlType, url: str, cycles: int, concurrency: int, rounds: int
) -> dict[str, float]:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from quantmesh.storage.engine import create_engine_for

    # One engine (the daemon's settings: driver, timeouts, isolation) for the lock's
    # connections and the floor's: the floor is the same client without the lock.
    engine = create_engine_for(db_type, url, pool_size=2 * concurrency, max_overflow=0)
    assert isinstance(engine, AsyncEngine)
    ours = SqlLock(engine, pool_size=concurrency)
    floor = [await engine.raw_connection() for _ in range(concurrency)]
    conns = [proxied.driver_connection for proxied in floor]
    if db_type == "mysql":
        for conn in conns:
            await conn.autocommit(True)  # type: ignore[union-attr]  # aiomysql's
    try:
        # SqlLock first: its warm-up creates every worker's row, which the floor updates
        return await _compare(_sql_cycles(ours, db_type, conns), cycles, concurrency, rounds)
    finally:
        for proxied in floor:
            proxied.invalidate()  # closes the socket at once, outside SQLAlchemy's greenlet
        await ours.close()


def measure_sql_lock(
    db_type: SqlType, cycles: int = 2_000, concurrency: int = 1, rounds: int = 3
) -> dict[str, float]:
    """Cycles/s and p50/p99 latency (ms) of SqlLock and its raw floor on its own server."""
    if cycles < 1 or rounds < 1 or concurrency < 1:
        raise ValueError("cycles, concurrency and rounds must be at least 1")
    with _sql_server(db_type) as url:
        return asyncio.run(_measure_sql(db_type, url, cycles, concurrency, rounds))


def floor_rows(label: str, impl: str, r: dict[str, float], concurrency: int) -> list[Row]:
    """A lock's rows against its raw floor: cycles/s (the best round of each) and the
    median of the rounds' ratios, each round beside the floor's round next to it, with
    their spread (what the target is checked on); p50/p99 latency."""
    ours, floor = r[f"{impl}_cycles_per_s"], r["raw_cycles_per_s"]
    middle = r.get(f"{impl}_vs_raw", ours / floor)
    return [
        Row(
            f"{label} try_lock+unlock, {concurrency} task{'s' if concurrency > 1 else ''}",
            "cycles/s (vs raw floor): median of round ratios",
            fmt(ours),
            fmt(floor),
            f"{fmt(middle)}x ({_pct(r.get(f'{impl}_vs_raw_spread', math.nan))})",
            f">= {SQL_LOCK_VS_RAW:g}x",
            middle >= SQL_LOCK_VS_RAW,
        ),
        Row(
            "",
            f"p50/p99 ms: {label} | raw",
            f"{fmt(r[f'{impl}_p50_ms'])}/{fmt(r[f'{impl}_p99_ms'])}",
            f"{fmt(r['raw_p50_ms'])}/{fmt(r['raw_p99_ms'])}",
            ratio(r[f"{impl}_p50_ms"], r["raw_p50_ms"]),
        ),
    ]


def _pct(spread: float) -> str:
    return "-" if math.isnan(spread) else f"spread {spread * 100:.0f}%"


# --- the seed's table -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeedBand:
    """One row of the seed's lock comparison: latency band (ms) and throughput (ops/s)."""

    name: str
    impl: str  # the key prefix of its figures
    low_ms: float
    high_ms: float
    ops: float  # "N+ ops/s"; inf: unlimited

    def text(self) -> str:
        ops = "unlimited" if math.isinf(self.ops) else f"{self.ops:,.0f}+ ops/s"
        band = f"{self.low_ms:g}-{self.high_ms:g}" if self.high_ms else "0"
        return f"seed: {band} ms, {ops}"


SEED_BANDS: dict[str, SeedBand] = {
    "none": SeedBand("no lock (NopLock)", "nop", 0.0, 0.0, math.inf),
    "redis": SeedBand("Redis (RedisLock)", "redis_lock", 1.0, 3.0, 10_000),
    "etcd": SeedBand("etcd (EtcdLock)", "etcd_lock", 5.0, 10.0, 1_000),
    "postgres": SeedBand("PostgreSQL (SqlLock)", "sql_lock", 10.0, 50.0, 100),
    "mysql": SeedBand("MariaDB (SqlLock)", "sql_lock", 10.0, 50.0, 100),
}


def seed_rows(results: dict[str, dict[str, dict[str, float]]]) -> list[Row]:
    """The seed's table beside ours: per lock, p50/p99 of one try_lock+unlock at 1 task and
    cycles/s at 1 and 50 tasks, each beside its raw floor as a ratio, the seed's band
    beside: its latency against the p50, its throughput (lock operations a second)
    against two operations per cycle at 50 tasks. ``results[backend]["c1" | "c50"]``; a
    backend not measured says so."""
    rows: list[Row] = [Row("The seed's lock table, measured", "", "")]
    for backend, band in SEED_BANDS.items():
        r = results.get(backend)
        if not r:
            rows.append(
                Row(band.name, "not measured (server not installed)", "-", target=band.text())
            )
            continue
        if backend == "none":
            us = r["c1"]["lock_us_per_cycle"]
            rows.append(Row(band.name, "us per cycle (vs 2 empty awaits)", fmt(us),
                            fmt(r["c1"]["baseline_us_per_cycle"]),
                            ratio(us, r["c1"]["baseline_us_per_cycle"]), band.text(),
                            us / 1000 <= 0.01))  # fmt: skip
            continue
        one, fifty = r["c1"], r["c50"]
        p50 = one[f"{band.impl}_p50_ms"]
        rates = [one[f"{band.impl}_cycles_per_s"], fifty[f"{band.impl}_cycles_per_s"]]
        floors = [one["raw_cycles_per_s"], fifty["raw_cycles_per_s"]]
        ratios = [x.get(f"{band.impl}_vs_raw", math.nan) for x in (one, fifty)]
        spreads = [x.get(f"{band.impl}_vs_raw_spread", math.nan) for x in (one, fifty)]
        rows += [
            Row(
                band.name,
                "p50/p99 ms, 1 task | raw floor",
                f"{fmt(p50)}/{fmt(one[f'{band.impl}_p99_ms'])}",
                f"{fmt(one['raw_p50_ms'])}/{fmt(one['raw_p99_ms'])}",
                ratio(p50, one["raw_p50_ms"]),
                f"p50 <= {band.high_ms:g} ms ({band.text()})",
                p50 <= band.high_ms,
            ),
            Row(
                "",
                "cycles/s, 1 | 50 tasks | floor; median round ratio",
                " | ".join(fmt(x) for x in rates),
                " | ".join(fmt(x) for x in floors),
                " | ".join(f"{fmt(x)}x" for x in ratios)
                + f" ({', '.join(_pct(x) for x in spreads)})",
                f">= {SQL_LOCK_VS_RAW:g}x floor",
                all(x >= SQL_LOCK_VS_RAW for x in ratios),
            ),
            Row(
                "",
                "lock ops/s at 50 tasks (try_lock and unlock: 2 per cycle)",
                fmt(2 * rates[1]),
                target=f">= {band.ops:,.0f} ops/s (seed)",
                met=2 * rates[1] >= band.ops,
            ),
        ]
    return rows


def lock_table(quick: bool) -> tuple[list[Row], dict[str, object]]:
    """Every lock measured once (NopLock, Redis, etcd, PostgreSQL, MariaDB, the servers
    started here; one not installed is skipped): the database locks' rows against their
    floor, and the seed's table. The Redis and etcd rows are the callers'
    (``redis_lock_rows``, ``etcd_lock_rows``) from ``results``."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    nop = measure_nop_lock(50_000 if quick else 200_000, rounds=3 if quick else 5)
    results["none"] = {"c1": nop}
    # Many short rounds, each implementation's beside the floor's: this machine's noise
    # (other work on its two cores) moves whole rounds, and a ratio of neighbours less.
    rounds = 4 if quick else 15
    plans: list[tuple[str, Callable[..., dict[str, float]]]] = []
    if redis_server_binary() is not None:
        plans.append(("redis", partial(measure_redis_lock, 1_000 if quick else 5_000,
                                       rounds=rounds)))  # fmt: skip
    if etcd_server_binary() is not None:
        plans.append(("etcd", partial(measure_etcd_lock, 200 if quick else 1_000, rounds=rounds)))
    db_types: tuple[SqlType, ...] = ("postgres", "mysql")
    for db_type in db_types:
        if sql_server_available(db_type) is None:
            plans.append((db_type, partial(measure_sql_lock, db_type, 300 if quick else 2_000,
                                           rounds=rounds)))  # fmt: skip
    for backend, measure in plans:
        print(f"measuring the {backend} lock ...", file=sys.stderr, flush=True)
        results[backend] = {f"c{c}": measure(concurrency=c) for c in (1, 50)}
    rows: list[Row] = []
    for backend, label in (("postgres", "SqlLock on PostgreSQL"), ("mysql", "SqlLock on MariaDB")):
        for c in (1, 50):
            if backend in results:
                rows += floor_rows(label, "sql_lock", results[backend][f"c{c}"], c)
    return rows + seed_rows(results), {"locks": results}


if __name__ == "__main__":
    import argparse

    from bench.table import render

    parser = argparse.ArgumentParser(prog="python -m bench.bench_lock")
    parser.add_argument("--quick", action="store_true", help="short run")
    quick = parser.parse_args().quick
    table, raw = lock_table(quick)
    results: Any = raw["locks"]
    detail: list[Row] = []
    for c in (1, 50):
        if "etcd" in results:
            detail += etcd_lock_rows(results["etcd"][f"c{c}"], c)
        if "redis" in results:
            detail += floor_rows("RedisLock", "redis_lock", results["redis"][f"c{c}"], c)
    print(render(detail + table))

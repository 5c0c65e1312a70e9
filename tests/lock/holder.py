"""A lock holder in its own process, for the SIGSTOP test.

``python holder.py redis PORT KEY TTL``, ``python holder.py etcd URL KEY TTL`` or
``python holder.py postgres|mysql SQLALCHEMY_URL KEY TTL``: takes
KEY, prints ``fence token``, then waits for a line on stdin; after it, tries to extend
and release, and prints what it sees.
"""

from __future__ import annotations

import asyncio
import sys
import time

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from quantmesh.lock.etcd import EtcdGateway, EtcdLock
from quantmesh.lock.redis import RedisLock
from quantmesh.lock.sql import SqlLock


async def main(backend: str, address: str, key: str, ttl: float) -> None:
    locker: RedisLock | EtcdLock | SqlLock
    if backend == "redis":
        locker = RedisLock(Redis(host="127.0.0.1", port=int(address), socket_timeout=1.0))
    elif backend == "etcd":
        locker = EtcdLock(EtcdGateway([address]))
    else:
        locker = SqlLock(create_async_engine(address))  # stdout is for the answers
    lease = await locker.try_lock(key, ttl)
    assert lease is not None
    print(lease.fence, lease.token, flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    expired = time.monotonic() >= lease.deadline
    extended = await locker.extend(lease, ttl)
    released = await locker.unlock(lease)
    print(f"expired={expired} extended={extended is not None} released={released}", flush=True)
    await locker.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))

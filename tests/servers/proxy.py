"""A loopback TCP proxy that cuts, black-holes or delays connections, for partition tests.

It runs its own event loop in a thread, so clients in the test's loop, in other threads
and in subprocesses all go through it alike::

    with TcpProxy("127.0.0.1", server_port) as proxy:
        connect_to(proxy.port)
        proxy.cut()        # every connection reset, new ones refused
        proxy.heal()       # new connections forwarded again
        proxy.blackhole()  # connections accepted and held, nothing forwarded
        proxy.delay = 2.0  # each chunk waits 2 s, both directions
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from concurrent.futures import Future
from typing import Literal, Self

Mode = Literal["forward", "cut", "blackhole"]

_CHUNK = 65536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.delay = 0.0
        self._listen_port = listen_port
        self._mode: Mode = "forward"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def mode(self) -> Mode:
        return self._mode

    def start(self) -> None:
        self._thread.start()
        port = self._call(self._start()).result(10)
        assert port is not None, "the proxy did not start"
        self.port = port

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close()).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones, like a dead link."""
        self._call(self._set_mode("cut")).result(10)

    def blackhole(self) -> None:
        """Hold connections open but forward nothing: a silent partition."""
        self._call(self._set_mode("blackhole")).result(10)

    def heal(self) -> None:
        """Forward new connections again (connections cut before stay closed)."""
        self._call(self._set_mode("forward")).result(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: object) -> Future[int] | Future[None]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._listen_port)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        self._drop_all()
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _set_mode(self, mode: Mode) -> None:
        self._mode = mode
        if mode == "cut":
            self._drop_all()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(Exception):
                sock = transport.get_extra_info("socket")
                if sock is not None:  # RST instead of FIN: the peer sees a broken link
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "cut":
            self._writers.add(writer)
            self._drop_all()
            return
        self._writers.add(writer)
        if self._mode == "blackhole":
            await self._swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        """Read and discard until the client gives up or the proxy cuts the link."""
        with contextlib.suppress(Exception):
            while await reader.read(_CHUNK):
                continue  # discarded

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if self._mode == "blackhole":
                    continue  # swallowed: the link looks alive and answers nothing
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                if self._mode != "forward":
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

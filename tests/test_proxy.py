"""The partition proxy itself: forwards, cuts, black-holes and delays as the fault tests
rely on."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.servers.proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _roundtrip(port: int, payload: bytes = b"ping", timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        return s.recv(4096)


def test_forwards_then_cut_resets_open_connections_and_refuses_new(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        assert _roundtrip(proxy.port) == b"ping"
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        held.sendall(b"a")
        assert held.recv(10) == b"a"
        proxy.cut()
        with pytest.raises(OSError):
            held.sendall(b"b")
            if not held.recv(10):
                raise ConnectionResetError("closed")
        held.close()
        with pytest.raises(OSError):
            _roundtrip(proxy.port)
        proxy.heal()
        assert _roundtrip(proxy.port) == b"ping"


def test_blackhole_holds_the_connection_and_answers_nothing(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        proxy.blackhole()
        with pytest.raises(TimeoutError):
            _roundtrip(proxy.port, timeout=0.3)
        proxy.heal()
        assert _roundtrip(proxy.port) == b"ping"


def test_delay_holds_each_chunk(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        proxy.delay = 0.2
        started = time.monotonic()
        assert _roundtrip(proxy.port) == b"ping"
        assert time.monotonic() - started >= 0.4  # once each way

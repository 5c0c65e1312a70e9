"""etcd over TLS (``etcd.ca_file``, ``cert_file``, ``key_file``), against a real etcd that
requires client certificates (``--client-cert-auth``): a lock taken and released with the
client certificate; without it, or trusting another CA, the lock fails closed with what to
set; files that do not hold what they should refuse the start in one line; settings that
cannot work are refused by ``check-config``."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from quantmesh.cli.main import main
from quantmesh.config import Settings, parse_settings
from quantmesh.coordination.servers import LockServer, lock_server
from quantmesh.errors import ConfigError, LockError, StartupError
from tests.servers.etcd import EtcdServer, request
from tests.servers.tls import TlsFiles, write_key, write_tls_files

pytestmark = pytest.mark.timeout(30)
KEY = "{order:simulated:ETHUSDT}:3"
NAME = base64.b64encode(f"quantmesh:lock:{KEY}".encode()).decode()
SYMBOLS = "trading: {symbols: [{symbol: ETHUSDT, price_interval: 10}]}\n"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_etcd(tls: TlsFiles) -> Iterator[EtcdServer]:
    """One etcd for the module: https only, client certificates required."""
    with EtcdServer(tls=tls) as server:
        yield server


def etcd_text(endpoint: str, **files: object) -> str:
    lines = [f"  endpoints: ['{endpoint}']", "  request_timeout: 2"]
    lines += [f"  {key}: '{path}'" for key, path in files.items()]
    return SYMBOLS + "distributed_lock: {enabled: true, type: etcd}\netcd:\n" + "\n".join(lines)


def etcd_settings(endpoint: str, **files: object) -> Settings:
    return parse_settings(etcd_text(endpoint, **files), env={})


def problems(endpoint: str, **files: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        etcd_settings(endpoint, **files)
    return caught.value.problems


def held(server: EtcdServer) -> bool:
    """Whether ``KEY`` exists on the server (read with the test's own client certificate)."""
    reply = request(server.url, "/v3/kv/range", {"key": NAME}, server.context)
    return bool(reply.get("kvs"))


@pytest.fixture
async def servers() -> AsyncIterator[list[LockServer]]:
    """The lock servers a test made, closed after it."""
    made: list[LockServer] = []
    yield made
    for server in made:
        await server.close()


async def test_a_lock_is_taken_and_released_over_tls_with_the_client_certificate(
    tls_etcd: EtcdServer, tls: TlsFiles, servers: list[LockServer]
) -> None:
    settings = etcd_settings(
        tls_etcd.url, ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.client_key
    )
    server = lock_server(settings)
    servers.append(server)
    lease = await server.lock.try_lock(KEY, 5.0)
    assert lease is not None
    assert held(tls_etcd)
    await server.lock.ping()
    assert await server.lock.unlock(lease)
    assert not held(tls_etcd)


async def test_without_the_client_certificate_the_lock_fails_closed_saying_what_to_set(
    tls_etcd: EtcdServer, tls: TlsFiles, servers: list[LockServer]
) -> None:
    server = lock_server(etcd_settings(tls_etcd.url, ca_file=tls.ca))
    servers.append(server)
    with pytest.raises(LockError) as caught:
        await server.lock.try_lock(KEY, 5.0)
    message = str(caught.value)
    assert message.startswith("etcd lease grant failed: TLS: the member refused the client")
    assert "set etcd.cert_file and etcd.key_file" in message
    assert "\n" not in message
    assert not held(tls_etcd)


async def test_a_member_signed_by_a_ca_not_trusted_fails_closed_naming_ca_file(
    tls_etcd: EtcdServer, tmp_path: Path, servers: list[LockServer]
) -> None:
    other = write_tls_files(tmp_path / "other")  # a CA that did not sign the member
    settings = etcd_settings(
        tls_etcd.url, ca_file=other.ca, cert_file=other.client_cert, key_file=other.client_key
    )
    server = lock_server(settings)
    servers.append(server)
    with pytest.raises(LockError) as caught:
        await server.lock.try_lock(KEY, 5.0)
    message = str(caught.value)
    assert "the member's certificate cannot be verified" in message
    assert "set etcd.ca_file" in message
    assert not held(tls_etcd)


def start_error(settings: Settings) -> str:
    with pytest.raises(StartupError) as caught:
        lock_server(settings)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_tls_files_that_hold_the_wrong_thing_refuse_the_start_in_one_line(
    tls: TlsFiles, tmp_path: Path
) -> None:
    url = "https://127.0.0.1:2379"  # nothing is reached: the start fails first
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert start_error(etcd_settings(url, ca_file=junk)) == (
        f"etcd.ca_file: {junk} holds no PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND): "
        "point it at the CA certificate that signed the etcd members' certificates"
    )
    pair = {"cert_file": tls.client_key, "key_file": tls.client_key}  # the key twice
    assert start_error(etcd_settings(url, ca_file=tls.ca, **pair)).startswith(
        f"etcd.cert_file: {tls.client_key} holds no PEM certificate"
    )
    other = tmp_path / "other-key.pem"
    write_key(other)
    message = start_error(etcd_settings(url, cert_file=tls.client_cert, key_file=other))
    assert message.startswith(
        f"etcd.key_file: {other} is not the PEM private key of etcd.cert_file (KEY_VALUES_MISMATCH)"
    )
    encrypted = tmp_path / "encrypted-key.pem"
    write_key(encrypted, passphrase=b"pass-4711")  # refused, never prompted for
    message = start_error(etcd_settings(url, cert_file=tls.client_cert, key_file=encrypted))
    assert message.startswith(f"etcd.key_file: {encrypted} is encrypted")
    assert "pass-4711" not in message


def test_settings_that_cannot_work_name_their_key(tls: TlsFiles, tmp_path: Path) -> None:
    url = "https://etcd-1:2379"
    assert problems(url, cert_file=tls.client_cert) == [
        "etcd.key_file: required when etcd.cert_file is set"
    ]
    assert problems(url, key_file=tls.client_key) == [
        "etcd.cert_file: required when etcd.key_file is set"
    ]
    plain = (
        "etcd.endpoints: must be https:// URLs: TLS files need https:// endpoints "
        "(etcd.ca_file is set; http://etcd-1:2379 is plain HTTP, and host:port alone "
        "means http)"
    )
    for endpoint in ("etcd-1:2379", "http://etcd-1:2379"):
        assert problems(endpoint, ca_file=tls.ca) == [plain]
    # several problems at once, each on its own line
    assert problems("etcd-1:2379", cert_file=tls.client_cert) == [
        "etcd.key_file: required when etcd.cert_file is set",
        plain.replace("ca_file", "cert_file"),
    ]
    missing = tmp_path / "missing-ca.pem"
    assert problems(url, ca_file=missing) == [f"etcd.ca_file: no file at {missing}"]
    assert problems(url, ca_file=tmp_path) == [f"etcd.ca_file: {tmp_path} is not a file"]
    settings = etcd_settings(url, ca_file=tls.ca)  # https and a CA alone: a valid choice
    assert settings.etcd.ca_file == tls.ca


def test_check_config_refuses_a_missing_tls_file_in_one_line(
    tls: TlsFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "client.pem"
    config = tmp_path / "quantmesh.yaml"
    config.write_text(etcd_text("https://etcd-1:2379", cert_file=missing, key_file=tls.client_key))
    assert main(["check-config", str(config)]) == 2
    assert capsys.readouterr().err == f"etcd.cert_file: no file at {missing}\n"

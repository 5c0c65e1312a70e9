"""Throwaway TLS files for test servers: a CA, a server certificate for 127.0.0.1 and a
client certificate, each signed by the CA, written as PEM with the ``cryptography``
package. Keys are P-256 (quick to make); certificates are valid for a day.

The server certificate is good for client authentication too: etcd's JSON gateway reaches
its own gRPC port with it, and a member started with ``--client-cert-auth`` refuses it
otherwise (every gateway request then fails with HTTP 503)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files of one throwaway CA, and of a server and a client it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client's context: trusts the CA, presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_key(path: Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """A new P-256 key, written to ``path`` as PEM (encrypted with ``passphrase``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    path.write_bytes(pem)
    return key


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    usages: list[x509.ObjectIdentifier],
) -> x509.Certificate:
    """A certificate for ``key``: the CA's own (``issuer`` None), or one for ``usages``
    (server or client authentication) signed by ``issuer``; a server's names 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject) if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if ExtendedKeyUsageOID.SERVER_AUTH in usages:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def write_tls_files(directory: Path) -> TlsFiles:
    """A new CA, a server certificate for 127.0.0.1 (IP SAN) and a client certificate,
    written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    ca_key = write_key(directory / "ca-key.pem")
    ca = _certificate("quantmesh test CA", ca_key, None, ca_key, [])
    _write(files.ca, ca)
    server_key = write_key(files.server_key)
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    server = _certificate("127.0.0.1", server_key, ca, ca_key, both)
    _write(files.server_cert, server)
    client_key = write_key(files.client_key)
    client = _certificate("quantmesh", client_key, ca, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH])
    _write(files.client_cert, client)
    return files

"""``rerund sandbox --tls DIR``: a private CA and a server certificate, as production has.

Real control planes are reached over TLS, often signed by a private CA that a client must be
told to trust (``flyte.init(ca_cert_file_path=...)``). The sandbox makes one: ``DIR/ca.crt``
(the CA a client trusts), ``DIR/server.crt`` and ``DIR/server.key`` (for ``127.0.0.1``,
``::1`` and ``localhost``). Files already present are reused, so a client configured with
the CA keeps trusting a restarted sandbox; a missing or unreadable file makes a fresh set.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from rerund.errors import ConfigError

__all__ = ["TlsFiles", "ensure_tls"]

_VALID_FOR = dt.timedelta(days=825)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA certificate, the server certificate and its private key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def ensure_tls(directory: Path) -> TlsFiles:
    """Return the TLS files in ``directory``, generating all three when any is missing.

    Raises ``ConfigError`` when the directory cannot be written. The private keys are written
    with mode 0600; the CA's private key is not kept (nothing else is ever signed with it).
    """
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    if all(p.is_file() for p in (files.ca_cert, files.server_cert, files.server_key)):
        return files
    try:
        directory.mkdir(parents=True, exist_ok=True)
        ca_pem, cert_pem, key_pem = _generate()
        files.ca_cert.write_bytes(ca_pem)
        files.server_cert.write_bytes(cert_pem)
        fd = os.open(files.server_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem)
        files.server_key.chmod(0o600)
    except OSError as exc:
        raise ConfigError(
            f"sandbox TLS directory {directory} cannot be written: {exc.strerror or exc}; "
            "pass a writable --tls DIR"
        ) from exc
    return files


def _generate() -> tuple[bytes, bytes, bytes]:
    """A fresh CA and a server certificate it signs (PEM): (ca.crt, server.crt, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rerund sandbox CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALID_FOR)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return (
        ca_cert.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )

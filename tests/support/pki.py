"""Throwaway keys and certificates for servers that speak TLS in tests (etcd, PostgreSQL)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def key_and_cert(name: str, *, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
                 addresses: Sequence[str] = (), ca: bool = False
                 ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and its certificate, valid for a day, signed by `issuer` (None: by itself)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)] if name else [])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if addresses:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]), critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())


def pem(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[str, str]:
    """(key, certificate) as PEM text."""
    return (key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode(),
            cert.public_bytes(serialization.Encoding.PEM).decode())


def write_pem(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    """PATH.key and PATH.crt."""
    key_text, cert_text = pem(key, cert)
    path.with_suffix(".key").write_text(key_text)
    path.with_suffix(".crt").write_text(cert_text)


class Authority:
    """A throwaway CA that writes its certificate and the ones it issues into `folder`:
    `NAME.crt` and `NAME.key`, the key readable by its owner only (libpq and PostgreSQL
    refuse a key others may read)."""

    def __init__(self, folder: Path, name: str = "ca") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._key, self._cert = key_and_cert(f"failover test CA {name}", issuer=None, ca=True)
        self.cert_file = self._write(folder / name, self._key, self._cert)[0]

    def _write(self, base: Path, key: ec.EllipticCurvePrivateKey,
               cert: x509.Certificate) -> tuple[Path, Path]:
        write_pem(base, key, cert)
        base.with_suffix(".key").chmod(0o600)
        return base.with_suffix(".crt"), base.with_suffix(".key")

    def issue(self, name: str, *, common_name: str = "", addresses: Sequence[str] = (),
              folder: Path | None = None) -> tuple[Path, Path]:
        """(certificate, key) for `common_name`, valid for `addresses` (IP SANs), written as
        `name.crt` and `name.key` (no dot in `name`) into `folder` (default: the CA's)."""
        key, cert = key_and_cert(common_name, issuer=(self._cert.subject, self._key),
                                 addresses=addresses)
        return self._write((folder or self.folder) / name, key, cert)

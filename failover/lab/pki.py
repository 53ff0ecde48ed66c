"""Throwaway keys and certificates: the lab's CA (`lab up --tls`) and the tests' servers
that speak TLS (etcd, PostgreSQL, the controllers' API).

Needs the `cryptography` package (the `lab` extra): import this module only when TLS is
asked for, so that a lab without it runs without the package.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def key_and_cert(name: str, *, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
                 addresses: Sequence[str] = (), ca: bool = False, days: float = 1.0
                 ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and its certificate, valid for `days`, signed by `issuer` (None: by itself)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)] if name else [])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
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
    """PATH.key (mode 0600 from the start: no moment where others may read it) and PATH.crt."""
    key_text, cert_text = pem(key, cert)
    key_file = path.with_suffix(".key")
    key_file.unlink(missing_ok=True)  # an existing file would keep its mode
    with os.fdopen(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(key_text)
    path.with_suffix(".crt").write_text(cert_text)


class Authority:
    """A throwaway CA that writes its certificate and the ones it issues into `folder`:
    `NAME.crt` and `NAME.key`, the key readable by its owner only (libpq and PostgreSQL
    refuse a key others may read). Its certificates are valid for `days`."""

    def __init__(self, folder: Path, name: str = "ca", *, common_name: str | None = None,
                 days: float = 1.0) -> None:
        self.folder = folder
        self.days = days
        folder.mkdir(parents=True, exist_ok=True)
        self._key, self._cert = key_and_cert(common_name or f"failover test CA {name}",
                                             issuer=None, ca=True, days=days)
        self.cert_file = self._write(folder / name, self._key, self._cert)[0]

    def _write(self, base: Path, key: ec.EllipticCurvePrivateKey,
               cert: x509.Certificate) -> tuple[Path, Path]:
        write_pem(base, key, cert)
        return base.with_suffix(".crt"), base.with_suffix(".key")

    def issue(self, name: str, *, common_name: str = "", addresses: Sequence[str] = (),
              folder: Path | None = None) -> tuple[Path, Path]:
        """(certificate, key) for `common_name`, valid for `addresses` (IP SANs), written as
        `name.crt` and `name.key` (no dot in `name`) into `folder` (default: the CA's)."""
        key, cert = key_and_cert(common_name, issuer=(self._cert.subject, self._key),
                                 addresses=addresses, days=self.days)
        return self._write((folder or self.folder) / name, key, cert)

"""TLS contexts from the files a topology names: for clients that verify a server (the
controllers' API, `http` checks) and for the controller's API server.

Each problem is a UserError naming the file and the field that configured it (`where` is
`<file>: <table>`, the field names are `ca_file`, `cert_file` and `key_file`), so a
controller refuses to start (exit 2) instead of failing every request.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from failover.errors import UserError


def _readable(path: Path, field: str) -> None:
    try:
        path.open("rb").close()
    except OSError as exc:
        raise UserError(f"{field}: cannot read {path}: {exc.strerror}") from None


def _load_chain(context: ssl.SSLContext, cert_file: Path, key_file: Path, where: str) -> None:
    _readable(cert_file, f"{where}.cert_file")
    _readable(key_file, f"{where}.key_file")
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise UserError(f"{where}.cert_file: {cert_file} with key_file {key_file} is not a PEM "
                        f"certificate and its private key: {exc.reason or exc}") from None


def client_context(ca_file: Path | None, cert_file: Path | None = None,
                   key_file: Path | None = None, *, where: str) -> ssl.SSLContext:
    """A context that verifies the server's certificate and host name, against the CAs of
    `ca_file` only when it is set, else the system's store; it presents `cert_file` (with
    `key_file`) to a server that asks for a client certificate."""
    if ca_file is not None:
        _readable(ca_file, f"{where}.ca_file")
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:
        raise UserError(f"{where}.ca_file: {ca_file} holds no PEM CA certificate: "
                        f"{exc.reason or exc}") from None
    if cert_file is not None and key_file is not None:
        _load_chain(context, cert_file, key_file, where)
    return context


_shared: dict[tuple[Path | None, Path | None, Path | None], ssl.SSLContext] = {}


def shared_client_context(ca_file: Path | None, cert_file: Path | None = None,
                          key_file: Path | None = None, *, where: str) -> ssl.SSLContext:
    """`client_context`, one per set of files for the life of the process: a controller runs
    many checks, and each context holds its own copy of the CAs (the system's store is a few
    hundred). `where` names the fields of the first caller, should the files be wrong."""
    files = (ca_file, cert_file, key_file)
    context = _shared.get(files)
    if context is None:
        context = _shared[files] = client_context(*files, where=where)
    return context


def server_context(cert_file: Path, key_file: Path, *, where: str) -> ssl.SSLContext:
    """A server's context: TLS 1.2 or later, `cert_file` and its key, no client certificate
    asked for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, cert_file, key_file, where)
    return context

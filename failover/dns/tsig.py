"""TSIG keys: read from a BIND-style key file or an environment variable, never shown.

A key file is what `tsig-keygen` writes:

    key "failover." {
        algorithm hmac-sha256;
        secret "base64...";
    };
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.tsig
from pydantic import SecretStr

from failover.errors import UserError

# dnspython's names for the algorithms BIND's tsig-keygen offers; MD5 is left
# out on purpose (RFC 8945 deprecates it).
ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}

_KEY_BLOCK = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.DOTALL)
_ALGORITHM = re.compile(r"algorithm\s+\"?([A-Za-z0-9.-]+)\"?\s*;")
_SECRET = re.compile(r'secret\s+"([^"]+)"\s*;')


@dataclass(frozen=True)
class TsigKey:
    name: str  # absolute, e.g. "failover."
    algorithm: str  # one of ALGORITHMS
    secret: SecretStr  # base64, as in the key file

    def dnspython_key(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret.get_secret_value(), ALGORITHMS[self.algorithm])

    def bind_config(self) -> str:
        """The `key` statement for named.conf and for a key file."""
        return (
            f'key "{self.name}" {{\n'
            f"\talgorithm {self.algorithm};\n"
            f'\tsecret "{self.secret.get_secret_value()}";\n'
            "};\n"
        )


def generate_key(name: str, algorithm: str = "hmac-sha256") -> TsigKey:
    """A fresh random key, as `tsig-keygen` would make (32 bytes for SHA-256)."""
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    return TsigKey(name=_absolute(name), algorithm=algorithm, secret=SecretStr(secret))


def _absolute(name: str) -> str:
    return name.lower() if name.endswith(".") else f"{name.lower()}."


def _checked(name: str, algorithm: str, secret: str, *, source: str,
             expected_algorithm: str | None) -> TsigKey:
    algorithm = algorithm.lower()
    if algorithm not in ALGORITHMS:
        raise UserError(
            f"{source}: key {name!r} uses algorithm {algorithm!r}, which is not supported; "
            f"use one of {', '.join(ALGORITHMS)} (e.g. `tsig-keygen -a hmac-sha256 {name}`)"
        )
    if expected_algorithm is not None and algorithm != expected_algorithm.lower():
        raise UserError(
            f"{source}: key {name!r} is {algorithm} but the topology's dns.rfc2136.algorithm "
            f"is {expected_algorithm}; make them the same"
        )
    try:
        base64.b64decode(secret, validate=True)
    except binascii.Error:
        raise UserError(f"{source}: the secret of key {name!r} is not valid base64") from None
    return TsigKey(name=_absolute(name), algorithm=algorithm, secret=SecretStr(secret))


def load_key_file(path: Path, *, key_name: str | None = None,
                  algorithm: str | None = None, field: str = "dns.rfc2136") -> TsigKey:
    """The key named `key_name` (or the only key) in a BIND-style key file; messages name
    the topology's fields under `field`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{field}.key_file: {path} does not exist; create it with "
            "`tsig-keygen -a hmac-sha256 <name> > <file>` or fix the path"
        ) from None
    except OSError as exc:
        raise UserError(f"{field}.key_file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{field}.key_file: {path} is not UTF-8 text (byte {exc.start}); "
                        "expected a key file as tsig-keygen writes it") from None
    blocks = {_absolute(name): body for name, body in _KEY_BLOCK.findall(text)}
    if not blocks:
        raise UserError(f"{path}: no `key \"name\" {{ algorithm ...; secret \"...\"; }};` found")
    if key_name is None:
        if len(blocks) > 1:
            raise UserError(
                f"{path}: holds keys {', '.join(sorted(blocks))}; "
                f"say which one in {field}.key_name"
            )
        name, body = next(iter(blocks.items()))
    else:
        name = _absolute(key_name)
        if name not in blocks:
            raise UserError(
                f"{path}: has no key {key_name!r} (it has {', '.join(sorted(blocks))}); "
                f"fix {field}.key_name"
            )
        body = blocks[name]
    found_algorithm = _ALGORITHM.search(body)
    found_secret = _SECRET.search(body)
    if found_algorithm is None or found_secret is None:
        raise UserError(f"{path}: key {name!r} needs both `algorithm` and `secret`")
    return _checked(name, found_algorithm.group(1), found_secret.group(1), source=str(path),
                    expected_algorithm=algorithm)


def key_from_env(env: str, key_name: str | None, algorithm: str, *,
                 field: str = "dns.rfc2136") -> TsigKey:
    """The key whose base64 secret is in the environment variable `env`; messages name the
    topology's fields under `field`."""
    if not key_name:
        raise UserError(
            f"{field}.key_name: needed with key_secret_env = {env!r} "
            "(the name the server knows the key by)"
        )
    secret = os.environ.get(env)
    if not secret:
        raise UserError(
            f"{field}.key_secret_env: the environment variable {env} is not set or empty; "
            "set it to the base64 secret of the key (as tsig-keygen prints it)"
        )
    return _checked(key_name, algorithm, secret.strip(), source=f"${env}",
                    expected_algorithm=None)

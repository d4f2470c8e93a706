"""NATS's decentralized authentication, written here: nkeys, JWTs and `.creds` files.

A NATS server in operator mode trusts one operator key. The operator's JWT names the accounts'
signers; an account's JWT (signed by the operator) names its signing keys and JetStream limits;
a user's JWT (signed by an account signing key) names its subject permissions. The server checks
each signature and enforces the permissions, so a new user needs no change on the server. The
claim layout is nats-io/jwt v2's (`"alg": "ed25519-nkey"`, `"nats": {"type": ..., "version":
2}`); nkeys come from the `nkeys` package (which nats-py itself uses to sign connect nonces).

Pure: keys and times in, text out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from enum import Enum
from typing import Any

import nkeys

from ponder.api.nats_permissions import SubjectPermissions

NO_LIMIT = -1


class KeyKind(Enum):
    OPERATOR = nkeys.PREFIX_BYTE_OPERATOR
    ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
    USER = nkeys.PREFIX_BYTE_USER


@dataclass(frozen=True)
class NKey:
    """One nkey pair: `seed` (secret, `S...`) and `public` (`O...`, `A...` or `U...`)."""

    seed: str
    public: str

    @staticmethod
    def new(kind: KeyKind) -> NKey:
        seed = nkeys.encode_seed(os.urandom(32), kind.value).decode()
        return NKey.from_seed(seed)

    @staticmethod
    def from_seed(seed: str) -> NKey:
        pair = nkeys.from_seed(seed.encode())
        return NKey(seed=seed, public=pair.public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(self.seed.encode()).sign(data))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_HEADER = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}, separators=(",", ":")).encode())


def encode_jwt(claims: dict[str, Any], signer: NKey) -> str:
    """`claims` signed by `signer`, with `iss` set to it and `jti` the claims' hash (as
    nats-io/jwt computes it: SHA-512/256 of the claims without `jti`, base32 unpadded)."""
    body = {**claims, "iss": signer.public, "jti": ""}
    digest = hashlib.new("sha512_256", json.dumps(body, separators=(",", ":")).encode()).digest()
    body["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = _b64(signer.sign(f"{_HEADER}.{payload}".encode()))
    return f"{_HEADER}.{payload}.{signature}"


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (for reading back what was issued)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def operator_claims(
    operator: NKey, *, name: str, system_account: str, issued_at: int
) -> dict[str, Any]:
    return {
        "iat": issued_at,
        "name": name,
        "sub": operator.public,
        "nats": {"system_account": system_account, "type": "operator", "version": 2},
    }


def account_claims(
    account: NKey,
    *,
    name: str,
    signing_keys: list[str],
    issued_at: int,
    jetstream: bool,
) -> dict[str, Any]:
    limits: dict[str, Any] = {
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "imports": NO_LIMIT,
        "exports": NO_LIMIT,
        "wildcards": True,
        "conn": NO_LIMIT,
        "leaf": NO_LIMIT,
    }
    if jetstream:
        limits |= {
            "mem_storage": NO_LIMIT,
            "disk_storage": NO_LIMIT,
            "streams": NO_LIMIT,
            "consumer": NO_LIMIT,
        }
    return {
        "iat": issued_at,
        "name": name,
        "sub": account.public,
        "nats": {
            "limits": limits,
            "signing_keys": signing_keys,
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        },
    }


def user_claims(
    user_public: str,
    *,
    name: str,
    account: str,
    permissions: SubjectPermissions,
    issued_at: int,
    expires_at: int | None = None,
) -> dict[str, Any]:
    """A user of `account` allowed exactly `permissions` (signed by one of its signing keys,
    hence `issuer_account`), until `expires_at` (Unix seconds, the `exp` claim: the server
    refuses it from then on and closes its connections) or for ever when None."""
    nats: dict[str, Any] = {
        "pub": {"allow": list(permissions.publish)},
        "sub": {"allow": list(permissions.subscribe)},
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "issuer_account": account,
        "type": "user",
        "version": 2,
    }
    if permissions.respond:
        nats["resp"] = {"max": 1, "ttl": 0}
    claims: dict[str, Any] = {"iat": issued_at, "name": name, "sub": user_public, "nats": nats}
    if expires_at is not None:
        claims["exp"] = expires_at
    return claims


def creds_file(user_jwt: str, user_seed: str) -> str:
    """The `.creds` text nats-py's `user_credentials` (and the nats CLI) read."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )

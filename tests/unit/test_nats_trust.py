"""NATS trust, JWTs and per-service permissions (pure): what the operator issues, read back.

The server-side proof (a real nats-server refusing what these lists leave out) is
tests/integration/test_nats_isolation.py.
"""

from __future__ import annotations

import base64
import json

import nacl.exceptions
import nacl.signing
import pytest

from ponder.api.nats_permissions import (
    ADMIN_PERMISSIONS,
    scheduler_permissions,
    worker_permissions,
)
from ponder.api.priority import Priority
from ponder.api.subjects import ServiceSubjects
from ponder.operator.nats_jwt import KeyKind, NKey, decode_claims, encode_jwt
from ponder.operator.nats_trust import SCHEDULER_CREDS, WORKER_CREDS, NatsTrust

NOW = 1_800_000_000
A = ServiceSubjects("team-a", "solver")
B = ServiceSubjects("team-b", "solver")


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` one token, `>` one or more trailing tokens."""
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or (token != "*" and token != given[index]):
            return False
    return len(given) == len(wanted)


def allowed(patterns: tuple[str, ...], subject: str) -> bool:
    return any(subject_matches(pattern, subject) for pattern in patterns)


def user_of(creds: str) -> tuple[str, str]:
    lines = creds.splitlines()
    jwt = lines[lines.index("-----BEGIN NATS USER JWT-----") + 1]
    seed = lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]
    return jwt, seed


def verify(token: str, public: str) -> bool:
    header, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    # A public nkey: base32 of one prefix byte, the 32-byte ed25519 key and a CRC-16.
    key = base64.b32decode(public + "=" * (-len(public) % 8))[1:-2]
    try:
        nacl.signing.VerifyKey(key).verify(f"{header}.{payload}".encode(), raw)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


@pytest.mark.parametrize(
    ("subject", "scheduler", "worker"),
    [
        (A.jobs, True, False),
        (A.jobs_of(Priority.CRITICAL), True, False),
        (A.jobs_of(Priority.SHEDDABLE), True, False),
        (f"{A.jobs}.urgent", False, False),  # a class that does not exist
        (A.cancel, True, False),
        (A.stats, True, False),
        (A.worker_stats, False, True),
        (A.results("scheduler-1"), False, True),
        (A.alive("scheduler-1"), False, True),
        (A.deadletter, False, True),
        (f"$JS.ACK.{A.stream}.workers.1.2.3.4.5.6", False, True),
        (f"$JS.API.CONSUMER.MSG.NEXT.{A.stream}.workers", False, True),
        (f"$JS.API.CONSUMER.MSG.NEXT.{A.stream}.workers-critical", False, True),
        (f"$JS.API.CONSUMER.MSG.NEXT.{A.stream}.workers-sheddable", False, True),
        (f"$JS.ACK.{A.stream}.workers-critical.1.2.3.4.5.6", False, True),
        (f"$JS.ACK.{A.stream}.workers-sheddable.1.2.3.4.5.6", False, True),
        (f"$JS.API.STREAM.INFO.{A.stream}", True, False),
        (f"$JS.API.CONSUMER.LIST.{A.stream}", True, False),
        (f"$JS.API.CONSUMER.LIST.{B.stream}", False, False),
        # Nobody of a service may change streams: an update could add another's subjects.
        (f"$JS.API.STREAM.UPDATE.{A.stream}", False, False),
        (f"$JS.API.STREAM.DELETE.{A.stream}", False, False),
        (f"$JS.API.CONSUMER.CREATE.{A.stream}.workers", False, False),
        # Another service's subjects, and the wildcard of them all.
        (B.jobs, False, False),
        (B.jobs_of(Priority.CRITICAL), False, False),
        (f"$JS.API.CONSUMER.MSG.NEXT.{B.stream}.workers-critical", False, False),
        (B.cancel, False, False),
        (B.stats, False, False),
        (B.worker_stats, False, False),
        (B.results("scheduler-1"), False, False),
        (f"$JS.API.CONSUMER.MSG.NEXT.{B.stream}.workers", False, False),
        (f"$JS.ACK.{B.stream}.workers.1.2.3.4.5.6", False, False),
        ("ponder.>", False, False),
        ("$JS.API.STREAM.NAMES", False, False),
    ],
)
def test_each_role_publishes_only_its_own_service_subjects(
    subject: str, scheduler: bool, worker: bool
) -> None:
    assert allowed(scheduler_permissions(A).publish, subject) is scheduler
    assert allowed(worker_permissions(A).publish, subject) is worker


@pytest.mark.parametrize(
    ("subject", "scheduler", "worker"),
    [
        (A.results("scheduler-1"), True, False),
        (A.alive("scheduler-1"), True, False),
        (A.cancel, False, True),
        (A.max_deliveries_advisory(), False, True),
        (A.max_deliveries_advisory(Priority.CRITICAL), False, True),
        (A.max_deliveries_advisory(Priority.SHEDDABLE), False, True),
        (f"{A.inbox_prefix}.abc123", True, True),
        (B.results("scheduler-1"), False, False),
        (B.cancel, False, False),
        (f"{B.inbox_prefix}.abc123", False, False),
        ("_INBOX.abc123", False, False),
        (B.max_deliveries_advisory(), False, False),
        (B.max_deliveries_advisory(Priority.CRITICAL), False, False),
    ],
)
def test_each_role_reads_only_its_own_service_subjects(
    subject: str, scheduler: bool, worker: bool
) -> None:
    assert allowed(scheduler_permissions(A).subscribe, subject) is scheduler
    assert allowed(worker_permissions(A).subscribe, subject) is worker


def test_only_the_scheduler_answers_requests() -> None:
    assert scheduler_permissions(A).respond and not worker_permissions(A).respond


def test_inbox_prefixes_of_two_services_never_overlap() -> None:
    # Names are DNS labels (no dots), so one service's prefix is never a prefix of another's.
    one, other = ServiceSubjects("a", "b-c"), ServiceSubjects("a-b", "c")
    assert not subject_matches(f"{one.inbox_prefix}.>", f"{other.inbox_prefix}.x")
    assert not subject_matches(f"{other.inbox_prefix}.>", f"{one.inbox_prefix}.x")


def test_a_jwt_is_signed_by_its_issuer_and_says_so() -> None:
    signer, other = NKey.new(KeyKind.ACCOUNT), NKey.new(KeyKind.ACCOUNT)
    token = encode_jwt({"sub": "U", "iat": NOW}, signer)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert decode_claims(token)["iss"] == signer.public
    assert len(decode_claims(token)["jti"]) == 52  # SHA-512/256, base32 without padding
    assert verify(token, signer.public) and not verify(token, other.public)


@pytest.mark.parametrize(
    ("kind", "letter"), [(KeyKind.OPERATOR, "O"), (KeyKind.ACCOUNT, "A"), (KeyKind.USER, "U")]
)
def test_nkeys_carry_their_kind(kind: KeyKind, letter: str) -> None:
    key = NKey.new(kind)
    assert key.public.startswith(letter) and key.seed.startswith("S" + letter)
    assert NKey.from_seed(key.seed) == key


def test_the_trust_chain_is_operator_then_account_then_signing_key() -> None:
    trust = NatsTrust.generate(NOW)
    operator = decode_claims(trust.operator_jwt)
    assert operator["iss"] == operator["sub"] == trust.operator.public
    assert operator["nats"]["system_account"] == trust.system_account.public
    account = decode_claims(trust.account_jwt)
    assert account["iss"] == trust.operator.public and account["sub"] == trust.account.public
    assert verify(trust.account_jwt, trust.operator.public)
    assert account["nats"]["signing_keys"] == [trust.signing.public]
    assert account["nats"]["limits"]["disk_storage"] == -1  # JetStream on
    assert "disk_storage" not in decode_claims(trust.system_account_jwt)["nats"]["limits"]
    config = trust.server_config()
    assert trust.operator_jwt in config and trust.account_jwt in config
    assert "resolver: MEMORY" in config


def test_service_users_are_new_users_of_the_account_with_their_role_permissions() -> None:
    trust = NatsTrust.generate(NOW)
    issued = trust.service_creds(A, NOW)
    assert set(issued) == {SCHEDULER_CREDS, WORKER_CREDS}
    users = set()
    for key, permissions in (
        (SCHEDULER_CREDS, scheduler_permissions(A)),
        (WORKER_CREDS, worker_permissions(A)),
    ):
        token, seed = user_of(issued[key])
        claims = decode_claims(token)
        assert verify(token, trust.signing.public)
        assert claims["iss"] == trust.signing.public
        assert claims["nats"]["issuer_account"] == trust.account.public
        assert claims["sub"] == NKey.from_seed(seed).public
        assert claims["nats"]["pub"]["allow"] == list(permissions.publish)
        assert claims["nats"]["sub"]["allow"] == list(permissions.subscribe)
        assert ("resp" in claims["nats"]) is permissions.respond
        assert claims["name"] == f"team-a/solver {key.removesuffix('.creds')}"
        users.add(claims["sub"])
    users.add(decode_claims(user_of(trust.service_creds(A, NOW)[WORKER_CREDS])[0])["sub"])
    assert len(users) == 3  # a fresh user every time


def test_the_operator_is_allowed_everything() -> None:
    token, _ = user_of(NatsTrust.generate(NOW).admin_creds(NOW))
    assert decode_claims(token)["nats"]["pub"]["allow"] == list(ADMIN_PERMISSIONS.publish) == [">"]


def test_trust_data_round_trips_and_bad_data_is_named() -> None:
    trust = NatsTrust.generate(NOW)
    assert NatsTrust.from_data(trust.to_data()) == trust
    with pytest.raises(ValueError, match="lacks signing_seed"):
        NatsTrust.from_data({k: v for k, v in trust.to_data().items() if k != "signing_seed"})
    with pytest.raises(ValueError, match="not valid"):
        NatsTrust.from_data({**trust.to_data(), "account_seed": "SAnotaseed"})

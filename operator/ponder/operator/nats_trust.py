"""The trust behind Ponder's NATS authentication, and the credentials issued from it.

One operator key, a system account and one `PONDER` account with JetStream. The operator (the
Kubernetes one, `ponder.operator`) holds the account's signing key and issues every
ReasoningService its own users, one per role (`ponder.api.nats_permissions`): nothing about a
new service changes on the NATS server, which checks each user JWT against the account's
signing keys. `server_config()` is the part of nats-server's configuration that trusts it.

Why decentralized JWTs rather than users in the server's configuration: a new service would
need a configuration change and a reload of every NATS server (and a configuration reloader
beside it in Kubernetes), while a JWT signed by a key the server already trusts needs nothing.

Pure: secrets in, text out (`ponder.operator.nats_credentials` keeps them in Secrets).
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.api.nats_permissions import (
    ADMIN_PERMISSIONS,
    SubjectPermissions,
    scheduler_permissions,
    worker_permissions,
)
from ponder.api.subjects import ServiceSubjects
from ponder.operator.nats_jwt import (
    KeyKind,
    NKey,
    account_claims,
    creds_file,
    encode_jwt,
    operator_claims,
    user_claims,
)

ACCOUNT_NAME = "PONDER"
SYSTEM_ACCOUNT_NAME = "SYS"

SCHEDULER_CREDS = "scheduler.creds"
WORKER_CREDS = "worker.creds"
"""Keys of a service's credentials Secret; each pod mounts its own."""

_SEEDS = ("operator_seed", "system_account_seed", "account_seed", "signing_seed")


@dataclass(frozen=True)
class NatsTrust:
    operator: NKey
    system_account: NKey
    account: NKey
    signing: NKey
    issued_at: int

    @staticmethod
    def generate(now: int) -> NatsTrust:
        return NatsTrust(
            operator=NKey.new(KeyKind.OPERATOR),
            system_account=NKey.new(KeyKind.ACCOUNT),
            account=NKey.new(KeyKind.ACCOUNT),
            signing=NKey.new(KeyKind.ACCOUNT),
            issued_at=now,
        )

    def to_data(self) -> dict[str, str]:
        """What the operator keeps (its own Secret): the seeds, and when the JWTs were issued."""
        return {
            "operator_seed": self.operator.seed,
            "system_account_seed": self.system_account.seed,
            "account_seed": self.account.seed,
            "signing_seed": self.signing.seed,
            "issued_at": str(self.issued_at),
        }

    @staticmethod
    def from_data(data: dict[str, str]) -> NatsTrust:
        """Back from `to_data`; raises ValueError naming what is missing or bad."""
        missing = [key for key in (*_SEEDS, "issued_at") if not data.get(key)]
        if missing:
            raise ValueError(f"NATS trust data lacks {', '.join(missing)}")
        try:
            operator, system_account, account, signing = (
                NKey.from_seed(data[key]) for key in _SEEDS
            )
            issued_at = int(data["issued_at"])
        except Exception as error:  # nkeys raises its own error types
            raise ValueError(f"NATS trust data is not valid: {error}") from error
        return NatsTrust(operator, system_account, account, signing, issued_at=issued_at)

    @property
    def operator_jwt(self) -> str:
        return encode_jwt(
            operator_claims(
                self.operator,
                name="ponder",
                system_account=self.system_account.public,
                issued_at=self.issued_at,
            ),
            self.operator,
        )

    @property
    def system_account_jwt(self) -> str:
        claims = account_claims(
            self.system_account,
            name=SYSTEM_ACCOUNT_NAME,
            signing_keys=[],
            issued_at=self.issued_at,
            jetstream=False,
        )
        return encode_jwt(claims, self.operator)

    @property
    def account_jwt(self) -> str:
        claims = account_claims(
            self.account,
            name=ACCOUNT_NAME,
            signing_keys=[self.signing.public],
            issued_at=self.issued_at,
            jetstream=True,
        )
        return encode_jwt(claims, self.operator)

    def server_config(self) -> str:
        """nats-server configuration that trusts this operator (include it in the server's)."""
        return (
            f'operator: "{self.operator_jwt}"\n'
            f"system_account: {self.system_account.public}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f'  {self.system_account.public}: "{self.system_account_jwt}"\n'
            f'  {self.account.public}: "{self.account_jwt}"\n'
            "}\n"
        )

    def issue(
        self,
        name: str,
        permissions: SubjectPermissions,
        now: int,
        lifetime_seconds: int | None = None,
    ) -> str:
        """A new user of the Ponder account allowed exactly `permissions`, as `.creds` text;
        it expires `lifetime_seconds` after `now` (never when None)."""
        user = NKey.new(KeyKind.USER)
        claims = user_claims(
            user.public,
            name=name,
            account=self.account.public,
            permissions=permissions,
            issued_at=now,
            expires_at=None if lifetime_seconds is None else now + lifetime_seconds,
        )
        return creds_file(encode_jwt(claims, self.signing), user.seed)

    def admin_creds(self, now: int) -> str:
        """The operator's own user: every subject (it manages streams and reads all stats)."""
        return self.issue("ponder-operator", ADMIN_PERMISSIONS, now)

    def service_creds(
        self, subjects: ServiceSubjects, now: int, lifetime_seconds: int | None = None
    ) -> dict[str, str]:
        """One user per role of one service, keyed as its credentials Secret keeps them, each
        expiring `lifetime_seconds` after `now` (never when None)."""
        who = f"{subjects.namespace}/{subjects.name}"
        scheduler = scheduler_permissions(subjects)
        worker = worker_permissions(subjects)
        return {
            SCHEDULER_CREDS: self.issue(f"{who} scheduler", scheduler, now, lifetime_seconds),
            WORKER_CREDS: self.issue(f"{who} worker", worker, now, lifetime_seconds),
        }

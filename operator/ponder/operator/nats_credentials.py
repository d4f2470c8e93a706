"""The NATS trust and each service's credentials, kept in Kubernetes Secrets.

With `--nats-trust-secret NAMESPACE/NAME` the operator keeps the trust (`NatsTrust`'s seeds) in
Secret NAME, creating it on first start, and beside it Secret `NAME-server` with the
`trust.conf` the NATS server includes (it holds JWTs only, no seed). Every ReasoningService
gets Secret `<service>-nats` in its namespace, owned by it (deleted with it), with one
`.creds` per role; its scheduler and worker pods mount only their own
(`render._nats_credentials`).

The users expire (`--nats-creds-lifetime-hours`, the JWTs' `exp`), so a deleted service's
credentials end by themselves: the memory resolver cannot revoke a user. The operator keeps
what it last issued for a service in memory and writes it on every pass with an update (a PUT
of the whole Secret: unchanged, the API server stores nothing), which recreates a Secret
deleted by hand and undoes a hand edit; the update answers with what was sent, so the operator
still reads no Secret of a service's namespace. It issues new users when it holds none (first
pass of this process) or when less than a third of their lifetime is left
(`ponder.api.nats_renewal.needs_renewal`); the pods' files follow, and the programs move to
them before the old ones expire (`follow_renewed_credentials`). The Secret's annotations say
when its users were issued and when they expire.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Secret

from ponder.api.nats_renewal import needs_renewal
from ponder.api.subjects import ServiceSubjects
from ponder.operator.nats_trust import NatsTrust
from ponder.operator.render import MANAGED_BY, Owner

logger = logging.getLogger(__name__)

SERVER_CONFIG_KEY = "trust.conf"
NOT_FOUND, CONFLICT = 404, 409

DEFAULT_LIFETIME_HOURS = 24
MIN_LIFETIME_HOURS, MAX_LIFETIME_HOURS = 1, 720
"""Bounds of `--nats-creds-lifetime-hours`: an hour leaves twenty minutes between renewal and
expiry for the kubelet to refresh the files (about a minute) and the programs to move; thirty
days is as long as a deleted service's users may stay valid."""

ISSUED_AT_ANNOTATION = "ponder.dev/nats-credentials-issued-at"
EXPIRES_AT_ANNOTATION = "ponder.dev/nats-credentials-expires-at"


def server_secret_name(trust_secret: str) -> str:
    """The Secret the NATS server mounts: the trust's JWTs, no seeds."""
    return f"{trust_secret}-server"


def service_secret_name(service: str) -> str:
    """The Secret of one service's credentials, in its namespace."""
    return f"{service}-nats"


def parse_secret_ref(text: str) -> tuple[str, str]:
    """`namespace/name` -> (namespace, name); raises ValueError naming the form expected."""
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"{text!r} is not namespace/name")
    return namespace, name


def _decoded(secret: Secret) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/part-of": "ponder"}


async def _create_once(kube: AsyncClient, secret: Secret) -> bool:
    """Create `secret`; False when it exists already (another replica or pass was first)."""
    try:
        await kube.create(secret)
    except ApiError as error:
        if error.status.code == CONFLICT:
            return False
        raise
    return True


async def load_or_create_trust(kube: AsyncClient, namespace: str, name: str) -> NatsTrust:
    """The trust in Secret `namespace/name`, generated and stored there when it is absent; the
    server's Secret is (re)written from it when missing. Raises ValueError for a Secret that
    holds no valid trust (a human must look: replacing it would lock every client out)."""
    try:
        trust = NatsTrust.from_data(_decoded(await kube.get(Secret, name, namespace=namespace)))
    except ApiError as error:
        if error.status.code != NOT_FOUND:
            raise
        trust = NatsTrust.generate(int(time.time()))
        created = await _create_once(
            kube,
            Secret(
                metadata=ObjectMeta(name=name, namespace=namespace, labels=_labels()),
                stringData=trust.to_data(),
            ),
        )
        if created:
            logger.info("Created the NATS trust in Secret %s/%s", namespace, name)
        else:  # another replica created it first: use that one
            secret = await kube.get(Secret, name, namespace=namespace)
            trust = NatsTrust.from_data(_decoded(secret))
    server_name = server_secret_name(name)
    server = Secret(
        metadata=ObjectMeta(name=server_name, namespace=namespace, labels=_labels()),
        stringData={SERVER_CONFIG_KEY: trust.server_config()},
    )
    if await _create_once(kube, server):
        logger.info("Wrote the NATS server's trust to Secret %s/%s", namespace, server_name)
    return trust


@dataclass(frozen=True)
class IssuedCredentials:
    """A service's users as last issued: the Secret's data, and when they were issued and end."""

    data: Mapping[str, str]
    issued_at: int
    expires_at: int

    @staticmethod
    def issue(
        trust: NatsTrust, subjects: ServiceSubjects, now: int, lifetime_seconds: int
    ) -> IssuedCredentials:
        data = trust.service_creds(subjects, now, lifetime_seconds)
        return IssuedCredentials(data, issued_at=now, expires_at=now + lifetime_seconds)

    def annotations(self) -> dict[str, str]:
        """When the users were issued and when they expire, RFC 3339, for humans."""
        return {
            ISSUED_AT_ANNOTATION: _rfc3339(self.issued_at),
            EXPIRES_AT_ANNOTATION: _rfc3339(self.expires_at),
        }


def _rfc3339(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def service_secret(owner: Owner, issued: IssuedCredentials) -> Secret:
    """Secret `<service>-nats` holding `issued`, owned by the service."""
    reference: Mapping[str, Any] = owner.reference
    return Secret(
        metadata=ObjectMeta(
            name=service_secret_name(owner.name),
            namespace=owner.namespace,
            labels=_labels(),
            annotations=issued.annotations(),
            ownerReferences=[OwnerReference(**reference)],
        ),
        stringData=dict(issued.data),
    )


async def keep_service_credentials(
    kube: AsyncClient,
    trust: NatsTrust,
    owner: Owner,
    held: IssuedCredentials | None,
    lifetime_seconds: int,
    now: int,
) -> IssuedCredentials:
    """Secret `<service>-nats` holding `held`, or new users when `held` is None or due for
    renewal; what it holds now. An update, then a create when the Secret is gone (deleted by
    hand, or never made): only `update` and `create` are needed, and neither reads anything
    the operator did not send. Raises the API server's ApiError when both are refused."""
    who = f"{owner.namespace}/{owner.name}"
    if held is None or needs_renewal(held.issued_at, held.expires_at, now):
        subjects = ServiceSubjects(owner.namespace, owner.name)
        renewed = held is not None
        held = IssuedCredentials.issue(trust, subjects, now, lifetime_seconds)
        expires = held.annotations()[EXPIRES_AT_ANNOTATION]
        logger.info(
            "%s NATS credentials for %s (expire at %s)",
            "Renewed" if renewed else "Issued",
            who,
            expires,
        )
    secret = service_secret(owner, held)
    try:
        await kube.replace(secret)
    except ApiError as error:
        if error.status.code != NOT_FOUND:
            raise
        if await _create_once(kube, secret):
            logger.info("Created Secret %s/%s", owner.namespace, service_secret_name(owner.name))
        else:  # created between the two calls (by a replica that lost its lease): ours wins
            await kube.replace(secret)
    return held

"""The NATS trust and each service's credentials, kept in Kubernetes Secrets.

With `--nats-trust-secret NAMESPACE/NAME` the operator keeps the trust (`NatsTrust`'s seeds) in
Secret NAME, creating it on first start, and beside it Secret `NAME-server` with the
`trust.conf` the NATS server includes (it holds JWTs only, no seed). Every ReasoningService
gets Secret `<service>-nats` in its namespace, owned by it (deleted with it), with one
`.creds` per role; its scheduler and worker pods mount only their own
(`render._nats_credentials`). A credentials Secret is created once and then left alone (a new
user per pass would roll the pods for nothing): the operator tries once per process and
service, and may create Secrets there but never read them.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Secret

from ponder.api.subjects import ServiceSubjects
from ponder.operator.nats_trust import NatsTrust
from ponder.operator.render import MANAGED_BY, Owner

logger = logging.getLogger(__name__)

SERVER_CONFIG_KEY = "trust.conf"
NOT_FOUND, CONFLICT = 404, 409


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


async def ensure_service_credentials(kube: AsyncClient, trust: NatsTrust, owner: Owner) -> str:
    """Secret `<service>-nats` with the service's credentials, created unless it exists; its
    name. Only `create` is needed (an existing one answers 409), so the operator needs no right
    to read any Secret in a service's namespace."""
    name = service_secret_name(owner.name)
    reference: Mapping[str, Any] = owner.reference
    issued = trust.service_creds(ServiceSubjects(owner.namespace, owner.name), int(time.time()))
    created = await _create_once(
        kube,
        Secret(
            metadata=ObjectMeta(
                name=name,
                namespace=owner.namespace,
                labels=_labels(),
                ownerReferences=[OwnerReference(**reference)],
            ),
            stringData=issued,
        ),
    )
    if created:
        logger.info("Issued NATS credentials for %s/%s", owner.namespace, owner.name)
    return name

"""Pods of a service whose NATS requires credentials mount only their own role's, and the
program finds it through `--nats-creds`'s variable; without credentials nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

import ponder.scheduler.config as scheduler_config
import ponder.workers.config as workers_config
from ponder.api.settings import NATS_CREDS
from ponder.operator import render
from ponder.operator.nats_credentials import parse_secret_ref, service_secret_name
from ponder.operator.nats_trust import SCHEDULER_CREDS, WORKER_CREDS
from ponder.operator.service_config import service_config_from_spec
from tests.unit.test_render import NATS, OWNER, spec_of

SECRET = service_secret_name(OWNER.name)


def children(credentials: str | None) -> dict[str, dict[str, Any]]:
    spec = spec_of()
    config = service_config_from_spec(OWNER.namespace, OWNER.name, spec, NATS)
    rendered = render.render_children_of_config(OWNER, spec, 2, config, credentials)
    return {f"{child['kind']}/{child['metadata']['name']}": child for child in rendered}


def pod_parts(deployment: dict[str, Any], container: str) -> tuple[Any, Any]:
    pod = deployment["spec"]["template"]["spec"]
    (found,) = (c for c in pod["containers"] if c["name"] == container)
    return pod, found


@pytest.mark.parametrize(
    ("deployment", "container", "key", "options"),
    [
        ("Deployment/math-scheduler", "scheduler", SCHEDULER_CREDS, scheduler_config.OPTIONS),
        ("Deployment/math-workers", "worker", WORKER_CREDS, workers_config.OPTIONS),
    ],
)
def test_each_pod_mounts_only_its_role_credentials(
    deployment: str, container: str, key: str, options: tuple[Any, ...]
) -> None:
    pod, found = pod_parts(children(SECRET)[deployment], container)
    (volume,) = (v for v in pod["volumes"] if v["name"] == "nats-creds")
    assert volume["secret"] == {"secretName": SECRET, "items": [{"key": key, "path": key}]}
    (mount,) = (m for m in found["volumeMounts"] if m["name"] == "nats-creds")
    assert mount["readOnly"] is True
    env = {e["name"]: e.get("value") for e in found["env"]}
    assert env[NATS_CREDS.env] == f"{mount['mountPath']}/{key}"
    assert NATS_CREDS in options  # the program reads that variable


def test_without_credentials_no_pod_mentions_them() -> None:
    for child in children(None).values():
        assert "nats-creds" not in str(child) and NATS_CREDS.env not in str(child)


def test_the_engine_container_never_gets_credentials() -> None:
    _, engine = pod_parts(children(SECRET)["Deployment/math-workers"], "engine")
    assert all(m["name"] != "nats-creds" for m in engine["volumeMounts"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ponder-system/ponder-nats-trust", ("ponder-system", "ponder-nats-trust"))],
)
def test_a_secret_reference_is_namespace_slash_name(text: str, expected: tuple[str, str]) -> None:
    assert parse_secret_ref(text) == expected


@pytest.mark.parametrize("text", ["", "name-only", "/name", "ns/", "a/b/c"])
def test_a_bad_secret_reference_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="is not namespace/name"):
        parse_secret_ref(text)

"""Read and derive kubeconfigs (plain dicts, as yaml.safe_load gives them)."""

from __future__ import annotations

from typing import Any


def current_cluster(config: dict[str, Any]) -> dict[str, Any]:
    """The `cluster` entry (server, certificate authority) of the current context."""
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    return dict(next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"]))


def server_url(config: dict[str, Any]) -> str:
    """The API server URL of the current context."""
    return str(current_cluster(config)["server"])


def with_token(config: dict[str, Any], token: str, user: str) -> dict[str, Any]:
    """A kubeconfig for the same API server that authenticates with a bearer `token` only.

    `user` names the context, e.g. "ponder-operator"; use it to run a client as a ServiceAccount
    (`kubectl create token`) so RBAC applies to it instead of the admin certificate.
    """
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": current_cluster(config)}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "local", "user": user}}],
        "current-context": user,
    }

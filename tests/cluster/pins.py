"""The versions tests/cluster/**/go.mod pin, read from the go.mod files themselves."""

from __future__ import annotations

import re
from pathlib import Path

CLUSTER_DIR = Path(__file__).resolve().parent


def required_version(go_mod: str, module: str) -> str:
    """The version `go_mod` (a go.mod's text) requires of `module`, in a block or a single line."""
    pattern = rf"^(?:require\s+|\s+){re.escape(module)}\s+(v\S+)"
    match = re.search(pattern, go_mod, flags=re.MULTILINE)
    if not match:
        raise LookupError(f"{module} is not required by this go.mod")
    return match.group(1)


def pinned(module: str, wrapper: str = "") -> str:
    """The version of `module` pinned in tests/cluster/<wrapper>/go.mod ('' is tests/cluster)."""
    return required_version((CLUSTER_DIR / wrapper / "go.mod").read_text(), module)


def kubernetes_version() -> str:
    """e.g. 'v1.37.2': what kube-apiserver must report."""
    return pinned("k8s.io/kubernetes")


def helm_version() -> str:
    return pinned("helm.sh/helm/v3", "helm")


def etcd_version() -> str:
    return pinned("go.etcd.io/etcd/server/v3", "etcd")


def kwok_version() -> str:
    return pinned("sigs.k8s.io/kwok", "kwok")

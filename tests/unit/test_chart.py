"""The Helm chart (charts/ponder) lints, renders, refuses bad values and grants least privilege.

Runs the pinned helm that `make tools` builds (tests/cluster/helm/go.mod): `helm lint --strict`
and `helm template`, then asserts on the rendered objects as `kubectl apply` would receive them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from ponder.local.cluster.local_cluster import ToolsMissingError, find_tools_bin_dir
from ponder.operator.__main__ import parse_args as parse_operator_args
from ponder.operator.render import SCHEDULER_PORT, ChildNames

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "ponder"
GENERATED_CRD = REPO_ROOT / "crds" / "ponder.dev_reasoningservices.yaml"
CHART_CRD = CHART / "crds" / GENERATED_CRD.name
EXAMPLE = REPO_ROOT / "examples" / "reasoningservice.yaml"
RELEASE = "ponder"
NAMESPACE = "ponder-system"
EXTERNAL_NATS = "nats://nats.messaging.svc:4222"

Manifest = dict[str, Any]

# Every permission the operator holds, (apiGroup, resource) -> verbs. Changing it is a deliberate
# act: templates/rbac.yaml says why each rule exists.
EXPECTED_CLUSTER_RULES: dict[tuple[str, str], set[str]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
}
EXPECTED_NAMESPACED_RULES: dict[tuple[str, str], set[str]] = {
    ("ponder.dev", "reasoningservices"): {"get", "list", "watch", "patch", "update"},
    ("ponder.dev", "reasoningservices/status"): {"get", "patch", "update"},
    ("ponder.dev", "reasoningservices/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch", "patch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
# With operator.peering.enabled: the peering object, read and patched (keep-alive records).
PEERING_VERBS = {"get", "list", "watch", "patch"}
# Verbs that hand out more power than they name.
ESCALATING_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}


@pytest_asyncio.fixture(scope="session")
async def helm_binary() -> Path:
    """The pinned helm built by `make tools`; a missing build fails with the fix."""
    try:
        return await find_tools_bin_dir() / "helm"
    except ToolsMissingError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keep helm's cache and config out of $HOME."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def run_helm(helm: Path, env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], env=dict(env), capture_output=True, text=True, timeout=60, check=False
    )


def set_flags(values: Mapping[str, str]) -> list[str]:
    return [flag for key, value in values.items() for flag in ("--set", f"{key}={value}")]


def render(helm: Path, env: Mapping[str, str], values: Mapping[str, str]) -> list[Manifest]:
    """`helm template` the chart with `--set` values; the objects it would apply."""
    result = run_helm(
        helm, env, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *set_flags(values)
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


VALUE_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "external-nats": {"nats.enabled": "false", "nats.externalUrl": EXTERNAL_NATS},
    "watch-namespaces": {"operator.watchNamespaces": "{team-a,team-b}"},
    "no-persistence": {"nats.persistence.enabled": "false"},
    "peering": {"replicaCount": "2", "operator.peering.enabled": "true"},
    "peering-namespaces": {
        "operator.peering.enabled": "true",
        "operator.peering.lifetimeSeconds": "20",
        "operator.watchNamespaces": "{team-a,team-b}",
    },
    "nats-auth": {"nats.auth.enabled": "true", "nats.persistence.enabled": "false"},
    "nats-tls": {"nats.tls.enabled": "true"},
    "nats-tls-auth": {
        "nats.tls.enabled": "true",
        "nats.auth.enabled": "true",
        "nats.persistence.enabled": "false",
    },
    "nats-cluster": {"nats.cluster.enabled": "true"},
    "nats-cluster-auth": {"nats.cluster.enabled": "true", "nats.auth.enabled": "true"},
}
PEERING_SETS = ("peering", "peering-namespaces")
NATS_AUTH_SETS = ("nats-auth", "nats-tls-auth", "nats-cluster-auth")


@pytest.fixture(scope="session")
def rendered(helm_binary: Path, helm_env: dict[str, str]) -> dict[str, list[Manifest]]:
    """The chart rendered once per value set of VALUE_SETS."""
    return {name: render(helm_binary, helm_env, values) for name, values in VALUE_SETS.items()}


def objects(manifests: Sequence[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: Sequence[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in objects(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def workloads(manifests: Sequence[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]


def operator_container(manifests: Sequence[Manifest]) -> Manifest:
    deployment = one(manifests, "Deployment", RELEASE)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "operator")


def env_value(container: Manifest, name: str) -> str:
    return next(e["value"] for e in container["env"] if e["name"] == name)


# --- lint and render -----------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_chart_passes_strict_lint(
    helm_binary: Path, helm_env: dict[str, str], value_set: str
) -> None:
    result = run_helm(
        helm_binary, helm_env, "lint", "--strict", str(CHART), *set_flags(VALUE_SETS[value_set])
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_defaults_render_operator_nats_rbac_and_network_policies(
    rendered: dict[str, list[Manifest]],
) -> None:
    kinds = sorted({m["kind"] for m in rendered["defaults"]})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    nats = one(rendered["defaults"], "StatefulSet", f"{RELEASE}-nats")
    container = nats["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("nats:2.")
    assert container["image"].endswith("-alpine")
    assert container["command"] == ["nats-server"]
    assert container["args"][:3] == ["-js", "-sd", "/data"]
    claim = nats["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    service = one(rendered["defaults"], "Service", f"{RELEASE}-nats")
    assert service["spec"]["clusterIP"] == "None"
    assert nats["spec"]["serviceName"] == service["metadata"]["name"]


def test_operator_serves_all_namespaces_against_the_chart_nats(
    rendered: dict[str, list[Manifest]],
) -> None:
    container = operator_container(rendered["defaults"])
    assert container["command"] == ["python", "-m", "ponder.operator"]
    assert "--all-namespaces" in container["args"]
    assert env_value(container, "PONDER_NATS_URL") == f"nats://{RELEASE}-nats.{NAMESPACE}.svc:4222"
    deployment = one(rendered["defaults"], "Deployment", RELEASE)
    # Standalone kopf must never run twice, not even during a rollout.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not [arg for arg in container["args"] if arg.startswith("--peering")]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_operator_command_line_parses_to_the_chart_settings(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    container = operator_container(rendered[value_set])
    environ = {env["name"]: env["value"] for env in container["env"] if "value" in env}
    args = parse_operator_args(container["args"], environ)  # exits on an unknown flag
    assert args.nats_url == environ["PONDER_NATS_URL"]
    assert args.log_level == "info"
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    watched = VALUE_SETS[value_set].get("operator.watchNamespaces", "{}")
    assert args.namespace == [ns for ns in watched.strip("{}").split(",") if ns]
    assert args.all_namespaces is (not args.namespace)
    if value_set in PEERING_SETS:
        assert args.peer is not None
        assert args.peer.name == RELEASE  # the peering object the chart renders
        lifetime = VALUE_SETS[value_set].get("operator.peering.lifetimeSeconds", "10")
        assert args.peer.lifetime_seconds == int(lifetime)
    else:
        assert args.peer is None  # standalone


def test_external_nats_replaces_the_chart_nats(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["external-nats"]
    assert objects(manifests, "StatefulSet") == []
    assert [s["metadata"]["name"] for s in objects(manifests, "Service")] == []
    assert env_value(operator_container(manifests), "PONDER_NATS_URL") == EXTERNAL_NATS
    operator_policy = one(manifests, "NetworkPolicy", f"{RELEASE}-operator")
    egress_ports = [p["port"] for rule in operator_policy["spec"]["egress"] for p in rule["ports"]]
    assert 4222 in egress_ports


def test_nats_without_persistence_keeps_jetstream_on_an_empty_dir(
    rendered: dict[str, list[Manifest]],
) -> None:
    nats = one(rendered["no-persistence"], "StatefulSet", f"{RELEASE}-nats")
    assert "volumeClaimTemplates" not in nats["spec"]
    volumes = nats["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "data", "emptyDir": {}}]


def test_image_defaults_to_the_app_version_and_follows_overrides(
    helm_binary: Path, helm_env: dict[str, str]
) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    default = operator_container(render(helm_binary, helm_env, {}))
    assert default["image"] == f"ghcr.io/ponder-dev/ponder:{app_version}"
    custom = operator_container(
        render(
            helm_binary,
            helm_env,
            {"image.repository": "registry.example.com/me/ponder", "image.tag": "dev"},
        )
    )
    assert custom["image"] == "registry.example.com/me/ponder:dev"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_pod_runs_restricted_with_resources(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    for workload in workloads(rendered[value_set]):
        name = f"{workload['kind']} {workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert security["runAsNonRoot"] is True, name
            assert security.get("runAsUser", 1) != 0, name
            assert container["resources"]["requests"]["cpu"], name
            assert container["resources"]["requests"]["memory"], name
            assert container["resources"]["limits"]["memory"], name


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_object_carries_the_recommended_labels(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    for manifest in rendered[value_set]:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ponder", manifest["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "ponder"
        assert labels["helm.sh/chart"].startswith("ponder-")
        assert labels["app.kubernetes.io/version"]
    for workload in workloads(rendered[value_set]):
        selector = workload["spec"]["selector"]["matchLabels"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert selector["app.kubernetes.io/component"] in ("operator", "nats")


def test_network_policies_confine_the_operator_and_admit_only_ponder_clients_to_nats(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["defaults"]
    operator_policy = one(manifests, "NetworkPolicy", f"{RELEASE}-operator")
    assert operator_policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in operator_policy["spec"]  # nothing may connect to the operator
    egress_ports = {p["port"] for rule in operator_policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443, 4222}
    nats_policy = one(manifests, "NetworkPolicy", f"{RELEASE}-nats")
    assert nats_policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "egress" not in nats_policy["spec"]  # a single node opens no connections
    peers = nats_policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}} in peers
    # The scheduler and worker pods the operator renders are labelled part-of=ponder.
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "ponder"}},
    } in peers


def test_peering_renders_two_replicas_rolling_one_cluster_peering_object(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["peering"]
    deployment = one(manifests, "Deployment", RELEASE)
    assert deployment["spec"]["replicas"] == 2
    # A new pod starts as a standby, so rolling one at a time never runs two active operators.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    peering = one(manifests, "ClusterKopfPeering", RELEASE)
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert "namespace" not in peering["metadata"]
    assert objects(manifests, "KopfPeering") == []
    # kopf watches the liveness of its peers, not the kubelet: a standby answers /healthz too.
    probe = operator_container(manifests)["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    # Peers spread over nodes by default, so one node's loss leaves a standby.
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector


def test_one_operator_replica_has_no_default_affinity(rendered: dict[str, list[Manifest]]) -> None:
    deployment = one(rendered["defaults"], "Deployment", RELEASE)
    assert "affinity" not in deployment["spec"]["template"]["spec"]


def test_peering_of_watched_namespaces_renders_a_namespaced_object_in_each(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["peering-namespaces"]
    assert objects(manifests, "ClusterKopfPeering") == []
    peerings = objects(manifests, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("team-a", RELEASE),
        ("team-b", RELEASE),
    ]


def test_peering_crds_ship_with_the_chart_for_both_scopes() -> None:
    crds = list(yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text()))
    scopes = {crd["spec"]["names"]["kind"]: crd["spec"]["scope"] for crd in crds}
    assert scopes == {"ClusterKopfPeering": "Cluster", "KopfPeering": "Namespaced"}
    for crd in crds:
        assert crd["spec"]["group"] == "kopf.dev"  # what kopf >= 1.0 looks for first
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        # kopf writes the records into status with a plain patch: no status subresource.
        assert schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True
        assert "subresources" not in crd["spec"]["versions"][0]


# --- values and their schema ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"replicaCount": "-1"}, "/replicaCount"),
        ({"replicaCount": "2"}, "replicaCount=2 needs operator.peering.enabled=true"),
        ({"operator.peering.lifetimeSeconds": "2"}, "/operator/peering/lifetimeSeconds"),
        ({"operator.peering.enabled": "yes"}, "/operator/peering/enabled"),
        ({"operator.logLevel": "verbose"}, "/operator/logLevel"),
        ({"nats.persistence.size": "lots"}, "/nats/persistence/size"),
        ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
        ({"operator.watchNamespaces": "{Team_A}"}, "/operator/watchNamespaces/0"),
        ({"replicaCont": "1"}, "additional properties 'replicaCont' not allowed"),
        ({"nats.enabled": "false"}, "nats.externalUrl is required when nats.enabled is false"),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_the_value(
    helm_binary: Path, helm_env: dict[str, str], values: dict[str, str], message: str
) -> None:
    result = run_helm(helm_binary, helm_env, "template", RELEASE, str(CHART), *set_flags(values))
    assert result.returncode != 0
    assert message in result.stderr


def values_comments() -> Iterator[tuple[str, bool]]:
    """(dotted key, has a `# --` comment right above it) for every key line of values.yaml."""
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        key = re.match(r"^(\s*)([A-Za-z][\w.-]*):(\s|$)", line)
        if key:
            indent = len(key.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key.group(2)))
            yield ".".join(name for _, name in stack), previous.startswith("#")
        if stripped and not stripped.startswith("- "):
            previous = stripped if stripped.startswith("#") else ""
        if stripped.startswith("# --"):
            previous = stripped


def schema_leaves(schema: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Documented values: a described object (e.g. `resources`) is one value, not its fields."""
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        if "properties" in sub and "description" not in sub:
            yield from schema_leaves(sub, f"{path}.")
        else:
            yield path, sub


def test_every_value_is_camel_case_documented_and_typed_by_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = dict(values_comments())
    for path, sub in schema_leaves(schema):
        if path == "global":
            continue
        assert re.fullmatch(r"[a-z][a-zA-Z0-9]*(\.[a-z][a-zA-Z0-9]*)*", path), path
        assert documented.get(path), f"values.yaml has no `# --` comment above {path}"
        assert sub.get("description") or sub.get("type") == "object" or "$ref" in sub, path
        node: Any = values
        for name in path.split("."):
            node = node[name]  # every schema leaf has a default in values.yaml


def test_values_yaml_satisfies_its_own_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


# --- RBAC ----------------------------------------------------------------------------------------


TRUST_SECRET = f"{RELEASE}-nats-trust"


def test_nats_auth_runs_nats_in_operator_mode_on_the_operator_trust(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["nats-auth"]
    args = operator_container(manifests)["args"]
    assert f"--nats-trust-secret={NAMESPACE}/{TRUST_SECRET}" in args
    assert "--nats-creds-lifetime-hours=24" in args
    nats = one(manifests, "StatefulSet", f"{RELEASE}-nats")["spec"]["template"]["spec"]
    (container,) = nats["containers"]
    assert "--config=/etc/nats-trust/trust.conf" in container["args"]
    trust = next(v for v in nats["volumes"] if v["name"] == "trust")
    assert trust["secret"] == {"secretName": f"{TRUST_SECRET}-server"}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "trust")
    assert mount == {"name": "trust", "mountPath": "/etc/nats-trust", "readOnly": True}
    role = one(manifests, "Role", TRUST_SECRET)
    assert role["metadata"]["namespace"] == NAMESPACE
    namespaced = rules_table(one(manifests, "ClusterRole", RELEASE))
    assert namespaced[("", "secrets")] == {"create", "update"}  # written, never read


def test_without_nats_auth_nothing_mentions_the_trust(
    rendered: dict[str, list[Manifest]],
) -> None:
    assert "nats-trust" not in str(rendered["defaults"])


def rules_table(role: Manifest) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        assert "resourceNames" not in rule or rule["resourceNames"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rbac_has_no_wildcards_no_secrets_and_no_escalating_verbs(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    for role in objects(rendered[value_set], "ClusterRole") + objects(rendered[value_set], "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["apiGroups"], role["metadata"]["name"]
            assert not any("*" in resource for resource in rule["resources"])
            assert not ESCALATING_VERBS & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                # With NATS credentials only: write (never read) anywhere it watches, read one
                # by name, create the trust's two.
                assert value_set in NATS_AUTH_SETS, role["metadata"]["name"]
                assert rule["verbs"] in (["create"], ["create", "update"]) or (
                    rule["verbs"] == ["get"] and rule["resourceNames"] == [TRUST_SECRET]
                )
            assert "leases" not in rule["resources"]  # no leader election
            if value_set not in PEERING_SETS:  # standalone: no peering objects to touch
                assert not {"clusterkopfpeerings", "kopfpeerings"} & set(rule["resources"])


def test_rbac_grants_exactly_what_the_operator_uses_cluster_wide(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["defaults"]
    cluster_role = one(manifests, "ClusterRole", f"{RELEASE}-cluster")
    assert rules_table(cluster_role) == EXPECTED_CLUSTER_RULES
    namespaced_role = one(manifests, "ClusterRole", RELEASE)
    assert rules_table(namespaced_role) == EXPECTED_NAMESPACED_RULES
    bindings = objects(manifests, "ClusterRoleBinding")
    assert sorted(b["roleRef"]["name"] for b in bindings) == [RELEASE, f"{RELEASE}-cluster"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
        ]
    assert objects(manifests, "RoleBinding") == []


def test_watched_namespaces_get_role_bindings_instead_of_cluster_wide_access(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["watch-namespaces"]
    container = operator_container(manifests)
    assert "--all-namespaces" not in container["args"]
    assert {"--namespace=team-a", "--namespace=team-b"} <= set(container["args"])
    cluster_bindings = objects(manifests, "ClusterRoleBinding")
    assert [b["roleRef"]["name"] for b in cluster_bindings] == [f"{RELEASE}-cluster"]
    role_bindings = objects(manifests, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["team-a", "team-b"]
    assert {b["roleRef"]["name"] for b in role_bindings} == {RELEASE}
    # kopf matches --namespace against the namespaces it lists and watches.
    cluster_role = one(manifests, "ClusterRole", f"{RELEASE}-cluster")
    assert rules_table(cluster_role)[("", "namespaces")] == {"list", "watch"}


def test_peering_grants_the_peering_object_in_the_scope_kopf_uses(
    rendered: dict[str, list[Manifest]],
) -> None:
    cluster_wide = rendered["peering"]
    cluster_rules = rules_table(one(cluster_wide, "ClusterRole", f"{RELEASE}-cluster"))
    assert cluster_rules == {
        **EXPECTED_CLUSTER_RULES,
        ("kopf.dev", "clusterkopfpeerings"): PEERING_VERBS,
    }
    assert rules_table(one(cluster_wide, "ClusterRole", RELEASE)) == EXPECTED_NAMESPACED_RULES
    # Watched namespaces: the KopfPeering in each, through the per-namespace RoleBindings.
    scoped = rendered["peering-namespaces"]
    scoped_cluster_rules = rules_table(one(scoped, "ClusterRole", f"{RELEASE}-cluster"))
    assert ("kopf.dev", "clusterkopfpeerings") not in scoped_cluster_rules
    assert rules_table(one(scoped, "ClusterRole", RELEASE)) == {
        **EXPECTED_NAMESPACED_RULES,
        ("kopf.dev", "kopfpeerings"): PEERING_VERBS,
    }
    bound = sorted(b["metadata"]["namespace"] for b in objects(scoped, "RoleBinding"))
    assert bound == sorted(p["metadata"]["namespace"] for p in objects(scoped, "KopfPeering"))


# --- CRD and NOTES -------------------------------------------------------------------------------


def test_chart_crd_is_a_byte_for_byte_copy_of_the_generated_crd() -> None:
    if not GENERATED_CRD.exists():
        pytest.skip(f"{GENERATED_CRD.relative_to(REPO_ROOT)} is not generated yet (make crds)")
    assert CHART_CRD.exists(), f"{CHART_CRD.relative_to(REPO_ROOT)} is missing; run `make crds`"
    assert CHART_CRD.read_bytes() == GENERATED_CRD.read_bytes(), "stale chart CRD; run `make crds`"


def test_notes_query_the_service_and_model_the_sample_creates() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    sample = yaml.safe_load(EXAMPLE.read_text())
    service = ChildNames(sample["metadata"]["name"]).service
    sample_url = (
        "https://raw.githubusercontent.com/ponder-dev/ponder/v{{ .Chart.AppVersion }}/"
        f"{EXAMPLE.relative_to(REPO_ROOT)}"
    )
    assert f"kubectl apply -f {sample_url}" in notes
    assert f"kubectl port-forward svc/{service} {SCHEDULER_PORT}:{SCHEDULER_PORT}" in notes
    assert f'"model": "{sample["spec"]["model"]["servedName"]}"' in notes


# --- NATS cluster --------------------------------------------------------------------------------


def nats_args(manifests: Sequence[Manifest]) -> list[str]:
    statefulset = one(manifests, "StatefulSet", f"{RELEASE}-nats")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


@pytest.mark.parametrize("value_set", ["nats-cluster", "nats-cluster-auth"])
def test_nats_cluster_runs_three_routed_pods_on_their_own_volumes_with_r3_streams(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    manifests = rendered[value_set]
    nats = f"{RELEASE}-nats"
    statefulset = one(manifests, "StatefulSet", nats)["spec"]
    assert statefulset["replicas"] == 3
    assert statefulset["podManagementPolicy"] == "Parallel"
    assert statefulset["serviceName"] == nats
    (claim,) = statefulset["volumeClaimTemplates"]  # JetStream's file store, one per pod
    assert claim["metadata"]["name"] == "data"
    service = one(manifests, "Service", nats)["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert {"name": "cluster", "port": 6222, "targetPort": "cluster", "protocol": "TCP"} in (
        service["ports"]
    )
    args = nats_args(manifests)
    routes = [f"nats://{nats}-{i}.{nats}.{NAMESPACE}.svc:6222" for i in range(3)]
    assert f"--routes={','.join(routes)}" in args
    assert f"--cluster_name={nats}" in args
    assert "--cluster=nats://0.0.0.0:6222" in args
    assert "--server_name=$(POD_NAME)" in args
    assert "--stream-replicas=3" in operator_container(manifests)["args"]
    # The routes are let through: NATS pods reach each other's route port, and DNS.
    policy = one(manifests, "NetworkPolicy", nats)["spec"]
    route_rule = {"port": 6222, "protocol": "TCP"}
    assert any(route_rule in rule["ports"] for rule in policy["ingress"])
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 6222}


def test_nats_cluster_keeps_operator_mode_on_every_pod(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["nats-cluster-auth"]
    assert "--config=/etc/nats-trust/trust.conf" in nats_args(manifests)
    assert (
        f"--nats-trust-secret={NAMESPACE}/{TRUST_SECRET}" in (operator_container(manifests)["args"])
    )


def test_without_nats_cluster_nats_is_one_pod_and_streams_one_copy(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["defaults"]
    statefulset = one(manifests, "StatefulSet", f"{RELEASE}-nats")["spec"]
    assert statefulset["replicas"] == 1 and "podManagementPolicy" not in statefulset
    assert not [arg for arg in nats_args(manifests) if arg.startswith(("--routes", "--cluster"))]
    assert not [a for a in operator_container(manifests)["args"] if "stream-replicas" in a]
    assert one(manifests, "Service", f"{RELEASE}-nats")["spec"]["publishNotReadyAddresses"] is False

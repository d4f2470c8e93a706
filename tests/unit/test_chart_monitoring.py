"""The chart's optional monitoring (charts/ponder, `monitoring.*`): Prometheus Operator monitors
and the Grafana dashboard.

Absent by default. Enabled, the ServiceMonitor finds the operator's metrics port and the
PodMonitors find the scheduler and worker pods and ports that ponder.operator.render gives; and
every series a dashboard query names is one that SchedulerMetrics, WorkerMetrics or
OperatorMetrics registers, with every label the query filters or groups on, read from their
registries, never from a list written here.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from ponder.api import metrics as names
from ponder.api.crd import ReasoningServiceSpec
from ponder.local.cluster.local_cluster import ToolsMissingError, find_tools_bin_dir
from ponder.operator import render as operator_render
from ponder.operator.__main__ import parse_args as parse_operator_args
from ponder.operator.metrics import DEFAULT_METRICS_PORT, OperatorMetrics
from ponder.scheduler.metrics import SchedulerMetrics
from ponder.workers.metrics import WorkerMetrics
from tests.unit.test_chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    Manifest,
    objects,
    one,
    operator_container,
    render,
    run_helm,
    set_flags,
)

DASHBOARD_FILE = CHART / "dashboards" / "ponder.json"
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor"}
ALL_ON = {
    "monitoring.serviceMonitor.enabled": "true",
    "monitoring.podMonitors.enabled": "true",
    "monitoring.grafanaDashboard.enabled": "true",
}
# Labels the Prometheus Operator puts on every target it discovers (its docs, "Getting started":
# namespace, pod, container, endpoint, job and instance); the monitors' relabelings add more.
PROMETHEUS_OPERATOR_TARGET_LABELS = frozenset(
    {"namespace", "pod", "container", "endpoint", "job", "instance"}
)
# What each test-time-compute, latency and scaling panel of the issue must show.
REQUIRED_SERIES = {
    names.QUERIES_TOTAL,
    f"{names.QUERY_LATENCY_SECONDS}_bucket",
    names.AUTOSCALER_SLO_TARGET_SECONDS,
    names.DESIRED_REPLICAS,
    names.ACTUAL_REPLICAS,
    names.READY_REPLICAS,
    names.AUTOSCALER_DEMAND_BRANCHES,
    names.AUTOSCALER_BACKLOG_JOBS,
    names.SCALE_DECISIONS_TOTAL,
    f"{names.BRANCHES_TO_CONSENSUS}_bucket",
    names.EARLY_STOPS_TOTAL,
    names.TOKENS_SAVED_TOTAL,
    f"{names.TOKENS_BEFORE_FINAL_ANSWER}_bucket",
    f"{names.QUERY_TOKENS_AFTER_ANSWER}_bucket",
    f"{names.CONFIDENCE_AT_STOP}_bucket",
    f"{names.WORKER_CANCEL_TO_FREE_SECONDS}_bucket",
}

Series = dict[str, frozenset[str]]
"""A series name -> every label it may carry once scraped (its own and its target's)."""


@pytest_asyncio.fixture(scope="session")
async def helm() -> Path:
    """The pinned helm built by `make tools`; a missing build fails with the fix."""
    try:
        return await find_tools_bin_dir() / "helm"
    except ToolsMissingError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keep helm's cache and config out of $HOME."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


@pytest.fixture(scope="session")
def monitored(helm: Path, env: dict[str, str]) -> list[Manifest]:
    """The chart with every monitoring value on."""
    return render(helm, env, ALL_ON)


@pytest.fixture(scope="session")
def dashboard(monitored: list[Manifest]) -> dict[str, Any]:
    """The dashboard as the ConfigMap ships it."""
    config_map = one(monitored, "ConfigMap", f"{RELEASE}-dashboard")
    loaded: dict[str, Any] = json.loads(config_map["data"]["ponder.json"])
    return loaded


def pod_monitor(manifests: Sequence[Manifest], component: str) -> Manifest:
    return one(manifests, "PodMonitor", f"{RELEASE}-{component}s")


def rendered_pods() -> dict[str, Manifest]:
    """component -> the pod template the operator renders for a ReasoningService."""
    owner = operator_render.Owner(namespace="team-a", name="math", uid="1234-abcd")
    spec = ReasoningServiceSpec.model_validate({"model": {"name": "Qwen/Qwen2.5-1.5B-Instruct"}})
    children = operator_render.render_children(owner, spec, 2, "nats://nats:4222")
    pods = [m["spec"]["template"] for m in children if m["kind"] == "Deployment"]
    return {pod["metadata"]["labels"]["app.kubernetes.io/component"]: pod for pod in pods}


def named_port(pod: Manifest, port_name: str) -> tuple[str, int]:
    """(container, containerPort) of the pod's one port named `port_name`."""
    found = [
        (container["name"], port["containerPort"])
        for container in pod["spec"]["containers"]
        for port in container.get("ports", [])
        if port["name"] == port_name
    ]
    assert len(found) == 1, f"expected one port {port_name}, got {found}"
    return found[0]


# --- absent by default ---------------------------------------------------------------------------


def test_no_monitor_no_dashboard_and_no_operator_ingress_by_default(
    helm: Path, env: dict[str, str]
) -> None:
    manifests = render(helm, env, {})
    assert not MONITORING_KINDS & {m["kind"] for m in manifests}
    assert objects(manifests, "ConfigMap") == []
    assert [s["metadata"]["name"] for s in objects(manifests, "Service")] == [f"{RELEASE}-nats"]
    operator_policy = one(manifests, "NetworkPolicy", f"{RELEASE}-operator")
    assert "ingress" not in operator_policy["spec"]


def test_chart_with_monitoring_passes_strict_lint(helm: Path, env: dict[str, str]) -> None:
    result = run_helm(helm, env, "lint", "--strict", str(CHART), *set_flags(ALL_ON))
    assert result.returncode == 0, result.stdout + result.stderr


def test_monitoring_objects_carry_the_recommended_labels(monitored: list[Manifest]) -> None:
    added = [m for m in monitored if m["kind"] in MONITORING_KINDS | {"ConfigMap"}]
    assert len(added) == 4  # ServiceMonitor, two PodMonitors, the dashboard
    for manifest in added:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, manifest["metadata"]["name"]
        assert labels["app.kubernetes.io/part-of"] == "ponder"
        assert labels["app.kubernetes.io/component"] == "monitoring"


# --- the operator's ServiceMonitor ---------------------------------------------------------------


def test_service_monitor_scrapes_the_operators_metrics_port_and_keeps_its_service_labels(
    monitored: list[Manifest],
) -> None:
    container = operator_container(monitored)
    metrics_ports = [p for p in container["ports"] if p["name"] == "metrics"]
    assert [p["containerPort"] for p in metrics_ports] == [DEFAULT_METRICS_PORT]
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert parse_operator_args(container["args"], environ).metrics_port == DEFAULT_METRICS_PORT

    service = one(monitored, "Service", f"{RELEASE}-metrics")
    pod_labels = one(monitored, "Deployment", RELEASE)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [service_port] = service["spec"]["ports"]
    assert service_port["targetPort"] == "metrics"
    assert service_port["port"] == DEFAULT_METRICS_PORT

    monitor = one(monitored, "ServiceMonitor", f"{RELEASE}-operator")
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # It must not pick up the NATS Service of the same release.
    nats_labels = one(monitored, "Service", f"{RELEASE}-nats")["metadata"]["labels"]
    assert not spec["selector"]["matchLabels"].items() <= nats_labels.items()
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] == service_port["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s"
    # The per-service series' own `namespace` (the ReasoningService's) must win over the target's.
    assert endpoint["honorLabels"] is True


def test_service_monitor_takes_its_interval_and_the_prometheus_selector_labels(
    helm: Path, env: dict[str, str]
) -> None:
    manifests = render(
        helm,
        env,
        {
            "monitoring.serviceMonitor.enabled": "true",
            "monitoring.serviceMonitor.interval": "1m",
            "monitoring.serviceMonitor.labels.release": "kube-prometheus-stack",
            "operator.metricsPort": "9100",
        },
    )
    monitor = one(manifests, "ServiceMonitor", f"{RELEASE}-operator")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["interval"] == "1m"
    assert one(manifests, "Service", f"{RELEASE}-metrics")["spec"]["ports"][0]["port"] == 9100
    assert objects(manifests, "PodMonitor") == []
    assert objects(manifests, "ConfigMap") == []


def test_operator_metrics_clients_open_the_metrics_port_and_nothing_else(
    helm: Path, env: dict[str, str]
) -> None:
    peer = "networkPolicy.operatorMetricsClients[0].namespaceSelector.matchLabels"
    manifests = render(helm, env, {rf"{peer}.kubernetes\.io/metadata\.name": "monitoring"})
    policy = one(manifests, "NetworkPolicy", f"{RELEASE}-operator")
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
            "ports": [{"port": DEFAULT_METRICS_PORT, "protocol": "TCP"}],
        }
    ]


# --- the schedulers' and workers' PodMonitors ----------------------------------------------------


@pytest.mark.parametrize(
    ("component", "container", "port"),
    [
        ("scheduler", "scheduler", operator_render.SCHEDULER_PORT),
        ("worker", "worker", operator_render.WORKER_LOOP_PORT),
    ],
)
def test_pod_monitors_scrape_the_pods_and_ports_the_operator_renders(
    monitored: list[Manifest], component: str, container: str, port: int
) -> None:
    monitor = pod_monitor(monitored, component)
    spec = monitor["spec"]
    pod = rendered_pods()[component]
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    # Never the other component's pods, nor the chart's own operator and NATS.
    for other, other_pod in rendered_pods().items():
        if other != component:
            assert not selector.items() <= other_pod["metadata"]["labels"].items()
    for workload in objects(monitored, "Deployment") + objects(monitored, "StatefulSet"):
        assert not selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"any": True}
    [endpoint] = spec["podMetricsEndpoints"]
    assert named_port(pod, endpoint["port"]) == (container, port)
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s"
    # The target's `name` is the ReasoningService's, as on the operator's per-service series.
    [relabeling] = endpoint["relabelings"]
    assert relabeling["targetLabel"] == "name"
    [source] = relabeling["sourceLabels"]
    pod_label = source.removeprefix("__meta_kubernetes_pod_label_")
    by_meta_name = {
        re.sub(r"[^a-zA-Z0-9_]", "_", key): value
        for key, value in pod["metadata"]["labels"].items()
    }
    assert by_meta_name[pod_label] == "math"


def test_vllm_is_scraped_through_the_worker_loop_only() -> None:
    worker_pod = rendered_pods()["worker"]
    engine = next(c for c in worker_pod["spec"]["containers"] if c["name"] == "engine")
    # vLLM listens on loopback and exposes no port; the worker's /metrics serves its series.
    assert "ports" not in engine
    assert "127.0.0.1" in engine["args"]


@pytest.mark.parametrize(
    ("values", "namespace_selector"),
    [
        ({"operator.watchNamespaces": "{team-a,team-b}"}, {"matchNames": ["team-a", "team-b"]}),
        (
            {"operator.watchNamespaces": "{team-a}", "monitoring.podMonitors.namespaces": "{ml}"},
            {"matchNames": ["ml"]},
        ),
    ],
)
def test_pod_monitors_look_in_the_watched_or_the_listed_namespaces(
    helm: Path,
    env: dict[str, str],
    values: dict[str, str],
    namespace_selector: dict[str, Any],
) -> None:
    manifests = render(
        helm,
        env,
        {
            "monitoring.podMonitors.enabled": "true",
            "monitoring.podMonitors.interval": "15s",
            "monitoring.podMonitors.labels.release": "kube-prometheus-stack",
            **values,
        },
    )
    for component in ("scheduler", "worker"):
        monitor = pod_monitor(manifests, component)
        assert monitor["spec"]["namespaceSelector"] == namespace_selector
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"
    assert objects(manifests, "ServiceMonitor") == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"monitoring.podMonitors.interval": "soon"}, "/monitoring/podMonitors/interval"),
        ({"monitoring.serviceMonitor.labels.release": "a b"}, "/monitoring/serviceMonitor/labels"),
        ({"monitoring.podMonitors.namespaces": "{Team_A}"}, "/monitoring/podMonitors/namespaces"),
        ({"monitoring.grafanaDashboard.labelKey": ""}, "/monitoring/grafanaDashboard/labelKey"),
        ({"monitoring.serviceMonitors.enabled": "true"}, "'serviceMonitors' not allowed"),
    ],
)
def test_bad_monitoring_values_are_refused_naming_the_value(
    helm: Path, env: dict[str, str], values: dict[str, str], message: str
) -> None:
    result = run_helm(helm, env, "template", RELEASE, str(CHART), *set_flags(values))
    assert result.returncode != 0
    assert message in result.stderr


# --- the Grafana dashboard -----------------------------------------------------------------------


def test_dashboard_config_map_carries_the_sidecar_label_and_the_dashboard_file(
    monitored: list[Manifest], dashboard: dict[str, Any]
) -> None:
    config_map = one(monitored, "ConfigMap", f"{RELEASE}-dashboard")
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert list(config_map["data"]) == ["ponder.json"]
    assert dashboard == json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] == "ponder"
    assert dashboard["title"] == "Ponder"


def test_dashboard_config_map_takes_its_label_namespace_and_annotations(
    helm: Path, env: dict[str, str]
) -> None:
    manifests = render(
        helm,
        env,
        {
            "monitoring.grafanaDashboard.enabled": "true",
            "monitoring.grafanaDashboard.labelKey": "grafana.example.com/dashboard",
            "monitoring.grafanaDashboard.labelValue": "ponder",
            "monitoring.grafanaDashboard.namespace": "monitoring",
            "monitoring.grafanaDashboard.annotations.grafana_folder": "Ponder",
        },
    )
    [config_map] = objects(manifests, "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana.example.com/dashboard"] == "ponder"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Ponder"}
    assert not MONITORING_KINDS & {m["kind"] for m in manifests}


def test_dashboard_has_namespace_service_and_strategy_variables(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "service", "strategy"]
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "service", "strategy"):
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[name]["multi"] and variables[name]["includeAll"]
    assert variables["service"]["query"].endswith(", name)")
    assert variables["strategy"]["query"].endswith(", strategy)")


# --- every query names exported series with their labels -----------------------------------------

PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"bool", "offset", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*$")


def selectors(expr: str) -> Iterator[tuple[set[str], dict[str, str]]]:
    """(metric names, {label: matched value}) of each `name{...}` or `{__name__=~"a|b", ...}`."""
    for metric, body in _SELECTOR.findall(expr):
        matched = dict(_MATCHER.findall(body))
        named = set(matched.pop("__name__").split("|")) if "__name__" in matched else set()
        yield ({metric} if metric else set()) | named, matched


def metric_names(expr: str) -> set[str]:
    """Every series name a PromQL expression selects: selectors' names and bare identifiers
    that are no function (followed by `(`), keyword, label list, string or range."""
    found = {name for metrics, _ in selectors(expr) for name in metrics}
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    found |= {name for name in _IDENTIFIER.findall(text) if name not in PROMQL_KEYWORDS}
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels named by every `by`, `without`, `on` or `ignoring (...)` clause."""
    return {
        label.strip() for group in _LABEL_LIST.findall(expr) for label in group.split(",") if label
    }


@pytest.mark.parametrize(
    ("expr", "metrics", "grouped"),
    [
        ("up", {"up"}, set()),
        (
            'sum by (outcome) (rate(ponder_queries_total{strategy=~"$s"}[$__rate_interval]))',
            {"ponder_queries_total"},
            {"outcome"},
        ),
        (
            'histogram_quantile(0.95, sum by (name, le) (rate(x_seconds_bucket{a="b"}[5m])))',
            {"x_seconds_bucket"},
            {"name", "le"},
        ),
        ("sum(rate(a_total[1m])) / sum without (pod) (b)", {"a_total", "b"}, {"pod"}),
        ("a_total > bool 1e3 and on (job) c offset 5m", {"a_total", "c"}, {"job"}),
        ('{__name__=~"g_one|g_two", namespace=~"$namespace"}', {"g_one", "g_two"}, set()),
        ('max(a{le="0.5", k="rate(b)"})', {"a"}, set()),
        ("vllm:num_requests_running * 2", {"vllm:num_requests_running"}, set()),
    ],
)
def test_metric_names_and_grouping_labels_of_promql(
    expr: str, metrics: set[str], grouped: set[str]
) -> None:
    assert metric_names(expr) == metrics
    assert grouping_labels(expr) == grouped


def dashboard_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target (rows' panels too) and every variable's query."""
    panels = list(dashboard["panels"])
    for panel in list(panels):
        panels += panel.get("panels", [])
    for panel in panels:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            match = _LABEL_VALUES.match(query)
            assert match, f"variable {variable['name']}: expected label_values(...), got {query}"
            yield f"variable {variable['name']!r}", match.group(1)


SERIES_OF_TYPE = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}


def registered_series(registry: CollectorRegistry, owner: object, target: frozenset[str]) -> Series:
    """Series names of `registry`'s families and what each carries once scraped: the collector's
    label names (`le` on buckets) and the `target` labels of the monitor that scrapes them."""
    # prometheus_client keeps a collector's label names private, and a family without children
    # (a labelled metric before its first use) has no samples to read them from.
    label_names = {
        family.name: frozenset(collector._labelnames)
        for collector in vars(owner).values()
        if isinstance(collector, MetricWrapperBase)
        for family in collector.describe()
    }
    series: Series = {}
    for family in registry.collect():
        assert family.type in SERIES_OF_TYPE, f"{family.name}: a {family.type}, not handled here"
        own = label_names[family.name] | target
        for suffix in SERIES_OF_TYPE[family.type]:
            series[family.name + suffix] = own | {"le"} if suffix == "_bucket" else own
        for sample in family.samples:  # e.g. `_created`, and whatever a type adds
            series.setdefault(sample.name, own | frozenset(sample.labels))
    return series


@pytest.fixture(scope="session")
def exported(monitored: list[Manifest]) -> Series:
    """Every series the three programs export, with the labels Prometheus stores them under."""
    relabeled = {
        relabeling["targetLabel"]
        for component in ("scheduler", "worker")
        for endpoint in pod_monitor(monitored, component)["spec"]["podMetricsEndpoints"]
        for relabeling in endpoint.get("relabelings", [])
    }
    pod_targets = PROMETHEUS_OPERATOR_TARGET_LABELS | relabeled
    scheduler, worker, operator = SchedulerMetrics(), WorkerMetrics("worker-0"), OperatorMetrics()
    series: Series = {}
    for registry, owner, target in (
        (scheduler.registry, scheduler, pod_targets),
        (worker.registry, worker, pod_targets),
        (operator.registry, operator, PROMETHEUS_OPERATOR_TARGET_LABELS | {"service"}),
    ):
        for name, labels in registered_series(registry, owner, target).items():
            series[name] = series.get(name, frozenset()) | labels
    return series


def query_problems(dashboard: Mapping[str, Any], exported: Series) -> list[str]:
    """What is wrong with the dashboard's queries: series nobody exports, labels a series lacks."""
    problems = []
    for where, expr in dashboard_queries(dashboard):
        found = metric_names(expr)
        if not found:
            problems.append(f"{where}: names no series: {expr}")
        for name in sorted(found - exported.keys()):
            problems.append(f"{where}: no program exports {name}")
        for metrics, matched in selectors(expr):
            for name in sorted(metrics & exported.keys()):
                for label in sorted(matched.keys() - exported[name]):
                    problems.append(f"{where}: {name} has no label {label}")
        for name in sorted(found & exported.keys()):
            for label in sorted(grouping_labels(expr) - exported[name]):
                problems.append(f"{where}: groups {name} by {label}, which it lacks")
    return problems


def test_every_series_a_query_names_is_exported_with_the_labels_it_uses(
    dashboard: dict[str, Any], exported: Series
) -> None:
    assert len(list(dashboard_queries(dashboard))) >= len(REQUIRED_SERIES)
    assert query_problems(dashboard, exported) == []


@pytest.mark.parametrize(
    ("broken_expr", "problem"),
    [
        (
            "sum(rate(ponder_queries_answered_total[5m]))",
            "no program exports ponder_queries_answered_total",
        ),
        ("sum(ponder_desired_replicas_total)", "no program exports ponder_desired_replicas_total"),
        (
            "rate(ponder_query_latency_seconds[5m])",
            "no program exports ponder_query_latency_seconds",
        ),
        (
            'rate(ponder_worker_cancel_to_free_seconds_count{strategy="x"}[5m])',
            "ponder_worker_cancel_to_free_seconds_count has no label strategy",
        ),
        ("sum by (strategy) (ponder_ready_replicas)", "groups ponder_ready_replicas by strategy"),
        ("vector(1)", "names no series"),
    ],
)
def test_the_query_check_catches_a_series_or_label_nobody_exports(
    dashboard: dict[str, Any], exported: Series, broken_expr: str, problem: str
) -> None:
    broken = copy.deepcopy(dashboard)
    panel = next(p for p in broken["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = broken_expr
    problems = query_problems(broken, exported)
    assert len(problems) == 1
    assert problem in problems[0]


def test_dashboard_shows_every_series_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    queried = {name for _, expr in dashboard_queries(dashboard) for name in metric_names(expr)}
    assert REQUIRED_SERIES - queried == set()


def test_every_panel_query_follows_the_namespace_service_and_strategy_variables(
    dashboard: dict[str, Any], exported: Series
) -> None:
    for where, expr in dashboard_queries(dashboard):
        if where.startswith("variable"):
            continue
        for metrics, matched in selectors(expr):
            [name] = metrics
            assert matched["namespace"] == "$namespace", f"{where}: {name} ignores $namespace"
            assert matched["name"] == "$service", f"{where}: {name} ignores $service"
            if "strategy" in exported[name]:
                assert matched["strategy"] == "$strategy", f"{where}: {name} ignores $strategy"

"""`spec.tracing`: with an endpoint, the scheduler, the worker loop and vLLM export traces to
it through the standard OTEL_* variables (and vLLM's `--otlp-traces-endpoint`); without one,
no container gets a tracing variable or flag."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ponder.api.tracing import span_exporters, tracing_requested
from tests.unit.test_render import children, container, spec_of

COLLECTOR = "http://otel-collector.observability:4318/"
CONTAINERS = [
    ("Deployment/math-scheduler", "scheduler"),
    ("Deployment/math-workers", "worker"),
    ("Deployment/math-workers", "engine"),
]


def env_of(found: dict[str, Any]) -> dict[str, str]:
    return {each["name"]: each.get("value", "") for each in found.get("env", [])}


@pytest.mark.parametrize(("deployment", "name"), CONTAINERS)
def test_every_container_traces_to_the_collector(deployment: str, name: str) -> None:
    rendered = children(spec_of(tracing={"endpoint": COLLECTOR, "samplePercent": 25}))
    env = env_of(container(rendered[deployment], name))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == COLLECTOR.rstrip("/")
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert tracing_requested(env)
    (exporter,) = span_exporters(env)  # what the program will build from them
    assert type(exporter).__module__.endswith("http.trace_exporter")


def test_vllm_continues_the_workers_trace() -> None:
    rendered = children(spec_of(tracing={"endpoint": COLLECTOR}))
    engine = container(rendered["Deployment/math-workers"], "engine")
    flag = engine["args"].index("--otlp-traces-endpoint")
    assert engine["args"][flag + 1] == "http://otel-collector.observability:4318/v1/traces"
    assert env_of(engine)["OTEL_SERVICE_NAME"] == "vllm"
    assert env_of(engine)["OTEL_TRACES_SAMPLER_ARG"] == "1"


@pytest.mark.parametrize(("deployment", "name"), CONTAINERS)
def test_without_an_endpoint_nothing_traces(deployment: str, name: str) -> None:
    found = container(children(spec_of())[deployment], name)
    assert not [key for key in env_of(found) if key.startswith("OTEL_")]
    assert "--otlp-traces-endpoint" not in found.get("args", [])


@pytest.mark.parametrize(
    "tracing",
    [{"endpoint": "otel-collector:4318"}, {"samplePercent": 101}, {"samplePercent": -1}],
)
def test_a_bad_tracing_spec_is_refused(tracing: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec_of(tracing=tracing)

"""`ponder.api.tracing`: when the OTEL_* environment turns traces on, and with what."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from ponder.api.tracing import (
    TracingError,
    resource_attributes,
    span_exporters,
    tracing_requested,
)
from ponder.local.vllm import tracing_setup

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


@pytest.mark.parametrize(
    ("env", "requested"),
    [
        ({}, False),
        (ENDPOINT, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", **ENDPOINT}, False),
        ({"OTEL_TRACES_EXPORTER": " None "}, False),
        ({"OTEL_SDK_DISABLED": "true", **ENDPOINT}, False),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "console"}, False),
        ({"OTEL_SDK_DISABLED": "false", **ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
    ],
)
def test_traces_are_off_unless_the_environment_asks(env: dict[str, str], requested: bool) -> None:
    assert tracing_requested(env) is requested


@pytest.mark.parametrize(
    ("env", "kinds"),
    [
        (ENDPOINT, [Http]),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, [Grpc]),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, [Grpc]),
        (
            {
                **ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            [Http],
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, [ConsoleSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, [Http, ConsoleSpanExporter]),
    ],
)
def test_exporters_follow_the_environment(env: dict[str, str], kinds: list[type]) -> None:
    assert [type(each) for each in span_exporters(env)] == kinds


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin'"),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "PROTOCOL='http/json'"),
    ],
)
def test_what_cannot_be_honoured_is_an_error_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(TracingError, match=named):
        span_exporters(env)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"service.name": "ponder-worker", "service.instance.id": "w1"}),
        ({"OTEL_SERVICE_NAME": "gpu-pool"}, {"service.instance.id": "w1"}),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-7, deployment.environment=prod"},
            {"service.name": "ponder-worker"},
        ),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=x"}, {"service.instance.id": "w1"}),
    ],
)
def test_the_users_resource_attributes_win(env: dict[str, str], expected: dict[str, str]) -> None:
    assert resource_attributes("ponder-worker", {"service.instance.id": "w1"}, env) == expected


@pytest.mark.parametrize(
    ("env", "extra", "args", "variables"),
    [
        ({}, [], [], {}),
        ({"OTEL_TRACES_EXPORTER": "console"}, [], [], {}),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"},
            [],
            ["--otlp-traces-endpoint", "http://127.0.0.1:4318/v1/traces"],
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "vllm"},
        ),
        (
            {**ENDPOINT, "OTEL_SERVICE_NAME": "engine"},
            [],
            ["--otlp-traces-endpoint", "http://collector:4318/v1/traces"],
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            [],
            ["--otlp-traces-endpoint", "http://collector:4317"],
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "vllm"},
        ),
        (
            ENDPOINT,
            ["--otlp-traces-endpoint", "http://elsewhere:4318/v1/traces"],
            [],
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "vllm"},
        ),
    ],
)
def test_the_local_vllm_traces_where_the_other_programs_do(
    env: dict[str, str], extra: list[str], args: list[str], variables: dict[str, str]
) -> None:
    assert tracing_setup(env, extra) == (args, variables)

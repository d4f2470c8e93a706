"""OpenTelemetry traces for Ponder's programs, off unless the standard `OTEL_*` variables ask.

A query is one trace across processes:

    <op> <model>          scheduler, SERVER    the query (continues the client's `traceparent`)
      ponder.wave         scheduler, INTERNAL  one launch of branches (a wave, a search step)
        process <subject> worker, CONSUMER     one branch job, its context from the NATS headers
          <op> <model>    worker, CLIENT       one request to vLLM, its `traceparent` header
            llm_request   vLLM, SERVER         vLLM's own span (`--otlp-traces-endpoint`)

`configure_tracing` installs the SDK's tracer provider when the environment asks for traces:
`OTEL_TRACES_EXPORTER` set to `otlp` or `console`, or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) with no exporter named.
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off. Everything else is the
SDK's own reading of the environment: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, the
sampler (`OTEL_TRACES_SAMPLER`, parent-based always-on by default), the batch processor's
`OTEL_BSP_*`, the exporter's endpoint, headers and timeout. The OTLP protocol is
`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` (or `OTEL_EXPORTER_OTLP_PROTOCOL`): `http/protobuf`, the
default, or `grpc`. Off, the API's tracer is a no-op: spans cost a function call, and no
`traceparent` header is sent.

Span attributes follow the GenAI and messaging semantic conventions (`gen_ai.*`,
`messaging.*`); what only Ponder knows is under `ponder.*`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from enum import StrEnum

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from ponder.api.wire import Endpoint

log = logging.getLogger(__name__)

TRACER_NAME = "ponder"


class TracingError(ValueError):
    """The `OTEL_*` environment asks for something this program cannot do; names the variable."""


class GenAi(StrEnum):
    """GenAI semantic-convention attribute names (semconv 1.37)."""

    OPERATION = "gen_ai.operation.name"
    PROVIDER = "gen_ai.provider.name"
    REQUEST_MODEL = "gen_ai.request.model"
    REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
    REQUEST_TEMPERATURE = "gen_ai.request.temperature"
    REQUEST_TOP_P = "gen_ai.request.top_p"
    REQUEST_CHOICES = "gen_ai.request.choice.count"
    RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
    INPUT_TOKENS = "gen_ai.usage.input_tokens"
    OUTPUT_TOKENS = "gen_ai.usage.output_tokens"


class Messaging(StrEnum):
    """Messaging semantic-convention attribute names."""

    SYSTEM = "messaging.system"
    OPERATION = "messaging.operation.name"
    DESTINATION = "messaging.destination.name"
    MESSAGE_ID = "messaging.message.id"
    DELIVERY_COUNT = "messaging.message.delivery_count"


OPERATIONS = {Endpoint.CHAT: "chat", Endpoint.COMPLETIONS: "text_completion"}
"""`gen_ai.operation.name` of each OpenAI endpoint."""


def span_name(endpoint: Endpoint, model: str) -> str:
    """A GenAI span's name: `{operation} {model}`."""
    return f"{OPERATIONS[endpoint]} {model}"


def tracing_requested(env: Mapping[str, str]) -> bool:
    """Whether `env` asks for traces (see the module docstring)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = exporter_names(env)
    if exporters:
        return exporters != ["none"]
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The exporters `OTEL_TRACES_EXPORTER` names, lower-cased ([] when it names none)."""
    raw = env.get("OTEL_TRACES_EXPORTER", "")
    return [name.strip().lower() for name in raw.split(",") if name.strip()]


def otlp_protocol(env: Mapping[str, str]) -> str:
    """The OTLP protocol of traces `env` names: `http/protobuf` unless it says `grpc`."""
    return (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def span_exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    """The exporters `env` names (`otlp` when it names none but gives an endpoint)."""
    names = exporter_names(env) or ["otlp"]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_exporter(otlp_protocol(env)))
        else:
            raise TracingError(
                f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none"
            )
    return exporters


def _otlp_exporter(protocol: str) -> SpanExporter:
    # Imported here: each exporter package is only needed when asked for.
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as error:  # not a dependency of Ponder's own images
            raise TracingError(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc needs the package "
                "opentelemetry-exporter-otlp-proto-grpc; http/protobuf needs nothing more"
            ) from error
        return GrpcExporter()
    raise TracingError(
        f"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL={protocol!r} is not supported: use http/protobuf "
        "or grpc"
    )


def resource_attributes(
    service_name: str, attributes: Mapping[str, str], env: Mapping[str, str]
) -> dict[str, str]:
    """`service.name` and `attributes`, less what the environment sets itself
    (`OTEL_SERVICE_NAME`, the keys of `OTEL_RESOURCE_ATTRIBUTES`): the user's word wins."""
    own = {SERVICE_NAME: service_name, **attributes}
    given = {
        pair.split("=", 1)[0].strip()
        for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
        if "=" in pair
    }
    if env.get("OTEL_SERVICE_NAME"):
        given.add(SERVICE_NAME)
    return {key: value for key, value in own.items() if key not in given}


def configure_tracing(
    service_name: str,
    attributes: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> TracerProvider | None:
    """Install a tracer provider for this process when `env` (default: `os.environ`) asks for
    traces; its resource is `service_name` and `attributes` unless the environment names its
    own. None when off. Call its `shutdown()` on the way out: it exports what is batched."""
    env = os.environ if env is None else env
    if not tracing_requested(env):
        return None
    exporters = span_exporters(env)
    own = resource_attributes(service_name, attributes or {}, env)
    provider = TracerProvider(resource=Resource.create(own))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing on: %s", ", ".join(type(each).__name__ for each in exporters))
    return provider


def tracer() -> trace.Tracer:
    """Ponder's tracer (a no-op one while tracing is off)."""
    return trace.get_tracer(TRACER_NAME)


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Add the trace context (`traceparent`, `tracestate`) of `context` (default: the current
    one) to `headers`; adds nothing while tracing is off."""
    propagate.inject(headers, context=context)


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context carried by `headers` (HTTP or NATS), or an empty one."""
    return propagate.extract(dict(headers or {}))

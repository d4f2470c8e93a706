"""An OTLP/HTTP trace receiver on loopback, for tests: what the programs export, decoded.

`otlp_sink()` serves `POST /v1/traces` (protobuf, gzip or not, as the OTLP exporters send it)
on a free port and keeps every span it was sent, flattened to `ReceivedSpan`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ponder.local.processes import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    attributes: dict[str, Any]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(each) for each in value.array_value.values)
    return getattr(value, which) if which else None


@dataclass
class OtlpSink:
    url: str  # the traces endpoint, http://127.0.0.1:<port>/v1/traces
    spans: list[ReceivedSpan] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        self._arrived.set()

    async def wait_until(
        self, done: Callable[[list[ReceivedSpan]], bool], timeout_seconds: float
    ) -> list[ReceivedSpan]:
        """The spans received once `done(spans)` holds; TimeoutError after `timeout_seconds`."""
        async with asyncio.timeout(timeout_seconds):
            while not done(self.spans):
                self._arrived.clear()
                await self._arrived.wait()
        return self.spans


@contextlib.asynccontextmanager
async def otlp_sink() -> AsyncIterator[OtlpSink]:
    port = free_port()
    sink = OtlpSink(url=f"http://127.0.0.1:{port}/v1/traces")

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        sink.take(export)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield sink
    finally:
        await runner.cleanup()

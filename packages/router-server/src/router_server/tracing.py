"""OpenTelemetry traces, off by default (`observability.tracing`).

Rules:
- Off, every call here is a constant no-op: `span()` returns one shared
  null context and `outgoing()` returns None; the OpenTelemetry SDK is not
  even imported (it is the optional extra `inference-router-server[tracing]`).
- On, a request is one server span `router.request` (continuing the
  caller's W3C `traceparent` when it sends one), with children
  `router.auth`, `router.limits`, `router.route`, and one client span
  `router.backend` per backend attempt; the attempt's `traceparent` header
  carries the trace to the backend.
- The tracer is process-wide, like OpenTelemetry's own provider: the app's
  lifespan starts it and stops it. Exporters: "otlp" (OTLP over HTTP,
  configured by the exporter's standard OTEL_EXPORTER_OTLP_* variables),
  "console", or "memory" (kept in process, for tests and debugging).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from router_core.config import ObservabilitySettings

_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()
# Set while tracing is on: the tracer, the propagator, the provider, the memory exporter.
_tracer: Any = None
_propagator: Any = None
_provider: Any = None
memory: Any = None


def start(settings: ObservabilitySettings, service_name: str = "inference-router") -> None:
    """Start tracing if the config asks for it (imports the SDK only then)."""
    global _tracer, _propagator, _provider, memory
    if not settings.tracing:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if settings.tracing_exporter == "memory":
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
    elif settings.tracing_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _provider = provider
    _tracer = provider.get_tracer("router_server")
    _propagator = TraceContextTextMapPropagator()


def stop() -> None:
    global _tracer, _propagator, _provider, memory
    if _provider is not None:
        _provider.shutdown()
    _tracer = _propagator = _provider = memory = None


def span(name: str, **attributes: str) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one; a shared no-op when tracing is off."""
    if _tracer is None:
        return _OFF
    return _tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]


@contextlib.contextmanager
def _server(headers: Mapping[str, str], path: str) -> Iterator[None]:
    from opentelemetry.trace import SpanKind

    parent = _propagator.extract(carrier={"traceparent": headers.get("traceparent", "")})
    attributes = {"http.route": path}
    with _tracer.start_as_current_span(
        "router.request", context=parent, kind=SpanKind.SERVER, attributes=attributes
    ):
        yield


def request_span(headers: Mapping[str, str], path: str) -> contextlib.AbstractContextManager[Any]:
    """The request's server span, continuing the caller's trace context if sent."""
    if _tracer is None:
        return _OFF
    return _server(headers, path)


@contextlib.contextmanager
def _client(backend: str) -> Iterator[dict[str, str]]:
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(
        "router.backend", kind=SpanKind.CLIENT, attributes={"router.backend": backend}
    ):
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        yield carrier


def backend_span(backend: str) -> contextlib.AbstractContextManager[dict[str, str] | None]:
    """A backend attempt's client span; yields the headers that carry its context."""
    if _tracer is None:
        return _OFF
    return _client(backend)

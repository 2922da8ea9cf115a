"""OpenTelemetry traces, on only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

When it is (`http://collector:4317`), `configure` installs the SDK's tracer
provider with a batching OTLP/gRPC exporter; the servers get the
`opentelemetry-instrumentation-grpc` interceptor (a span per RPC, the child of
the W3C `traceparent` in the RPC metadata) and the channels one that only sends
the current span's `traceparent` along, with no client span: the callee's span
is the child of the caller's server span, so a booking makes three spans fewer
and tracing costs its calls about 30% less CPU (bench/tracing_cpu.py). An
outbox row keeps the `traceparent` of the transaction that wrote it (the relay
sends it as a message header), and a consumer handles a message inside a span
that is the child of it: a booking's email joins the booking's trace. Off (the
default) nothing of OpenTelemetry is imported, no interceptor is added, and the
per-message work is one check of a module flag. Nothing here imports grpc at
module level: the outbox, which the layers below the servicers use, reads the
current trace context through it.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.config import Env

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
# The percentage of requests Envoy starts a sampled trace for. The services'
# samplers follow the decision each call's `traceparent` carries (the SDK's
# default, ParentBased), so an unsampled booking records and exports nothing.
SAMPLE_PERCENT = "TRACING_SAMPLE_PERCENT"
TRACEPARENT = "traceparent"
# What the gRPC interceptors leave alone: Envoy's health checks every second
# (a trace each would drown the bookings) and reflection.
UNTRACED_SERVICE_PREFIXES = ("grpc.health.", "grpc.reflection.")
# Each service's spans go out in batches: at most this long after they end.
EXPORT_DELAY_MILLIS = 1000

_provider: Any = None  # the SDK's TracerProvider once configured; None: tracing is off


def endpoint(env: Env) -> str:
    """The collector's OTLP/gRPC address (`http://host:port`); "" leaves tracing off."""
    value = env.text(ENDPOINT, "")
    if value and not re.fullmatch(r"https?://[^/:\s]+:\d+/?", value):
        env.refuse(ENDPOINT, f"={value!r} must be http://host:port (or https://)")
        return ""
    return value


def sample_percent(env: Env) -> float:
    """TRACING_SAMPLE_PERCENT, 100 (every request) unless it says less."""
    return env.number(SAMPLE_PERCENT, 100.0, minimum=0.0, maximum=100.0)


def host_port(url: str) -> tuple[str, int]:
    """('collector', 4317) of 'http://collector:4317'."""
    host, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
    return host, int(port)


def enabled() -> bool:
    return _provider is not None


def configure(service: str, collector: str) -> None:
    """Traces this process's work as `service` to `collector`; nothing when it is ""."""
    global _provider
    if not collector or _provider is not None:
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    exporter = OTLPSpanExporter(endpoint=collector, insecure=collector.startswith("http://"))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MILLIS)
    )
    trace.set_tracer_provider(provider)
    _provider = provider


def shutdown() -> None:
    """Exports the spans still buffered; at the end of the process."""
    if _provider is not None:
        _provider.shutdown()


def _traced(details: Any) -> bool:
    method = getattr(details, "method", "") or ""
    if isinstance(method, bytes):
        method = method.decode()
    return not method.lstrip("/").startswith(UNTRACED_SERVICE_PREFIXES)


def server_interceptors() -> list[Any]:
    """The grpc.aio server interceptors tracing adds (before the service's own)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(filter_=_traced)]


def client_interceptors() -> list[Any]:
    """The grpc.aio channel interceptors tracing adds: each unary call carries
    the current span's `traceparent`, and makes no span of its own."""
    if _provider is None:
        return []
    return [_traceparent_sender()]


@functools.cache
def _traceparent_sender() -> Any:
    # Defined on first use: grpc is not imported at module level (see above);
    # one instance serves every channel, as it keeps no state.
    import grpc.aio

    class TraceparentSender(grpc.aio.UnaryUnaryClientInterceptor):
        """The instrumentation's client interceptors would add a CLIENT span per
        call (with its attributes, export and a done-callback) between two server
        spans that already time the call; the trace keeps its shape without it."""

        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            traceparent = current_traceparent()
            if traceparent:
                metadata = grpc.aio.Metadata(*(details.metadata or ()))
                metadata.add(TRACEPARENT, traceparent)
                details = details._replace(metadata=metadata)
            return await continuation(details, request)

    return TraceparentSender()


def current_traceparent() -> str:
    """The current span's W3C traceparent, "" when there is none or tracing is off."""
    if _provider is None:
        return ""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def message_headers(trace_context: str) -> dict[str, str]:
    """The AMQP headers carrying a message's trace context (none without one)."""
    return {TRACEPARENT: trace_context} if trace_context else {}


@contextlib.contextmanager
def consuming(queue: str, messages: Sequence[tuple[str, str]]) -> Iterator[None]:
    """Handling `messages` ((routing key, traceparent) each) from `queue`: a span
    per message, the child of the span that wrote it to the outbox, lasting as
    long as the batch's handling; a lone message's span is the current one, so
    what its handler calls joins the trace too."""
    if _provider is None or not messages:
        yield
        return
    from opentelemetry import propagate, trace

    tracer = trace.get_tracer(__name__)
    spans = [
        tracer.start_span(
            f"{queue} process {routing_key}",
            context=propagate.extract({TRACEPARENT: parent}) if parent else None,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": queue,
                "messaging.rabbitmq.destination.routing_key": routing_key,
                "messaging.batch.message_count": len(messages),
            },
        )
        for routing_key, parent in messages
    ]
    try:
        if len(spans) == 1:
            with trace.use_span(
                spans[0], end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                yield
        else:
            yield
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR)
        raise
    finally:
        for span in spans:
            span.end()

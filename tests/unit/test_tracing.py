"""runtime.tracing: off unless a collector is named, and then the W3C trace
context goes into outbox rows and message headers and comes back out as the
consumer's parent span."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runtime import tracing
from runtime.config import ConfigError, Env, Settings
from scripts.mesh import REPO


def test_the_collector_must_be_an_http_url_with_a_port() -> None:
    assert tracing.endpoint(Env({})) == ""
    assert tracing.endpoint(Env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"})) == (
        "http://jaeger:4317"
    )
    assert tracing.host_port("https://collector.example.com:4317/") == (
        "collector.example.com",
        4317,
    )
    for bad in ("jaeger:4317", "http://jaeger", "grpc://jaeger:4317"):
        with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
            Settings.load("booking", {"OTEL_EXPORTER_OTLP_ENDPOINT": bad})


def test_off_by_default_no_tracer_provider_and_no_interceptor() -> None:
    """A service without a collector adds no interceptor, no header, and never
    loads the tracing SDK, its exporter or the gRPC instrumentation (the cost of
    tracing off is a flag check). redis-py loads the OpenTelemetry metrics API
    by itself, so the probe looks for the tracing parts only."""
    probe = (
        "import sys\n"
        "from runtime import tracing, outbox, consumer, server, tls\n"
        "tracing.configure('booking', '')\n"
        "assert not tracing.enabled()\n"
        "assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []\n"
        "assert tracing.current_traceparent() == '' and tracing.message_headers('') == {}\n"
        "with tracing.consuming('q', [('booking.confirmed', '')]): pass\n"
        "from opentelemetry import trace\n"
        "assert type(trace.get_tracer_provider()).__name__ == 'ProxyTracerProvider'\n"
        "parts = ('opentelemetry.sdk.trace', 'opentelemetry.exporter', "
        "'opentelemetry.instrumentation')\n"
        "print(sorted({m for m in sys.modules if m.startswith(parts)}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_a_consumed_message_joins_the_trace_that_wrote_it() -> None:
    """In a process of its own (a tracer provider is set once per process): the
    traceparent an outbox row keeps is the parent of the consumer's span."""
    probe = """
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime import tracing
from runtime.outbox import OutboxMessage
from ticketing.booking.v1 import messages_pb2

# An endpoint nothing listens on: the batching exporter is never reached here.
tracing.configure("booking", "http://127.0.0.1:9")
memory = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))
with trace.get_tracer("test").start_as_current_span("CreateBooking") as booking:
    row = OutboxMessage("booking.confirmed", messages_pb2.BookingConfirmed()).row()
headers = tracing.message_headers(row["trace_context"])
assert headers == {"traceparent": row["trace_context"]}, headers
with tracing.consuming("notification", [("booking.confirmed", headers["traceparent"])]):
    inner = trace.get_current_span()
(consumed,) = [s for s in memory.get_finished_spans() if s.name != "CreateBooking"]
assert consumed.kind == trace.SpanKind.CONSUMER
assert consumed.context.trace_id == booking.get_span_context().trace_id
assert consumed.parent.span_id == booking.get_span_context().span_id
assert inner.get_span_context().span_id == consumed.context.span_id
print("ok")
"""
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert ran.stdout.strip() == "ok", ran.stderr


def test_a_call_sends_the_callers_span_and_makes_no_client_span() -> None:
    """In a process of its own: a traced channel's call makes no span, and the
    server's span of it is the child of the span the caller was in."""
    probe = """
import asyncio

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime import tracing

tracing.configure("booking", "http://127.0.0.1:9")
memory = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))


async def echo(request, context):
    return request


async def main():
    server = grpc.aio.server(interceptors=tracing.server_interceptors())
    calls = {"Call": grpc.unary_unary_rpc_method_handler(echo)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("probe.Echo", calls)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=tracing.client_interceptors()
    )
    with trace.get_tracer("test").start_as_current_span("CreateBooking") as caller:
        reply = await channel.unary_unary("/probe.Echo/Call")(b"hi", metadata=(("x-id", "r"),))
    await channel.close()
    await server.stop(None)
    assert reply == b"hi"
    return caller


caller = asyncio.run(main())
served, made = sorted(memory.get_finished_spans(), key=lambda s: s.name != "/probe.Echo/Call")
assert made.name == "CreateBooking", [s.name for s in memory.get_finished_spans()]
assert served.kind == trace.SpanKind.SERVER
assert served.parent.span_id == caller.get_span_context().span_id
assert served.context.trace_id == caller.get_span_context().trace_id
print("ok")
"""
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert ran.stdout.strip() == "ok", ran.stderr

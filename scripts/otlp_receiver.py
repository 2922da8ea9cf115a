"""A small OTLP/gRPC trace receiver (opentelemetry.proto.collector.trace.v1
TraceService), for the tests and the bench to run in-process: what the
services and Envoy export when OTEL_EXPORTER_OTLP_ENDPOINT points at it. It
keeps every span with its service's name, or (keep=False, the bench) only
counts them, keeping only the spans of the traces it was asked to `watch`, so
its memory stays the same however many arrive.

    python scripts/otlp_receiver.py --port 4317   # prints each span as it arrives
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the exporter's resource attribute service.name
    span: trace_pb2.Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, port: int, keep: bool = True, echo: bool = False) -> None:
        self.port = port
        self._keep = keep
        self._echo = echo
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._count = 0
        self._watched: set[bytes] = set()
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        """The value of OTEL_EXPORTER_OTLP_ENDPOINT that sends traces here."""
        return f"http://127.0.0.1:{self.port}"

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if not self._keep and not self._watched and not self._echo:
            # The bench's case: a count is all it wants, and the receiver shares
            # the mesh's cores, so it builds nothing per span.
            count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with self._lock:
                self._count += count
            return trace_service_pb2.ExportTraceServiceResponse()
        received = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                received += [ReceivedSpan(service, span) for span in scope_spans.spans]
        with self._lock:
            self._count += len(received)
            self._spans += [s for s in received if self._keep or s.span.trace_id in self._watched]
        if self._echo:
            for one in received:
                print(
                    f"{one.trace_id} {one.span_id} <- {one.parent_id or '-':16} "
                    f"{one.service}: {one.span.name}",
                    flush=True,
                )
        return trace_service_pb2.ExportTraceServiceResponse()

    def watch(self, trace_id: str) -> None:
        """Keeps the spans of this trace (hex) even when keeping no others."""
        with self._lock:
            self._watched.add(bytes.fromhex(trace_id))

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def start(self) -> OtlpReceiver:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        if self._server.add_insecure_port(f"127.0.0.1:{self.port}") == 0:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port}")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=1).wait()
            self._server = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=4317)
    args = parser.parse_args()
    receiver = OtlpReceiver(args.port, keep=False, echo=True).start()
    print(f"OTLP/gRPC receiver on {receiver.endpoint}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()

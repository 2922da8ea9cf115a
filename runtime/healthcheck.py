"""`python -m runtime.healthcheck ADDR [SERVICE]`: exit 0 if the gRPC server at
ADDR reports SERVING (for container health checks). It presents the developer
certificate (TLS_DIR, or TLS_CA_FILE / TLS_CERT_FILE / TLS_KEY_FILE): health
is open to every workload of the mesh."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime import tls


def serving(addr: str, service: str = "", identity: tls.TlsFiles | None = None) -> bool:
    identity = identity or tls.TlsFiles.for_workload("developer")
    try:
        with tls.channel(addr, None, identity, options=()) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


if __name__ == "__main__":
    sys.exit(0 if serving(*sys.argv[1:3]) else 1)

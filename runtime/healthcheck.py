"""`python -m runtime.healthcheck ADDR [SERVICE]`: exit 0 if the gRPC server at
ADDR reports SERVING (for container health checks)."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serving(addr: str, service: str = "") -> bool:
    try:
        with grpc.insecure_channel(addr) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


if __name__ == "__main__":
    sys.exit(0 if serving(*sys.argv[1:3]) else 1)

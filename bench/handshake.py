"""What mutual TLS costs a connection and an RPC (DESIGN §13).

    python -m bench.handshake [--connections 300] [--calls 3000]

Starts a bare gRPC server (health service only) in a child process with one
plaintext and one mTLS port, certificates from a throwaway CA, then measures
for each: N new connections with one RPC each (handshake included) and M
RPCs over one reused connection, with the client's and the server's CPU time.
No mesh needed and no fixed ports used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime import certs, tls

SERVER = """
import asyncio, sys
from pathlib import Path
import grpc
from grpc_health.v1 import health, health_pb2_grpc
from runtime.tls import TlsFiles

async def serve():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    plain = server.add_insecure_port("127.0.0.1:0")
    secure = server.add_secure_port(
        "127.0.0.1:0", TlsFiles.for_workload("event", Path(sys.argv[1])).server_credentials()
    )
    await server.start()
    print(plain, secure, flush=True)
    await server.wait_for_termination()

asyncio.run(serve())
"""
# No shared subchannel pool: each channel makes its own connection (and handshake).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_channel(port: int, secure: bool, identity: tls.TlsFiles) -> grpc.aio.Channel:
    target = f"127.0.0.1:{port}"
    if not secure:
        return grpc.aio.insecure_channel(target, options=OWN_CONNECTION)
    return tls.aio_channel(target, "event", identity, options=OWN_CONNECTION)


async def measure(
    server_pid: int, port: int, secure: bool, identity: tls.TlsFiles, connections: int, calls: int
) -> dict[str, float]:
    check = health_pb2.HealthCheckRequest()

    async def timed(run: Callable[[], Awaitable[None]], count: int) -> dict[str, float]:
        wall, client, server = time.perf_counter(), time.process_time(), cpu_seconds(server_pid)
        await run()
        per = 1000 / count  # milliseconds per connection or call
        return {
            "ms": round((time.perf_counter() - wall) * per, 3),
            "client_cpu_ms": round((time.process_time() - client) * per, 3),
            "server_cpu_ms": round((cpu_seconds(server_pid) - server) * per, 3),
        }

    async def fresh_connections() -> None:
        for _ in range(connections):
            async with open_channel(port, secure, identity) as channel:
                await health_pb2_grpc.HealthStub(channel).Check(check)

    async def reused_connection() -> None:
        async with open_channel(port, secure, identity) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(calls):
                await stub.Check(check)

    return {
        "new_connection": await timed(fresh_connections, connections),
        "rpc_on_reused_connection": await timed(reused_connection, calls),
    }


async def compare(
    server_pid: int, ports: tuple[int, int], identity: tls.TlsFiles, args: argparse.Namespace
) -> dict[str, dict[str, dict[str, float]]]:
    plain, secure = ports
    # Warm both paths up (imports, first connections) before measuring.
    await measure(server_pid, plain, False, identity, 20, 200)
    await measure(server_pid, secure, True, identity, 20, 200)
    return {
        "plaintext": await measure(
            server_pid, plain, False, identity, args.connections, args.calls
        ),
        "mtls": await measure(server_pid, secure, True, identity, args.connections, args.calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        tls_dir = Path(directory)
        certs.ensure(tls_dir)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(tls_dir)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            plain, secure = map(int, server.stdout.readline().split())
            identity = tls.TlsFiles.for_workload("booking", tls_dir)
            results = asyncio.run(compare(server.pid, (plain, secure), identity, args))
        finally:
            server.terminate()
            server.wait()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""<SERVICE>_HEALTH_PORT (runtime.server): a plaintext port serving grpc.health.v1
alone, for probes that cannot present a mesh certificate (a kubelet's). It
says NOT_SERVING for readiness from the start of a drain, and keeps LIVENESS
SERVING until the process has stopped its workers, so a draining replica is
taken out of the rotation but never restarted as dead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.config import ConfigError, Settings
from runtime.server import LIVENESS, GrpcService
from scripts.mesh import Mesh, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def status(addr: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(addr) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    return reply.status


async def code_of(addr: str, method: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(addr) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(b"", timeout=2)
    return refused.value.code()


async def eventually(check: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(check.wait(), 30)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_probe_port_serves_health_alone_and_stays_live_while_draining(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TLS_DIR", mesh.env["TLS_DIR"])  # the workload's mesh certificate
    main_port, probe_port = free_port(), free_port()
    settings = Settings.load(
        "payment",
        {
            "PAYMENT_GRPC_ADDR": f"127.0.0.1:{main_port}",
            "PAYMENT_METRICS_PORT": "0",
            "PAYMENT_HEALTH_PORT": str(probe_port),
            "REDIS_URL": mesh.env["REDIS_URL"],
            "DRAIN_SECONDS": "0.2",
            "SHUTDOWN_GRACE_SECONDS": "0",
        },
    )
    probes, main = f"127.0.0.1:{probe_port}", f"127.0.0.1:{main_port}"
    started, stop = asyncio.Event(), asyncio.Event()
    workers_stopping, release = asyncio.Event(), asyncio.Event()

    @contextlib.asynccontextmanager
    async def worker_slow_to_stop() -> AsyncIterator[None]:
        # Like booking's runs finishing on the way out: the process is alive
        # and busy, with its RPC port already closed.
        yield
        workers_stopping.set()
        await release.wait()

    async def key(kid: str) -> object | None:
        return None

    service = GrpcService(settings, token_keys=key, workers=[worker_slow_to_stop()])

    async def serve() -> None:
        async with service.serving():
            started.set()
            await stop.wait()

    async def scenario() -> None:
        running = asyncio.create_task(serve())
        await eventually(started, "the service to serve")
        assert await status(probes) == SERVING
        assert await status(probes, LIVENESS) == SERVING
        # Health alone: no other service, not even reflection, on the plaintext port.
        assert await code_of(probes, "/ticketing.payment.v1.PaymentService/Charge") == (
            grpc.StatusCode.UNIMPLEMENTED
        )
        assert (
            await code_of(probes, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
            == grpc.StatusCode.UNIMPLEMENTED
        )
        # The RPC port still takes no plaintext caller.
        assert await code_of(main, "/grpc.health.v1.Health/Check") == grpc.StatusCode.UNAVAILABLE

        stop.set()  # what SIGTERM does
        await eventually(workers_stopping, "the workers to stop")
        assert await status(probes) == NOT_SERVING
        assert await status(probes, LIVENESS) == SERVING
        release.set()
        await asyncio.wait_for(running, 30)
        assert await code_of(probes, "/grpc.health.v1.Health/Check") == (
            grpc.StatusCode.UNAVAILABLE
        )

    asyncio.run(scenario())


def test_a_bad_probe_port_stops_the_service_before_it_starts() -> None:
    with pytest.raises(ConfigError, match="PAYMENT_HEALTH_PORT"):
        Settings.load("payment", {"PAYMENT_HEALTH_PORT": "70000"})

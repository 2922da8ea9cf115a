"""The grpc.aio server every service runs.

One place sets up what each service needs around its servicers: the
interceptor (request id, access rules, error mapping, logs, metrics),
grpc.health.v1, server reflection, background workers, and a graceful
shutdown on SIGTERM: NOT_SERVING at once, still serving for DRAIN_SECONDS
while Envoy's health checks take it out of the rotation, then no new RPCs,
the in-flight ones finished (SHUTDOWN_GRACE_SECONDS at most), the workers
stopped (the booking service's runs finish there), and exit.

A kubelet's gRPC probe cannot present a mesh certificate, so <SERVICE>_HEALTH_PORT
(off by default) serves grpc.health.v1 alone in plaintext on a server of its
own: "" and each service's name say whether to route here (NOT_SERVING from
the start of the drain), LIVENESS whether the process still answers at all (it
does until it exits, so a draining replica is never restarted as dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from runtime import metrics, tracing
from runtime.config import Settings
from runtime.identity import KeyLookup, TokenVerifier
from runtime.interceptor import ServiceInterceptor, access_rules
from runtime.jwks import RemoteJwks
from runtime.revocation import Revocations
from runtime.tls import TlsFiles

log = logging.getLogger(__name__)

LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Registration:
    descriptor: ServiceDescriptor
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: object


@dataclass
class GrpcService:
    """A service's servicers plus the workers that live as long as it does."""

    settings: Settings
    # Access tokens are checked against the auth service's published keys
    # unless a service brings its own (the auth service itself does).
    token_keys: KeyLookup | None = None
    registrations: list[Registration] = field(default_factory=list)
    workers: list[AbstractAsyncContextManager[Any]] = field(default_factory=list)

    def add(
        self,
        descriptor: ServiceDescriptor,
        add_to_server: Callable[[Any, grpc.aio.Server], None],
        servicer: object,
    ) -> None:
        self.registrations.append(Registration(descriptor, add_to_server, servicer))

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with self.serving():
            await stop.wait()
            log.info("shutting down")

    @contextlib.asynccontextmanager
    async def serving(self) -> Any:
        rules = access_rules(r.descriptor for r in self.registrations)
        identity = TlsFiles.for_workload(self.settings.service)
        revocations = Revocations(self.settings.redis_url)
        verifier = TokenVerifier(
            self.token_keys or RemoteJwks(self.settings.auth_target, identity).key_for,
            self.settings.jwt_issuer,
            self.settings.jwt_audience,
            revocations.not_before,
        )
        server = grpc.aio.server(
            interceptors=[*tracing.server_interceptors(), ServiceInterceptor(rules, verifier)],
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ],
        )
        for registration in self.registrations:
            registration.add_to_server(registration.servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = [r.descriptor.full_name for r in self.registrations]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        # Mutual TLS only (DESIGN §13): the one plaintext port, if any, is the
        # probes' (probe_port), which serves nothing but health.
        if server.add_secure_port(self.settings.listen_addr, identity.server_credentials()) == 0:
            raise RuntimeError(f"cannot listen on {self.settings.listen_addr}")
        metrics.serve(self.settings.metrics_port, self.settings.metrics_addr)

        async with contextlib.AsyncExitStack() as workers:
            # Entered first, so left last: liveness answers while the workers stop.
            probes = await workers.enter_async_context(self.probe_port())
            for worker in [revocations.watching(), *self.workers]:
                await workers.enter_async_context(worker)
            await server.start()
            # What starting made (modules, descriptors, pools) lives as long as
            # the process: kept out of the collector's way, a full collection
            # walks only what the calls made, and pauses a call the less.
            gc.freeze()
            for name in ["", *names]:
                await health_servicer.set(name, SERVING)
                if probes:
                    await probes.set(name, SERVING)
            log.info("%s serving on %s", self.settings.service, self.settings.listen_addr)
            try:
                yield server
            finally:
                # Tell health checkers first and keep serving until Envoy has
                # stopped routing here, then take no more calls and drain.
                await health_servicer.enter_graceful_shutdown()
                for name in ["", *names] if probes else ():
                    await probes.set(name, NOT_SERVING)
                log.info("NOT_SERVING; draining for %gs", self.settings.drain_seconds)
                await asyncio.sleep(self.settings.drain_seconds)
                await server.stop(self.settings.shutdown_grace_seconds)
                log.info("%s stopped", self.settings.service)

    @contextlib.asynccontextmanager
    async def probe_port(self) -> AsyncIterator[health.aio.HealthServicer | None]:
        """The plaintext health-only server on <SERVICE>_HEALTH_PORT, if set:
        LIVENESS serves from the start, readiness ("") only once serving() says."""
        if not self.settings.health_port:
            yield None
            return
        probes = health.aio.HealthServicer()
        await probes.set("", NOT_SERVING)  # the servicer starts out SERVING
        await probes.set(LIVENESS, SERVING)
        # No SO_REUSEPORT: a port taken by another process fails here, loudly.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(probes, server)
        addr = f"{self.settings.health_addr}:{self.settings.health_port}"
        if server.add_insecure_port(addr) == 0:
            raise RuntimeError(f"cannot listen on {addr}")
        await server.start()
        log.info("health probes on %s (plaintext)", addr)
        try:
            yield probes
        finally:
            await server.stop(None)

"""`python -m event [serve|migrate]`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from event.api import EventServicer
from event.holds import HoldStore
from event.service import EventUseCases
from runtime import cli, db
from runtime.config import Settings, env_int, grpc_addr
from runtime.identity import RemoteJwks, TokenVerifier
from runtime.server import GrpcService
from ticketing.event.v1 import event_pb2, event_pb2_grpc


@contextlib.asynccontextmanager
async def closing(holds: HoldStore) -> AsyncIterator[HoldStore]:
    try:
        yield holds
    finally:
        await holds.close()


async def build(settings: Settings) -> GrpcService:
    engine = db.async_engine(settings)
    holds = HoldStore.connect(settings.redis_url)
    use_cases = EventUseCases(engine, holds, env_int("HOLD_TTL_SECONDS", 300))
    jwks = RemoteJwks(grpc_addr("auth"))
    service = GrpcService(
        settings, TokenVerifier(jwks.key_for, settings.jwt_issuer, settings.jwt_audience)
    )
    service.add(
        event_pb2.DESCRIPTOR.services_by_name["EventService"],
        event_pb2_grpc.add_EventServiceServicer_to_server,
        EventServicer(use_cases),
    )
    service.workers += [db.disposing(engine), closing(holds)]
    return service


cli.main("event", build)

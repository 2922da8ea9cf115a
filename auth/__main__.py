"""`python -m auth [serve|migrate|keys|rotate-key]`."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from auth.api import AuthServicer
from auth.domain import Passwords
from auth.service import AuthUseCases
from runtime import cli, db
from runtime.config import Settings, env_int, env_str
from runtime.identity import TokenVerifier
from runtime.outbox import OutboxRelay
from runtime.server import GrpcService
from runtime.signing import KeyRing, ensure_key, generate_key
from ticketing.auth.v1 import auth_pb2, auth_pb2_grpc


async def build(settings: Settings) -> GrpcService:
    keys = KeyRing(settings.keys_dir)
    engine = db.async_engine(settings)
    passwords = Passwords(
        time_cost=env_int("ARGON2_TIME_COST", 2), memory_kib=env_int("ARGON2_MEMORY_KIB", 19456)
    )
    # Hashing more passwords at once than there are cores buys no throughput,
    # only memory (ARGON2_MEMORY_KIB apiece): a burst of logins queues instead.
    hashing = ThreadPoolExecutor(
        max_workers=env_int("ARGON2_WORKERS", os.cpu_count() or 1), thread_name_prefix="argon2"
    )
    use_cases = AuthUseCases(
        engine, keys, passwords, hashing, settings.jwt_issuer, settings.jwt_audience
    )
    await use_cases.ensure_admin(
        env_str("ADMIN_EMAIL", "admin@example.com"), env_str("ADMIN_PASSWORD", "admin-change-me")
    )

    async def local_key(kid: str) -> object | None:
        return keys.public_key(kid)

    service = GrpcService(
        settings, TokenVerifier(local_key, settings.jwt_issuer, settings.jwt_audience)
    )
    service.add(
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(use_cases, keys),
    )
    service.workers += [db.disposing(engine), OutboxRelay(settings.database_url, settings.amqp_url)]
    return service


cli.main(
    "auth",
    build,
    {
        "keys": lambda settings: ensure_key(settings.keys_dir),
        "rotate-key": lambda settings: print(generate_key(settings.keys_dir)),
    },
)

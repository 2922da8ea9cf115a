"""`python -m auth [serve|migrate|keys|rotate-key]`."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from auth.api import AuthServicer
from auth.domain import Passwords
from auth.service import AuthUseCases
from auth.settings import AuthSettings
from auth.throttle import LoginThrottle
from runtime import cli, db
from runtime.outbox import OutboxRelay
from runtime.revocation import RevocationBook
from runtime.server import GrpcService
from runtime.signing import KeyRing, ensure_key, generate_key
from ticketing.auth.v1 import auth_pb2, auth_pb2_grpc


async def build(settings: AuthSettings) -> GrpcService:
    keys = KeyRing(settings.keys_dir)
    engine = db.async_engine(settings)
    passwords = Passwords(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    hashing = ThreadPoolExecutor(max_workers=settings.argon2_workers, thread_name_prefix="argon2")
    throttle = LoginThrottle.connect(settings.redis_url, settings.throttle)
    revocations = RevocationBook(settings.redis_url)
    use_cases = AuthUseCases(
        engine,
        keys,
        passwords,
        hashing,
        throttle,
        revocations,
        settings.jwt_issuer,
        settings.jwt_audience,
    )
    await use_cases.ensure_admin(settings.admin_email, settings.admin_password)

    async def local_key(kid: str) -> object | None:
        return keys.public_key(kid)

    service = GrpcService(settings, token_keys=local_key)
    service.add(
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(use_cases, keys),
    )
    service.workers += [
        db.disposing(engine),
        contextlib.aclosing(throttle),
        contextlib.aclosing(revocations),
        OutboxRelay(settings.database_url, settings.amqp_url),
    ]
    return service


cli.main(
    "auth",
    AuthSettings,
    build,
    {
        "keys": lambda settings: ensure_key(settings.keys_dir),
        "rotate-key": lambda settings: print(generate_key(settings.keys_dir)),
    },
)

"""`python -m auth [serve|migrate|keys|rotate-key]`."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from auth.api import AuthServicer
from auth.codes import CodeHasher, SendLimiter, ensure_code_key
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
    sends = SendLimiter.connect(settings.redis_url, settings.code_sends)
    use_cases = AuthUseCases(
        engine,
        keys,
        passwords,
        hashing,
        throttle,
        revocations,
        settings.jwt_issuer,
        settings.jwt_audience,
        codes=CodeHasher(ensure_code_key(settings.keys_dir)),
        sends=sends,
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
        contextlib.aclosing(sends),
        OutboxRelay(settings.database_url, settings.amqp_url),
    ]
    return service


def make_keys(settings: AuthSettings) -> None:
    """The signing key and the code key, each made if missing."""
    ensure_key(settings.keys_dir)
    ensure_code_key(settings.keys_dir)


cli.main(
    "auth",
    AuthSettings,
    build,
    {
        "keys": make_keys,
        "rotate-key": lambda settings: print(generate_key(settings.keys_dir)),
    },
)

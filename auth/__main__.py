"""`python -m auth [serve|migrate|keys|rotate-key]`."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

from auth.api import AuthServicer
from auth.domain import Passwords
from auth.service import AuthUseCases
from auth.throttle import LoginThrottle, ThrottlePolicy
from runtime import cli, db
from runtime.config import Settings, env_float, env_int, env_str
from runtime.outbox import OutboxRelay
from runtime.revocation import RevocationBook
from runtime.server import GrpcService
from runtime.signing import KeyRing, ensure_key, generate_key
from ticketing.auth.v1 import auth_pb2, auth_pb2_grpc

# The README's development admin password: anyone can read it, so nothing
# but a developer's own machine may run with it.
DEFAULT_ADMIN_PASSWORD = "admin-change-me"


def admin_password(settings: Settings) -> str:
    password = env_str("ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD)
    if settings.environment != "development" and password == DEFAULT_ADMIN_PASSWORD:
        raise SystemExit(
            f"auth: refusing to start in ENVIRONMENT={settings.environment} with the documented "
            "default admin password; set ADMIN_PASSWORD to a secret one"
        )
    return password


async def build(settings: Settings) -> GrpcService:
    password = admin_password(settings)
    keys = KeyRing(settings.keys_dir)
    engine = db.async_engine(settings)
    passwords = Passwords(
        time_cost=env_int("ARGON2_TIME_COST", 2), memory_kib=env_int("ARGON2_MEMORY_KIB", 19456)
    )
    # Hashing more passwords at once than there are cores buys no throughput,
    # only memory (ARGON2_MEMORY_KIB apiece): a burst of logins queues instead.
    # Half the cores, so a login rush cannot take the CPU a sale needs.
    hashing = ThreadPoolExecutor(
        max_workers=env_int("ARGON2_WORKERS", max(1, (os.cpu_count() or 1) // 2)),
        thread_name_prefix="argon2",
    )
    throttle = LoginThrottle.connect(
        settings.redis_url,
        ThrottlePolicy(
            free_attempts=env_int("LOGIN_FREE_ATTEMPTS", 5),
            base_delay_seconds=env_float("LOGIN_DELAY_BASE_SECONDS", 1.0),
            max_delay_seconds=env_float("LOGIN_DELAY_MAX_SECONDS", 900.0),
        ),
    )
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
    await use_cases.ensure_admin(env_str("ADMIN_EMAIL", "admin@example.com"), password)

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
    build,
    {
        "keys": lambda settings: ensure_key(settings.keys_dir),
        "rotate-key": lambda settings: print(generate_key(settings.keys_dir)),
    },
)

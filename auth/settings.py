"""The auth service's settings, read and checked once at start."""

from __future__ import annotations

import os
from dataclasses import dataclass

from auth.codes import SendPolicy
from auth.throttle import ThrottlePolicy
from runtime.config import Env, Settings, common

# The README's development admin password: anyone can read it, so nothing
# but a developer's own machine may run with it.
DEFAULT_ADMIN_PASSWORD = "admin-change-me"


@dataclass(frozen=True)
class AuthSettings(Settings):
    admin_email: str
    admin_password: str
    argon2_time_cost: int
    argon2_memory_kib: int
    # Hashing more passwords at once than there are cores buys no throughput,
    # only memory (ARGON2_MEMORY_KIB apiece): a burst of logins queues instead.
    # Half the cores by default, so a login rush cannot take the CPU a sale needs.
    argon2_workers: int
    throttle: ThrottlePolicy
    code_sends: SendPolicy  # emailed codes per address (auth.codes)

    @classmethod
    def read(cls, service: str, env: Env) -> AuthSettings:
        base = common(service, env)
        password = env.text("ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD)
        if base["environment"] != "development" and password == DEFAULT_ADMIN_PASSWORD:
            env.refuse(
                "ADMIN_PASSWORD",
                f"is the documented default, refused in ENVIRONMENT={base['environment']}; "
                "set ADMIN_PASSWORD to a secret one",
            )
        defaults = ThrottlePolicy()
        base_delay = env.number("LOGIN_DELAY_BASE_SECONDS", defaults.base_delay_seconds, above=0)
        return cls(
            **base,
            admin_email=env.text("ADMIN_EMAIL", "admin@example.com"),
            admin_password=password,
            argon2_time_cost=env.integer("ARGON2_TIME_COST", 2, minimum=1),
            argon2_memory_kib=env.integer("ARGON2_MEMORY_KIB", 19456, minimum=8),
            argon2_workers=env.integer(
                "ARGON2_WORKERS", max(1, (os.cpu_count() or 1) // 2), minimum=1
            ),
            throttle=ThrottlePolicy(
                free_attempts=env.integer("LOGIN_FREE_ATTEMPTS", defaults.free_attempts, minimum=0),
                base_delay_seconds=base_delay,
                max_delay_seconds=env.number(
                    "LOGIN_DELAY_MAX_SECONDS", defaults.max_delay_seconds, minimum=base_delay
                ),
            ),
            code_sends=SendPolicy(
                interval_seconds=env.number(
                    "CODE_RESEND_INTERVAL_SECONDS", SendPolicy.interval_seconds, above=0
                ),
                per_hour=env.integer("CODE_SENDS_PER_HOUR", SendPolicy.per_hour, minimum=1),
            ),
        )

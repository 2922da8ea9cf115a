"""Configuration from environment variables, with localhost defaults.

Every setting has a default that works on a developer machine with the
backing services on their standard ports, so `python -m auth` just runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("auth", "booking", "event", "payment", "notification")
DEFAULT_PORTS = {
    "auth": 3001,
    "booking": 3002,
    "event": 3003,
    "payment": 3004,
    "notification": 3005,
}
# Emails can wait a moment; a buyer at the checkout cannot.
DEFAULT_NICE = {"notification": 10}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def grpc_addr(service: str) -> str:
    """Where `service` is reached, e.g. AUTH_GRPC_ADDR=127.0.0.1:3001.

    A comma-separated list names several replicas (EVENT_GRPC_ADDR=
    127.0.0.1:3003,127.0.0.1:3013); Envoy and the gRPC clients balance over them.
    """
    return env_str(f"{service.upper()}_GRPC_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}")


def grpc_target(service: str) -> str:
    """A gRPC channel target for `service`: one address, or all of its replicas."""
    addresses = [a.strip() for a in grpc_addr(service).split(",") if a.strip()]
    return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)


# Spread calls over every replica of a target, not just the first that answers.
CLIENT_CHANNEL_OPTIONS = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 20_000),
)


@dataclass(frozen=True)
class Settings:
    service: str
    listen_addr: str
    database_url: str
    redis_url: str
    amqp_url: str
    jwt_issuer: str
    jwt_audience: str
    keys_dir: Path
    log_level: str
    shutdown_grace_seconds: float
    db_pool_size: int
    metrics_port: int  # Prometheus /metrics; 0 turns it off
    event_loop: str  # "uvloop" or "asyncio"
    nice: int  # added to the process's niceness: >0 yields the CPU to other services
    # "development" (make up, the tests) or anything else for a real deployment,
    # where development conveniences (the default admin password) are refused.
    environment: str

    @classmethod
    def load(cls, service: str) -> Settings:
        prefix = service.upper()
        pg = env_str("PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
        return cls(
            service=service,
            # A replica listens on its own address; peers reach all of them.
            listen_addr=env_str("GRPC_LISTEN_ADDR", grpc_addr(service).split(",")[0]),
            database_url=env_str(f"{prefix}_DATABASE_URL", f"{pg}/{service}"),
            redis_url=env_str("REDIS_URL", "redis://127.0.0.1:6379/0"),
            amqp_url=env_str("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
            jwt_issuer=env_str("JWT_ISSUER", "ticketing-auth"),
            jwt_audience=env_str("JWT_AUDIENCE", "ticketing"),
            keys_dir=Path(env_str("AUTH_KEYS_DIR", str(REPO_ROOT / "var" / "keys"))),
            log_level=env_str("LOG_LEVEL", "INFO"),
            shutdown_grace_seconds=env_float("SHUTDOWN_GRACE_SECONDS", 10.0),
            # Async handlers need few connections; PostgreSQL allows 100 in all.
            db_pool_size=env_int("DB_POOL_SIZE", 5),
            metrics_port=env_int(f"{prefix}_METRICS_PORT", DEFAULT_PORTS[service] + 6100),
            event_loop=env_str("EVENT_LOOP", "uvloop"),
            nice=env_int(f"{prefix}_NICE", DEFAULT_NICE.get(service, 0)),
            environment=env_str("ENVIRONMENT", "development"),
        )

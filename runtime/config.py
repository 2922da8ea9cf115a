"""Configuration from environment variables, with localhost defaults.

Every setting has a default that works on a developer machine with the
backing services on their standard ports, so `python -m auth` just runs.
Each service reads all of its settings once, at start, into one typed object
(`Settings`, extended per service); a bad value stops the process with a
message naming the variable (`ConfigError`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from runtime import tracing
from runtime.retry import RetryPolicy

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
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
T = TypeVar("T", int, float)


class ConfigError(Exception):
    """Settings that do not hold: the process must not start with them."""


class Env:
    """Reads settings from environment variables, each typed and checked.

    Every bad value is collected, and `check()` then fails once naming them all,
    so a misconfigured process says everything that is wrong before it starts.
    An empty variable counts as unset.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._problems: list[str] = []

    def _raw(self, name: str) -> str | None:
        raw = self._environ.get(name)
        return None if raw in (None, "") else raw

    def _refuse(self, name: str, raw: str, why: str) -> None:
        self._problems.append(f"{name}={raw!r} {why}")

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def integer(
        self, name: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self._refuse(name, raw, "is not a whole number")
            return default
        return self._in_range(name, raw, value, minimum, maximum, default)

    def number(
        self,
        name: str,
        default: float,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """A number; `above` is an exclusive lower bound (a timeout above 0)."""
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self._refuse(name, raw, "is not a number")
            return default
        if not math.isfinite(value):
            self._refuse(name, raw, "is not a finite number")
            return default
        if above is not None and value <= above:
            self._refuse(name, raw, f"must be more than {above:g}")
            return default
        return self._in_range(name, raw, value, minimum, maximum, default)

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        self._refuse(name, raw, "must be true or false")
        return default

    def choice(
        self, name: str, default: str, choices: Sequence[str], ignore_case: bool = False
    ) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        value = raw.upper() if ignore_case else raw
        if value not in choices:
            self._refuse(name, raw, f"must be one of {', '.join(choices)}")
            return default
        return value

    def address(self, name: str, default: str) -> str:
        """host:port, or a comma-separated list of them (replicas)."""
        value = self.text(name, default)
        for one in value.split(","):
            host, _, port = one.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                self._refuse(name, value, "must be host:port (a comma-separated list for replicas)")
                return default
        return value

    def refuse(self, name: str, why: str) -> None:
        """A problem no single reading can see: a value wrong given another."""
        self._problems.append(f"{name} {why}")

    def check(self) -> None:
        if self._problems:
            raise ConfigError("; ".join(self._problems))

    def _in_range(
        self,
        name: str,
        raw: str,
        value: T,
        minimum: T | None,
        maximum: T | None,
        default: T,
    ) -> T:
        if minimum is not None and value < minimum:  # type: ignore[operator]
            self._refuse(name, raw, f"must be at least {minimum}")
            return default
        if maximum is not None and value > maximum:  # type: ignore[operator]
            self._refuse(name, raw, f"must be at most {maximum}")
            return default
        return value


def grpc_addr(service: str, env: Env | None = None) -> str:
    """Where `service` is reached, e.g. AUTH_GRPC_ADDR=127.0.0.1:3001.

    A comma-separated list names several replicas (EVENT_GRPC_ADDR=
    127.0.0.1:3003,127.0.0.1:3013); Envoy and the gRPC clients balance over them.
    """
    reader = env or Env()
    addr = reader.address(f"{service.upper()}_GRPC_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}")
    if env is None:  # read on its own: a bad value fails here, not later
        reader.check()
    return addr


def grpc_target(service: str, env: Env | None = None) -> str:
    """A gRPC channel target for `service`: one address, or all of its replicas."""
    addresses = [a.strip() for a in grpc_addr(service, env).split(",") if a.strip()]
    return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)


def ticket_keys_dir(env: Env) -> Path:
    """TICKET_KEYS_DIR: notification signs the emailed tickets with these keys,
    booking the tickets it hands out, and checks them in at the door."""
    return Path(env.text("TICKET_KEYS_DIR", str(REPO_ROOT / "var" / "keys" / "tickets")))


def hold_ttl_seconds(env: Env) -> int:
    """HOLD_TTL_SECONDS, which event enforces and booking plans its sweep by."""
    return env.integer("HOLD_TTL_SECONDS", 300, minimum=1, maximum=24 * 3600)


def require_verified_email(env: Env) -> bool:
    """REQUIRE_VERIFIED_EMAIL: whether holding and booking need a verified email
    (off by default, so accounts made before verification existed still book)."""
    return env.flag("REQUIRE_VERIFIED_EMAIL", False)


def retry_policy(env: Env) -> RetryPolicy:
    """The booking saga's calls (runtime.retry), as booking runs them and Envoy
    times the routes that run them."""
    default = RetryPolicy()
    return RetryPolicy(
        call_timeout_seconds=env.number(
            "DOWNSTREAM_TIMEOUT_SECONDS", default.call_timeout_seconds, above=0
        ),
        retry_window_seconds=env.number(
            "RETRY_WINDOW_SECONDS", default.retry_window_seconds, minimum=0
        ),
        first_backoff_seconds=env.number(
            "RETRY_BACKOFF_SECONDS", default.first_backoff_seconds, minimum=0
        ),
        retry_reply_seconds=env.number("RETRY_REPLY_SECONDS", default.retry_reply_seconds, above=0),
    )


# Spread calls over every replica of a target, not just the first that answers;
# and reconnect to a peer that restarted within a second, not after gRPC's
# default backoff (up to two minutes), so a restart costs only its own seconds.
CLIENT_CHANNEL_OPTIONS = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)


S = TypeVar("S", bound="Settings")


@dataclass(frozen=True)
class Settings:
    """What every service needs; each service's own settings extend it."""

    service: str
    listen_addr: str
    database_url: str
    redis_url: str
    amqp_url: str
    auth_target: str  # where the JWKS comes from
    jwt_issuer: str
    jwt_audience: str
    keys_dir: Path
    log_level: str
    shutdown_grace_seconds: float
    drain_seconds: float  # NOT_SERVING before it stops listening, so Envoy routes elsewhere
    db_pool_size: int
    metrics_port: int  # Prometheus /metrics; 0 turns it off
    metrics_addr: str
    # grpc.health.v1 alone, in plaintext, for probes that cannot present a mesh
    # certificate (a kubelet's); 0 turns it off.
    health_port: int
    health_addr: str
    event_loop: str  # "uvloop" or "asyncio"
    nice: int  # added to the process's niceness: >0 yields the CPU to other services
    # "development" (make up, the tests) or anything else for a real deployment,
    # where development conveniences (the default admin password) are refused.
    environment: str
    # Where traces go (runtime.tracing), "" for nowhere: OTEL_EXPORTER_OTLP_ENDPOINT.
    otlp_endpoint: str

    @classmethod
    def load(cls: type[S], service: str, environ: Mapping[str, str] | None = None) -> S:
        """The service's settings from the environment; ConfigError naming every
        variable that is wrong."""
        env = Env(environ)
        settings = cls.read(service, env)
        env.check()
        return settings

    @classmethod
    def read(cls: type[S], service: str, env: Env) -> S:
        """Override to add a service's own settings to `common(service, env)`."""
        return cls(**common(service, env))


def common(service: str, env: Env) -> dict[str, Any]:
    prefix = service.upper()
    pg = env.text("PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
    return {
        "service": service,
        # A replica listens on its own address; peers reach all of them.
        "listen_addr": env.address("GRPC_LISTEN_ADDR", grpc_addr(service, env).split(",")[0]),
        "database_url": env.text(f"{prefix}_DATABASE_URL", f"{pg}/{service}"),
        "redis_url": env.text("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "amqp_url": env.text("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        "auth_target": grpc_target("auth", env),
        "jwt_issuer": env.text("JWT_ISSUER", "ticketing-auth"),
        "jwt_audience": env.text("JWT_AUDIENCE", "ticketing"),
        "keys_dir": Path(env.text("AUTH_KEYS_DIR", str(REPO_ROOT / "var" / "keys"))),
        "log_level": env.choice("LOG_LEVEL", "INFO", LOG_LEVELS, ignore_case=True),
        "shutdown_grace_seconds": env.number("SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0),
        # Two of Envoy's health-check intervals (envoy/render.py): it has asked,
        # heard NOT_SERVING and stopped routing here before the listener closes.
        "drain_seconds": env.number("DRAIN_SECONDS", 2.0, minimum=0),
        # Async handlers need few connections; PostgreSQL allows 100 in all.
        "db_pool_size": env.integer("DB_POOL_SIZE", 5, minimum=1, maximum=100),
        "metrics_port": env.integer(
            f"{prefix}_METRICS_PORT", DEFAULT_PORTS[service] + 6100, minimum=0, maximum=65535
        ),
        "metrics_addr": env.text("METRICS_LISTEN_ADDRESS", "127.0.0.1"),
        "health_port": env.integer(f"{prefix}_HEALTH_PORT", 0, minimum=0, maximum=65535),
        "health_addr": env.text("HEALTH_LISTEN_ADDRESS", "127.0.0.1"),
        "event_loop": env.choice("EVENT_LOOP", "uvloop", ("uvloop", "asyncio")),
        "nice": env.integer(f"{prefix}_NICE", DEFAULT_NICE.get(service, 0), minimum=0, maximum=19),
        "environment": env.text("ENVIRONMENT", "development"),
        "otlp_endpoint": tracing.endpoint(env),
    }

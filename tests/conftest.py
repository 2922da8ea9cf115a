"""The test mesh: every service, Envoy and an SMTP sink as real processes on
free ports, against the real PostgreSQL, Redis and RabbitMQ.

Tests get their own databases (ticketing_test_*), Redis database 15 and
RabbitMQ vhost `ticketing_test`, so they can run beside `make up`. Set
TEST_NAMESPACE (and TEST_REDIS_DB) to run two test sessions side by side,
and TEST_REPLICAS=2 to run event and booking as two processes each. The mesh has
its own CA and workload certificates in its state directory (TLS_DIR).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from scripts.mail_sink import MailSink
from scripts.mesh import (
    PYTHON,
    SCALED_SERVICES,
    SERVICES,
    Mesh,
    ensure_backing_services,
    free_port,
)
from scripts.otlp_receiver import OtlpReceiver
from tests.support import Edge, mint_token

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
NAMESPACE = os.environ.get("TEST_NAMESPACE", "ticketing_test")
REDIS_DB = os.environ.get("TEST_REDIS_DB", "15")
# TEST_REPLICAS=2 runs the event and booking services as two processes each.
REPLICAS = int(os.environ.get("TEST_REPLICAS", "1"))
TEST_VHOST = NAMESPACE
ADMIN_EMAIL = "admin@test.example.com"
ADMIN_PASSWORD = "admin-test-password"


def _fresh_databases() -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        for service in SERVICES:
            conn.execute(f'DROP DATABASE IF EXISTS "{NAMESPACE}_{service}" WITH (FORCE)')


def _fresh_vhost() -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([ctl, "-q", "delete_vhost", TEST_VHOST], capture_output=True, check=False)
    subprocess.run([ctl, "-q", "add_vhost", TEST_VHOST], check=True, capture_output=True)
    subprocess.run(
        [ctl, "-q", "set_permissions", "-p", TEST_VHOST, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def mail_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSink]:
    """The SMTP server the notification service sends to, in-process so tests can
    read what arrived, and stop it to play an outage. It keeps each email as a
    file too, as `make up`'s does, for the client scripts that read codes."""
    sink = MailSink(free_port(), tmp_path_factory.mktemp("mail")).start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Where the mesh's services and Envoy send their traces, in-process: it
    counts every span and keeps those of the traces a test watches."""
    receiver = OtlpReceiver(free_port(), keep=False).start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, mail_sink: MailSink, otlp_receiver: OtlpReceiver
) -> Iterator[Mesh]:
    ensure_backing_services()
    _fresh_databases()
    _fresh_vhost()
    state = tmp_path_factory.mktemp("mesh")
    env = {
        "PG_URL": PG,
        "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{TEST_VHOST}",
        "AUTH_KEYS_DIR": str(state / "keys"),
        "TICKET_KEYS_DIR": str(state / "ticket-keys"),
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "EDGE_PORT": str(free_port()),
        "EDGE_ADMIN_PORT": str(free_port()),
        "SMTP_PORT": str(mail_sink.port),
        "SHUTDOWN_GRACE_SECONDS": "2",
        "LOG_LEVEL": "DEBUG",  # every RPC in the logs, as a test may look for one
        "JWKS_CACHE_SECONDS": "2",  # so the key rotation test need not wait long
        "AUTH_RATE_LIMIT_PER_MINUTE": "100000",  # the tests register many users
        # A code may be sent again after 1 s, not 60, so the tests need not wait.
        "CODE_RESEND_INTERVAL_SECONDS": "1",
        "TLS_DIR": str(state / "tls"),
        # Traced, as a deployment with a collector is: the tests exercise the
        # tracing interceptors too (tracing costs the suite no measurable time).
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
    }
    for service in SERVICES:
        env[f"{service.upper()}_DATABASE_URL"] = f"{PG}/{NAMESPACE}_{service}"
        env[f"{service.upper()}_GRPC_ADDR"] = f"127.0.0.1:{free_port()}"
        env[f"{service.upper()}_METRICS_PORT"] = str(free_port())
    running = Mesh(state, env)
    for service in SCALED_SERVICES if REPLICAS > 1 else ():
        running.scale(service, REPLICAS, [free_port() for _ in range(REPLICAS)])
    running.run(PYTHON, "-m", "runtime.certs", "--dir", env["TLS_DIR"])
    running.run(PYTHON, "-m", "auth", "keys")
    running.run(PYTHON, "-m", "notification", "keys")
    running.migrate()
    try:
        for service in running.implemented():
            running.start_all(service)
        running.start_envoy()
        yield running
    finally:
        running.stop_all()


@pytest.fixture(scope="session")
def edge(mesh: Mesh) -> Edge:
    return Edge(f"http://127.0.0.1:{mesh.env['EDGE_PORT']}")


@pytest.fixture(scope="session")
def auth_channel(mesh: Mesh) -> Iterator[grpc.Channel]:
    with mesh.channel("auth") as channel:
        yield channel


@pytest.fixture(scope="session")
def keys_dir(mesh: Mesh) -> Path:
    return Path(mesh.env["AUTH_KEYS_DIR"])


@pytest.fixture(scope="module")
def organizer_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def organizer(keys_dir: Path, organizer_id: str) -> str:
    """An organizer's access token, minted for this module's organizer_id."""
    return mint_token(keys_dir, role="organizer", user_id=organizer_id)


@pytest.fixture(scope="session")
def event_channel(mesh: Mesh) -> Iterator[grpc.Channel]:
    with mesh.channel("event") as channel:
        yield channel


@pytest.fixture(scope="session")
def event_channel_as_booking(mesh: Mesh) -> Iterator[grpc.Channel]:
    """The event service as the booking service reaches it: the only workload
    allowed to call the hold and sale RPCs."""
    with mesh.channel("event", "booking") as channel:
        yield channel

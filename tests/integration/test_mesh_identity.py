"""Mesh identity (DESIGN §13) against the real services: every RPC takes calls
only from the workloads its contract names, and without a certificate from
the mesh's CA there is no connection at all."""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime import certs, tls
from runtime.contracts import PROTO_SERVICES
from runtime.interceptor import access_rules
from runtime.status import error_details
from scripts.mesh import Mesh
from tests.conftest import REPLICAS
from tests.support import Edge, book, event_body, fails, mint_token

RULES = {
    (service, path): rule
    for service, descriptor in PROTO_SERVICES.items()
    for path, rule in access_rules([descriptor]).items()
}


@pytest.fixture(scope="module")
def channel_as(mesh: Mesh) -> Iterator[Callable[[str, str], grpc.Channel]]:
    """channel_as(service, workload): one channel per pair, kept for the module."""
    opened: dict[tuple[str, str], grpc.Channel] = {}

    def channel(service: str, workload: str) -> grpc.Channel:
        if (service, workload) not in opened:
            opened[service, workload] = mesh.channel(service, workload)
        return opened[service, workload]

    yield channel
    for each in opened.values():
        each.close()


def caller_refused(channel: grpc.Channel, path: str, metadata: tuple = ()) -> bool:
    """Whether `path`, called with an empty request, is refused for who calls."""
    try:
        channel.unary_unary(path)(b"", timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        return (
            error.code() is grpc.StatusCode.PERMISSION_DENIED
            and error_details(error).reason == "CALLER_NOT_ALLOWED"
        )
    return False


@pytest.mark.parametrize(("service", "path"), sorted(RULES), ids=lambda v: v.rsplit("/", 1)[-1])
def test_only_the_named_workloads_may_call(channel_as, keys_dir: Path, service, path) -> None:
    callers = RULES[(service, path)].callers
    # An admin's token, so that nothing but the caller's identity is refused.
    admin = (("authorization", f"Bearer {mint_token(keys_dir, role='admin')}"),)
    for workload in tls.WORKLOADS:
        refused = caller_refused(channel_as(service, workload), path, admin)
        assert refused is (workload not in callers), f"{workload} calling {path}"


@pytest.mark.parametrize(
    "path",
    [
        "/ticketing.event.v1.EventService/LockSeat",
        "/ticketing.event.v1.EventService/ReleaseSeat",
        "/ticketing.event.v1.EventService/ConfirmSeats",
        "/ticketing.event.v1.EventService/ReturnSeats",
        "/ticketing.payment.v1.PaymentService/Charge",
        "/ticketing.payment.v1.PaymentService/Refund",
        "/ticketing.payment.v1.PaymentService/LookupPayment",
    ],
)
def test_internal_rpcs_are_booking_only(mesh: Mesh, path: str) -> None:
    service = "event" if "EventService" in path else "payment"
    with mesh.channel(service, "booking") as booking:
        # An empty request is bad input: booking got past the caller check.
        error = error_details(fails(booking.unary_unary(path), b"", timeout=10))
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    for workload in ("developer", "edge", "event" if service == "payment" else "payment"):
        with mesh.channel(service, workload) as other:
            error = error_details(fails(other.unary_unary(path), b"", timeout=10))
        assert (error.code, error.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "CALLER_NOT_ALLOWED",
        )
        assert error.metadata["caller"] == workload


def health(channel: grpc.Channel) -> health_pb2.HealthCheckResponse:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


@pytest.mark.parametrize("service", sorted(PROTO_SERVICES))
def test_no_connection_without_a_certificate_from_the_mesh_ca(
    mesh: Mesh, tmp_path: Path, service: str
) -> None:
    with mesh.channel(service) as developer:
        assert health(developer).status == health_pb2.HealthCheckResponse.SERVING
    target = mesh.target(service)
    with grpc.insecure_channel(target) as plaintext:
        assert fails(health, plaintext).code() is grpc.StatusCode.UNAVAILABLE
    # TLS that trusts the server but presents no client certificate.
    anonymous = grpc.ssl_channel_credentials(mesh.identity().ca.read_bytes())
    options = tls.channel_options(service, ())
    with grpc.secure_channel(target, anonymous, options=options) as channel:
        assert fails(health, channel).code() is grpc.StatusCode.UNAVAILABLE
    # A certificate with the right SPIFFE id, from another CA.
    certs.ensure(tmp_path)
    forged = tls.TlsFiles(mesh.identity().ca, tmp_path / "booking.pem", tmp_path / "booking.key")
    with tls.channel(target, service, forged) as channel:
        assert fails(health, channel).code() is grpc.StatusCode.UNAVAILABLE


def test_a_client_refuses_a_server_with_another_services_certificate(mesh: Mesh) -> None:
    """Booking dials event by its name: a process answering on event's address
    with payment's certificate is not event."""
    with tls.channel(mesh.addr("payment").split(",")[0], "event", mesh.identity()) as channel:
        assert fails(health, channel).code() is grpc.StatusCode.UNAVAILABLE


def established(pid: int, port: int) -> int:
    """How many TCP connections process `pid` holds to 127.0.0.1:`port`."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            sockets.add(os.readlink(fd).removeprefix("socket:[").removesuffix("]"))
    count = 0
    # gRPC's sockets are dual-stack: 127.0.0.1 appears as ::ffff:127.0.0.1 in tcp6.
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port, state, inode = int(fields[2].split(":")[1], 16), fields[3], fields[9]
            count += remote_port == port and state == "01" and inode in sockets
    return count


def envoy_counter(mesh: Mesh, name: str) -> int:
    url = f"http://127.0.0.1:{mesh.env['EDGE_ADMIN_PORT']}/stats?filter=^{name}$"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return int(reply.read().decode().split(":")[1])


def test_connections_are_made_once_and_reused(mesh: Mesh, edge: Edge, keys_dir: Path) -> None:
    """A TLS handshake per call would cost more than the call: booking keeps one
    connection to each peer, and Envoy keeps its upstream connections."""
    buyer = mint_token(keys_dir)
    organizer = mint_token(keys_dir, role="organizer")
    event = edge.post("/v1/events", event_body(tiers=[("TIER_STANDARD", 100, 2, 10)]), organizer)
    assert event.status == 200, event.body
    connections_before = envoy_counter(mesh, "cluster.booking.upstream_cx_total")
    requests_before = envoy_counter(mesh, "cluster.booking.upstream_rq_total")
    for number in range(1, 11):
        booked = book(edge, buyer, event.body["event_id"], [f"standard-1-{number}"])
        assert booked.status == 200, booked.body
    assert envoy_counter(mesh, "cluster.booking.upstream_rq_total") - requests_before == 10
    # At most one new connection per Envoy worker and booking process, however many
    # requests went through.
    most = envoy_counter(mesh, "server.concurrency") * len(mesh.addr("booking").split(","))
    assert envoy_counter(mesh, "cluster.booking.upstream_cx_total") - connections_before <= most
    if REPLICAS == 1:  # with replicas booking holds one connection per event process
        booking = mesh.processes["booking"].pid
        for peer in ("event", "payment"):
            port = int(mesh.addr(peer).rsplit(":", 1)[1])
            assert established(booking, port) == 1, peer

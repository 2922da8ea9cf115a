"""Envoy as the gateway: rate limits, CORS, gRPC-Web, native gRPC, body limits,
request ids, JWT key rotation, and the OpenAPI document it serves."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from runtime.signing import generate_key
from runtime.status import ERROR_DOMAIN
from scripts.mesh import REPO, Mesh
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.test_auth_http import assert_error
from tests.support import (
    Edge,
    create_event_grpc,
    login,
    register_and_login,
    start_second_edge,
    unique_email,
    wait_for,
)
from ticketing.auth.v1 import auth_pb2, auth_pb2_grpc
from ticketing.event.v1 import event_pb2, event_pb2_grpc


@pytest.fixture(scope="module")
def strict_edge(mesh: Mesh) -> Edge:
    """A second Envoy with a login/register limit of 3 a minute."""
    yield start_second_edge(mesh, "envoy-strict", AUTH_RATE_LIMIT_PER_MINUTE="3")
    mesh.stop("envoy-strict")


def test_login_and_register_are_rate_limited(strict_edge: Edge) -> None:
    # A fresh email each run: the auth service slows down an account's failed
    # logins itself, and Redis remembers them across test runs.
    email = unique_email("limited")
    attempts = [
        strict_edge.post("/v1/auth/login", {"email": email, "password": "nope"}) for _ in range(5)
    ]
    assert [a.status for a in attempts[:3]] == [401, 401, 401]
    assert_error(attempts[4], 429)
    # Other routes are not limited.
    assert all(strict_edge.get("/v1/auth/jwks").status == 200 for _ in range(5))


def login_from(edge: Edge, source: str, email: str, headers: dict[str, str] | None = None) -> int:
    """A failed login's status, sent from the loopback address `source`."""
    host, port = edge.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    body = json.dumps({"email": email, "password": "not-the-password"})
    connection.request(
        "POST",
        "/v1/auth/login",
        body,
        {"content-type": "application/json", **(headers or {})},
    )
    status = connection.getresponse().status
    connection.close()
    return status


def test_the_login_limit_is_per_client_address(strict_edge: Edge) -> None:
    flooded = [login_from(strict_edge, "127.0.0.3", unique_email("flood")) for _ in range(5)]
    assert flooded[:3] == [401, 401, 401] and flooded[4] == 429
    # Claiming another address in x-forwarded-for does not reset the count:
    # the edge trusts no proxy in front of it unless told to (EDGE_TRUSTED_HOPS).
    spoofed = {"x-forwarded-for": "203.0.113.7"}
    assert login_from(strict_edge, "127.0.0.3", unique_email("flood"), spoofed) == 429
    # Another client is not locked out by the flood.
    assert login_from(strict_edge, "127.0.0.2", unique_email("other")) == 401


def preflight(edge: Edge, origin: str) -> dict[str, str]:
    return edge.call(
        "OPTIONS",
        "/v1/bookings",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type",
        },
    ).headers


def test_cors_allows_the_configured_origins_only(edge: Edge) -> None:
    allowed = preflight(edge, "http://localhost:3000")
    assert allowed.get("access-control-allow-origin") == "http://localhost:3000"
    assert "authorization" in allowed.get("access-control-allow-headers", "")
    assert "access-control-allow-origin" not in preflight(edge, "https://evil.example.com")


def grpc_web_call(edge: Edge, path: str, request: bytes) -> tuple[int, bytes, dict[str, str]]:
    frame = b"\x00" + len(request).to_bytes(4, "big") + request
    http = urllib.request.Request(
        edge.base_url + path,
        data=frame,
        method="POST",
        headers={
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "origin": "http://localhost:3000",
        },
    )
    with urllib.request.urlopen(http, timeout=10) as reply:
        body, headers = reply.read(), {k.lower(): v for k, v in reply.headers.items()}
    message, trailers = b"", {}
    while body:
        flag, size = body[0], int.from_bytes(body[1:5], "big")
        payload, body = body[5 : 5 + size], body[5 + size :]
        if flag & 0x80:
            trailers = dict(line.split(":", 1) for line in payload.decode().strip().split("\r\n"))
        else:
            message = payload
    return int(trailers.get("grpc-status", headers.get("grpc-status", "-1"))), message, headers


def test_grpc_web_reaches_the_services(edge: Edge) -> None:
    status, message, headers = grpc_web_call(
        edge,
        "/ticketing.auth.v1.AuthService/GetJwks",
        auth_pb2.GetJwksRequest().SerializeToString(),
    )
    assert status == 0
    assert auth_pb2.JwkSet.FromString(message).keys
    assert headers["access-control-allow-origin"] == "http://localhost:3000"


def test_native_grpc_through_envoy_and_internal_rpcs_unreachable(
    mesh: Mesh, organizer: str
) -> None:
    with mesh.channel("event") as direct:
        created = create_event_grpc(event_pb2_grpc.EventServiceStub(direct), organizer)
    with grpc.insecure_channel(f"127.0.0.1:{mesh.env['EDGE_PORT']}") as channel:
        events = event_pb2_grpc.EventServiceStub(channel)
        fetched = events.GetEvent(event_pb2.GetEventRequest(event_id=created.event_id))
        assert fetched == created
        with pytest.raises(grpc.RpcError) as caught:
            events.LockSeat(
                event_pb2.LockSeatRequest(
                    event_id=str(uuid.uuid4()), seat_ids=["vip-1-1"], owner="x"
                )
            )
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED  # Envoy's 404


def test_oversized_bodies_are_refused(edge: Edge) -> None:
    huge = {"email": unique_email(), "password": "x" * 200_000, "display_name": "Big"}
    assert_error(edge.post("/v1/auth/register", huge), 413)


def test_request_ids_reach_the_service_logs(edge: Edge, mesh: Mesh) -> None:
    account = register_and_login(edge, "traced")
    trace = f"trace-{uuid.uuid4().hex}"
    reply = edge.call(
        "GET", "/v1/users/me", token=account.access_token, headers={"x-request-id": trace}
    )
    assert reply.status == 200 and reply.headers["x-request-id"] == trace
    lines = [
        json.loads(line)
        for line in (mesh.logs / "auth.log").read_text().splitlines()
        if trace in line
    ]
    assert any(entry.get("request_id") == trace and "GetMe" in entry["msg"] for entry in lines)


def test_a_new_signing_key_is_picked_up_and_old_tokens_keep_working(
    edge: Edge, keys_dir: Path
) -> None:
    before = login(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    old_kid = json.loads(_jwt_part(before, 0))["kid"]
    generate_key(keys_dir)

    def new_token() -> str | None:
        token = login(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
        return token if json.loads(_jwt_part(token, 0))["kid"] != old_kid else None

    after = wait_for(new_token, "auth to sign with the new key")
    # Envoy and every service learn the new key from the JWKS...
    assert wait_for(
        lambda: edge.get("/v1/users/me", token=after).status == 200,
        "the edge to accept the new key",
    )
    assert len(edge.get("/v1/auth/jwks").body["keys"]) >= 2
    # ...while tokens signed by the old one stay good until they expire.
    assert edge.get("/v1/users/me", token=before).status == 200
    assert edge.get("/v1/users", token=after).status == 200


def _jwt_part(token: str, index: int) -> str:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


def test_every_service_exports_prometheus_metrics(edge: Edge, mesh: Mesh) -> None:
    account = register_and_login(edge, "metered")  # RPCs, and an outbox message
    token = account.access_token
    for path in ("/v1/events", "/v1/bookings", f"/v1/payments/{uuid.uuid4()}", "/v1/notifications"):
        edge.get(path, token=token)  # at least one RPC per service

    def scrape(service: str) -> str:
        port = mesh.env[f"{service.upper()}_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    for service in mesh.implemented():
        assert "grpc_server_handling_seconds_bucket" in scrape(service), service
    assert 'grpc_code="OK",grpc_method="/ticketing.auth.v1.AuthService/Register"' in scrape("auth")
    assert "outbox_backlog" in scrape("auth") and "outbox_backlog" in scrape("booking")
    assert "booking_outcomes_total" in scrape("booking")
    assert "seat_holds_active" in scrape("event")
    assert wait_for(
        lambda: 'outcome="handled",queue="notification"' in scrape("notification"),
        "the welcome message to be counted",
    )


# Envoy's own refusals, as each kind of caller reads them (DESIGN §15).


def error_info(status_details_bin: str | bytes) -> tuple[int, str, str]:
    """(code, message, ErrorInfo reason) of a grpc-status-details-bin value."""
    raw = (
        status_details_bin
        if isinstance(status_details_bin, bytes)
        else (base64.b64decode(status_details_bin + "=" * (-len(status_details_bin) % 4)))
    )
    status = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert len(status.details) == 1 and status.details[0].Unpack(info), status
    assert info.domain == ERROR_DOMAIN
    return status.code, status.message, info.reason


def refused_over_grpc(
    call: grpc.UnaryUnaryMultiCallable, request: object, **kwargs: object
) -> tuple[grpc.StatusCode, str, str]:
    """(code, grpc-message, ErrorInfo reason) of a gRPC call Envoy refuses."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10, **kwargs)
    error = caught.value
    trailers = dict(error.trailing_metadata() or ())
    code, _, reason = error_info(trailers["grpc-status-details-bin"])
    assert code == error.code().value[0]
    return error.code(), error.details(), reason


@pytest.fixture(scope="module")
def edge_channel(mesh: Mesh) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.env['EDGE_PORT']}") as channel:
        yield channel


def test_envoy_refusals_are_grpc_statuses_with_error_info(edge_channel: grpc.Channel) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    events = event_pb2_grpc.EventServiceStub(edge_channel)
    # jwt_authn: no token, and a token that is not one.
    code, message, reason = refused_over_grpc(auth.GetMe, auth_pb2.GetMeRequest())
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert message == "a valid access token is required"  # plain text, not a JSON document
    code, message, reason = refused_over_grpc(
        auth.GetMe, auth_pb2.GetMeRequest(), metadata=[("authorization", "Bearer not.a.jwt")]
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert not message.startswith("{")
    # No route: an internal RPC does not exist at the edge.
    code, _, reason = refused_over_grpc(
        events.LockSeat,
        event_pb2.LockSeatRequest(event_id=str(uuid.uuid4()), seat_ids=["vip-1-1"], owner="x"),
    )
    assert (code, reason) == (grpc.StatusCode.UNIMPLEMENTED, "NO_ROUTE")
    # The body limit holds for gRPC requests too.
    huge = auth_pb2.RegisterRequest(email=unique_email(), password="x" * 200_000, display_name="B")
    code, _, reason = refused_over_grpc(auth.Register, huge)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_TOO_LARGE")


def grpc_web_refusal(
    edge: Edge, path: str, request: bytes, source: str = "127.0.0.1"
) -> dict[str, str]:
    """The headers of a gRPC-Web call Envoy refuses (a trailers-only reply), from `source`."""
    host, port = edge.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    frame = b"\x00" + len(request).to_bytes(4, "big") + request
    connection.request(
        "POST",
        path,
        frame,
        {
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "origin": "http://localhost:3000",
        },
    )
    reply = connection.getresponse()
    reply.read()
    connection.close()
    assert reply.status == 200
    return {k.lower(): v for k, v in reply.getheaders()}


def test_envoy_refusals_reach_grpc_web_callers_with_error_info(
    edge: Edge, strict_edge: Edge
) -> None:
    headers = grpc_web_refusal(
        edge, "/ticketing.auth.v1.AuthService/GetMe", auth_pb2.GetMeRequest().SerializeToString()
    )
    assert headers["content-type"].startswith("application/grpc-web")
    assert headers["grpc-status"] == "16"
    assert headers["grpc-message"] == "a valid access token is required"
    assert error_info(headers["grpc-status-details-bin"])[::2] == (16, "UNAUTHENTICATED")
    # A browser may read them: CORS exposes the three headers.
    exposed = headers["access-control-expose-headers"].split(",")
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= set(exposed)
    # The login limit (3 a minute on the strict edge), from an address of its own.
    login = auth_pb2.LoginRequest(
        email=unique_email("web-flood"), password="nope"
    ).SerializeToString()
    statuses = [
        grpc_web_refusal(strict_edge, "/ticketing.auth.v1.AuthService/Login", login, "127.0.0.5")
        for _ in range(4)
    ]
    assert [s["grpc-status"] for s in statuses] == ["16", "16", "16", "8"]
    assert error_info(statuses[3]["grpc-status-details-bin"])[::2] == (8, "RATE_LIMITED")


def test_envoy_refusals_stay_json_for_http_callers(edge: Edge) -> None:
    reply = edge.get("/v1/users/me")
    assert_error(reply, 401)
    assert reply.body == {
        "code": 16,
        "message": "Jwt is missing",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "UNAUTHENTICATED",
                "domain": ERROR_DOMAIN,
            }
        ],
    }
    assert edge.get("/v2/nothing").body["code"] == 5  # NOT_FOUND, for a URL


def test_grpcurl_reads_envoys_refusal(mesh: Mesh) -> None:
    """grpcurl through Envoy (the descriptor set instead of reflection, which
    the edge does not route): the missing token is Unauthenticated with its ErrorInfo."""
    grpcurl = shutil.which("grpcurl") or str(REPO / ".venv" / "bin" / "grpcurl")
    done = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-protoset",
            str(REPO / "gen" / "descriptors.binpb"),
            f"127.0.0.1:{mesh.env['EDGE_PORT']}",
            "ticketing.auth.v1.AuthService/GetMe",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "Code: Unauthenticated" in done.stderr, done.stderr
    assert '"reason":"UNAUTHENTICATED"' in done.stderr, done.stderr

"""The auth service over gRPC, against real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pika
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.status import error_details
from scripts.mesh import PYTHON, REPO, Mesh, free_port
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.support import bearer, fails, unique_email, wait_for
from ticketing.auth.v1 import auth_pb2, auth_pb2_grpc, messages_pb2


@pytest.fixture(scope="module")
def auth(auth_channel: grpc.Channel) -> auth_pb2_grpc.AuthServiceStub:
    return auth_pb2_grpc.AuthServiceStub(auth_channel)


def register(auth: auth_pb2_grpc.AuthServiceStub, password: str = "s3cret-pass") -> auth_pb2.User:
    return auth.Register(
        auth_pb2.RegisterRequest(email=unique_email(), password=password, display_name="Grace")
    )


def test_health_and_reflection(auth_channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(auth_channel)
    for service in ("", "ticketing.auth.v1.AuthService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_register_login_and_get_me(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    user = register(auth)
    assert user.role == auth_pb2.ROLE_USER
    tokens = auth.Login(auth_pb2.LoginRequest(email=user.email.upper(), password="s3cret-pass"))
    assert tokens.token_type == "Bearer" and tokens.expires_in == 900
    me = auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens.access_token))
    assert me == user


def test_duplicate_email_is_already_exists(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    user = register(auth)
    error = fails(
        auth.Register,
        auth_pb2.RegisterRequest(email=user.email, password="another-pass", display_name="Again"),
    )
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_details(error).reason == "EMAIL_TAKEN"


def test_wrong_password_and_unknown_email_look_the_same(
    auth: auth_pb2_grpc.AuthServiceStub,
) -> None:
    user = register(auth)
    wrong = error_details(
        fails(auth.Login, auth_pb2.LoginRequest(email=user.email, password="not-the-password"))
    )
    unknown = error_details(
        fails(auth.Login, auth_pb2.LoginRequest(email=unique_email(), password="not-the-password"))
    )
    assert wrong == unknown
    assert wrong.code is grpc.StatusCode.UNAUTHENTICATED
    assert wrong.reason == "INVALID_CREDENTIALS"


def test_refresh_rotates_and_reuse_revokes_the_family(
    auth: auth_pb2_grpc.AuthServiceStub,
) -> None:
    user = register(auth)
    first = auth.Login(auth_pb2.LoginRequest(email=user.email, password="s3cret-pass"))
    second = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    assert second.refresh_token != first.refresh_token
    assert auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(second.access_token)).user_id

    reused = error_details(
        fails(auth.Refresh, auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    )
    assert (reused.code, reused.reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    # The thief's replay also ended the legitimate descendant.
    revoked = error_details(
        fails(auth.Refresh, auth_pb2.RefreshRequest(refresh_token=second.refresh_token))
    )
    assert revoked.reason == "INVALID_REFRESH_TOKEN"

    # Another login is a new family, unaffected.
    third = auth.Login(auth_pb2.LoginRequest(email=user.email, password="s3cret-pass"))
    assert auth.Refresh(auth_pb2.RefreshRequest(refresh_token=third.refresh_token)).access_token


def test_concurrent_refreshes_of_one_token_yield_one_pair(
    auth: auth_pb2_grpc.AuthServiceStub,
) -> None:
    # Several rounds: the losers' revokes of the family once deadlocked, in a
    # few of every few hundred rounds, and answered UNAVAILABLE.
    for _ in range(10):
        user = register(auth)
        tokens = auth.Login(auth_pb2.LoginRequest(email=user.email, password="s3cret-pass"))

        def refresh(_: int, token: str = tokens.refresh_token) -> str:
            try:
                return auth.Refresh(auth_pb2.RefreshRequest(refresh_token=token)).refresh_token
            except grpc.RpcError as error:
                return error.code().name

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(refresh, range(8)))
        winners = [o for o in outcomes if o != "UNAUTHENTICATED"]
        assert len(winners) == 1, outcomes


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return kib / 1024


def test_a_login_burst_queues_for_argon2_and_stays_under_150_mb(mesh: Mesh) -> None:
    # A process of its own, so its high-water mark is this burst's and no other
    # test's; one worker, the default on the 2-core machines the budget is for.
    addr = f"127.0.0.1:{free_port()}"
    mesh.start_service(
        "auth", name="auth-burst", env={"AUTH_GRPC_ADDR": addr, "ARGON2_WORKERS": "1"}
    )
    try:
        with mesh.channel("auth", addr=addr) as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            user = register(auth)
            login = auth_pb2.LoginRequest(email=user.email, password="s3cret-pass")
            burst = [auth.Login.future(login, timeout=60) for _ in range(128)]
            tokens = [call.result() for call in burst]
            peak = peak_rss_mb(mesh.processes["auth-burst"].pid)
    finally:
        mesh.stop("auth-burst")
    assert len({t.refresh_token for t in tokens}) == len(burst)
    # ~19 MiB per argon2 check in flight: unbounded, this burst peaks near 200 MB.
    assert peak < 150, f"auth peaked at {peak:.1f} MB"


def test_logout_revokes_the_refresh_token(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    user = register(auth)
    tokens = auth.Login(auth_pb2.LoginRequest(email=user.email, password="s3cret-pass"))
    auth.Logout(auth_pb2.LogoutRequest(refresh_token=tokens.refresh_token))
    error = fails(auth.Refresh, auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    missing = fails(auth.Logout, auth_pb2.LogoutRequest())
    assert missing.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def admin_token(auth: auth_pb2_grpc.AuthServiceStub) -> str:
    return auth.Login(
        auth_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
    ).access_token


def test_admin_is_seeded(auth: auth_pb2_grpc.AuthServiceStub, admin_token: str) -> None:
    me = auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(admin_token))
    assert (me.email, me.role) == (ADMIN_EMAIL, auth_pb2.ROLE_ADMIN)


def test_list_users_pages_through_everyone_once(
    auth: auth_pb2_grpc.AuthServiceStub,
    admin_token: str,
) -> None:
    created = {register(auth).user_id for _ in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        page = auth.ListUsers(
            auth_pb2.ListUsersRequest(page_size=2, page_token=token), metadata=bearer(admin_token)
        )
        assert len(page.users) <= 2
        seen += [u.user_id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert created <= set(seen)


def test_set_role_needs_admin_and_shows_in_next_token(
    auth: auth_pb2_grpc.AuthServiceStub,
    admin_token: str,
) -> None:
    user = register(auth)
    tokens = auth.Login(auth_pb2.LoginRequest(email=user.email, password="s3cret-pass"))
    denied = fails(
        auth.SetUserRole,
        auth_pb2.SetUserRoleRequest(user_id=user.user_id, role=auth_pb2.ROLE_ADMIN),
        metadata=bearer(tokens.access_token),
    )
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED

    changed = auth.SetUserRole(
        auth_pb2.SetUserRoleRequest(user_id=user.user_id, role=auth_pb2.ROLE_ORGANIZER),
        metadata=bearer(admin_token),
    )
    assert changed.role == auth_pb2.ROLE_ORGANIZER
    renewed = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
    me = auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(renewed.access_token))
    assert me.role == auth_pb2.ROLE_ORGANIZER

    unknown = fails(
        auth.SetUserRole,
        auth_pb2.SetUserRoleRequest(user_id=str(uuid.uuid4()), role=auth_pb2.ROLE_USER),
        metadata=bearer(admin_token),
    )
    assert unknown.code() is grpc.StatusCode.NOT_FOUND
    unset = fails(
        auth.SetUserRole,
        auth_pb2.SetUserRoleRequest(user_id=user.user_id),
        metadata=bearer(admin_token),
    )
    assert unset.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def user_registered_queue(mesh: Mesh) -> Iterator[tuple[pika.adapters.BlockingConnection, str]]:
    connection = pika.BlockingConnection(pika.URLParameters(mesh.env["AMQP_URL"]))
    channel = connection.channel()
    channel.exchange_declare("ticketing.events", "topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, "ticketing.events", "user.registered")
    yield channel, queue
    connection.close()


def test_registration_publishes_user_registered(
    auth: auth_pb2_grpc.AuthServiceStub,
    user_registered_queue: tuple,
) -> None:
    channel, queue = user_registered_queue
    user = register(auth)
    for method, properties, body in channel.consume(queue, inactivity_timeout=15):
        assert method is not None, "no UserRegistered message within 15s"
        channel.basic_ack(method.delivery_tag)
        message = messages_pb2.UserRegistered.FromString(body)
        if message.user_id != user.user_id:
            continue  # another test's registration
        assert message.email == user.email
        assert properties.type == "ticketing.auth.v1.UserRegistered"
        assert properties.content_type == "application/x-protobuf"
        assert properties.delivery_mode == 2
        assert uuid.UUID(properties.message_id)
        break
    channel.cancel()


def login_error(auth: auth_pb2_grpc.AuthServiceStub, email: str, password: str):
    return error_details(fails(auth.Login, auth_pb2.LoginRequest(email=email, password=password)))


def test_failed_logins_slow_down_per_account_on_the_grpc_port(
    auth: auth_pb2_grpc.AuthServiceStub,
) -> None:
    user = register(auth)
    stranger = unique_email()  # no account: must slow down exactly alike
    for email in (user.email, stranger):
        for _ in range(5):
            assert login_error(auth, email, "not-the-password").reason == "INVALID_CREDENTIALS"
        # The sixth guess is not even checked, right password or not.
        for password in ("not-the-password", "s3cret-pass"):
            refused = login_error(auth, email, password)
            assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.reason == "TOO_MANY_ATTEMPTS"
            assert refused.metadata == {"retry_after_seconds": "1"}
    # Another account is not affected.
    other = register(auth)
    auth.Login(auth_pb2.LoginRequest(email=other.email, password="s3cret-pass"))

    # Once the wait is over, a success clears the count: one more failure is
    # just a failure again, not a longer wait. (An attempt refused for waiting
    # is not a failure, so asking meanwhile changes nothing.)
    def logged_in() -> bool:
        try:
            auth.Login(auth_pb2.LoginRequest(email=user.email, password="s3cret-pass"))
            return True
        except grpc.RpcError as error:
            assert error_details(error).reason == "TOO_MANY_ATTEMPTS"
            return False

    wait_for(logged_in, "the one-second wait to be over", timeout=5)
    assert login_error(auth, user.email, "not-the-password").reason == "INVALID_CREDENTIALS"
    # The stranger's next failure, once its own wait is over, doubles the wait.
    first_checked = wait_for(
        lambda: (
            (r := login_error(auth, stranger, "not-the-password").reason) != "TOO_MANY_ATTEMPTS"
            and r
        ),
        "the stranger's wait to be over",
        timeout=5,
    )
    assert first_checked == "INVALID_CREDENTIALS"
    assert login_error(auth, stranger, "not-the-password").metadata == {"retry_after_seconds": "2"}


def test_outside_development_the_default_admin_password_is_refused(mesh: Mesh) -> None:
    env = {
        **mesh.service_env(),
        "ENVIRONMENT": "production",
        # Its own port, in case it started after all.
        "AUTH_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "AUTH_METRICS_PORT": "0",
    }
    env.pop("ADMIN_PASSWORD")  # the documented default, admin-change-me
    started = subprocess.run(
        [PYTHON, "-m", "auth"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert started.returncode != 0
    assert "ENVIRONMENT=production" in started.stderr
    assert "ADMIN_PASSWORD" in started.stderr

"""The booking saga when things break, end to end: a payment answer lost on
the wire, the payment service unreachable or killed, the booking service
killed mid-saga or stopped with SIGTERM while it works. Whatever happens, once
the sweep has run: no seat held, no money without a ticket, no ticket without
money. (Every branch of the saga is also tested in-process, on fakes, in
tests/unit/test_booking_saga.py; these are the smoke tests over real processes.)

A booking instance with short deadlines, a short retry window and a fast
sweep talks to its own payment instance through a fault proxy; everything
else is the test mesh.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import psycopg
import pytest
import redis
from google.protobuf import json_format

from booking.domain import booking_id_for
from runtime.db import libpq_url
from runtime.healthcheck import serving
from runtime.status import error_details
from scripts.mesh import Mesh, free_port
from tests.audit import audit_event
from tests.faultproxy import FaultProxy
from tests.support import bearer, card, create_event_grpc, mint_token, wait_for
from ticketing.booking.v1 import booking_pb2, booking_pb2_grpc
from ticketing.event.v1 import event_pb2_grpc
from ticketing.payment.v1 import payment_pb2

# The shortest the settings allow with these deadlines: the sweep (after the
# saga's budget, 5 + 7 x 1 s, and its grace) must come while the hold lasts.
HOLD_TTL_SECONDS = 15


@dataclass
class Rig:
    mesh: Mesh
    proxy: FaultProxy
    booking_env: dict[str, str]
    payment_env: dict[str, str]
    booking_addr: str

    def drop_payment_replies(self, warm_up_event: str, token: str) -> None:
        """Loses payment answers from now on; the connection is made first, because a
        connection whose handshake is lost never carries a request at all."""
        outcome = create_booking(
            self.mesh,
            self.booking_addr,
            token,
            warm_up_event,
            [f"standard-4-{uuid.uuid4().int % 10 + 1}"],
            str(uuid.uuid4()),
        )
        assert outcome[0] in (grpc.StatusCode.OK, grpc.StatusCode.ABORTED), outcome
        self.proxy.drop_replies()

    def restart_booking(self, sig: int = signal.SIGKILL) -> None:
        self.mesh.stop("booking-faulty", sig)
        self.mesh.start_service("booking", name="booking-faulty", env=self.booking_env)

    def restart_payment(self, sig: int = signal.SIGKILL) -> None:
        self.mesh.stop("payment-faulty", sig)
        self.mesh.start_service("payment", name="payment-faulty", env=self.payment_env)


@pytest.fixture(scope="module")
def rig(mesh: Mesh) -> Iterator[Rig]:
    payment_addr = f"127.0.0.1:{free_port()}"
    payment_env = {"PAYMENT_GRPC_ADDR": payment_addr}
    mesh.start_service("payment", name="payment-faulty", env=payment_env)
    proxy = FaultProxy(("127.0.0.1", int(payment_addr.rsplit(":", 1)[1]))).start()
    booking_addr = f"127.0.0.1:{free_port()}"
    booking_env = {
        "BOOKING_GRPC_ADDR": booking_addr,
        "PAYMENT_GRPC_ADDR": proxy.address,
        "HOLD_TTL_SECONDS": str(HOLD_TTL_SECONDS),
        "SWEEP_GRACE_SECONDS": "0.5",
        "SWEEP_INTERVAL_SECONDS": "0.5",
        "DOWNSTREAM_TIMEOUT_SECONDS": "1",
        "RETRY_WINDOW_SECONDS": "5",
        # Long enough to finish a booking whose charge was held up (the drain test).
        "SHUTDOWN_GRACE_SECONDS": "10",
    }
    mesh.start_service("booking", name="booking-faulty", env=booking_env)
    try:
        yield Rig(mesh, proxy, booking_env, payment_env, booking_addr)
    finally:
        mesh.stop("booking-faulty")
        mesh.stop("payment-faulty")
        proxy.close()


@pytest.fixture
def event_id(mesh: Mesh, organizer: str) -> str:
    with mesh.channel("event") as channel:
        return create_event_grpc(event_pb2_grpc.EventServiceStub(channel), organizer).event_id


@pytest.fixture(scope="module")
def warm_up_event(mesh: Mesh, organizer: str) -> str:
    with mesh.channel("event") as channel:
        return create_event_grpc(
            event_pb2_grpc.EventServiceStub(channel),
            organizer,
            tiers=[("TIER_STANDARD", 100, 4, 10)],
        ).event_id


@pytest.fixture
def buyer(keys_dir: Path) -> str:
    return mint_token(keys_dir, email="faulty@example.com")


def create_booking(
    mesh: Mesh, addr: str, token: str, event_id: str, seats: list[str], request_id: str
) -> tuple[grpc.StatusCode, str, dict]:
    request = booking_pb2.CreateBookingRequest(
        event_id=event_id,
        seat_ids=seats,
        request_id=request_id,
        payment_method=json_format.ParseDict(card(), payment_pb2.PaymentMethod()),
    )
    with mesh.channel("booking", addr=addr) as channel:
        try:
            booking = booking_pb2_grpc.BookingServiceStub(channel).CreateBooking(
                request, metadata=bearer(token), timeout=30
            )
            return grpc.StatusCode.OK, booking_pb2.BookingState.Name(booking.state), {}
        except grpc.RpcError as error:
            details = error_details(error)
            return details.code, details.reason, dict(details.metadata)


def settled_state(mesh: Mesh, token: str, booking_id: str, timeout: float = 30) -> str:
    """Waits for the sweep to move a booking out of PENDING."""
    with mesh.channel("booking") as channel:
        stub = booking_pb2_grpc.BookingServiceStub(channel)

        def state() -> str | None:
            booking = stub.GetBooking(
                booking_pb2.GetBookingRequest(booking_id=booking_id), metadata=bearer(token)
            )
            if booking.state == booking_pb2.BOOKING_STATE_PENDING:
                return None
            return booking_pb2.BookingState.Name(booking.state)

        return wait_for(state, f"booking {booking_id} to leave PENDING", timeout, every=0.3)


def forget_hold(mesh: Mesh, event_id: str, seat: str) -> None:
    """The hold is gone from Redis, as if it lapsed or Redis lost it."""
    with redis.Redis.from_url(mesh.env["REDIS_URL"]) as store:
        assert store.delete(f"ev:{{{event_id}}}:hold:{seat}") == 1


def charged(mesh: Mesh, token: str, request_id: str) -> bool:
    """Whether the payment service took the money for this buyer's request."""
    user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    key = str(booking_id_for(user_id, request_id))
    with psycopg.connect(libpq_url(mesh.env["PAYMENT_DATABASE_URL"])) as conn:
        found = conn.execute("SELECT 1 FROM payments WHERE idempotency_key = %s", (key,))
        return found.fetchone() is not None


def assert_clean(mesh: Mesh, event_id: str) -> None:
    audit = audit_event(mesh, event_id)
    assert audit.problems == []
    assert audit.held == 0
    assert "PENDING" not in audit.bookings.values()


def test_lost_payment_answer_is_settled_as_a_sale(
    rig: Rig, event_id: str, buyer: str, warm_up_event: str
) -> None:
    rig.drop_payment_replies(warm_up_event, buyer)
    try:
        code, reason, metadata = create_booking(
            rig.mesh, rig.booking_addr, buyer, event_id, ["vip-1-1", "vip-1-2"], str(uuid.uuid4())
        )
    finally:
        rig.proxy.restore()
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "BOOKING_PENDING")
    assert metadata["retry_after_seconds"] == "1"
    assert settled_state(rig.mesh, buyer, metadata["booking_id"]) == "BOOKING_STATE_CONFIRMED"
    audit = audit_event(rig.mesh, event_id)
    assert audit.sold == {"vip-1-1": metadata["booking_id"], "vip-1-2": metadata["booking_id"]}
    assert_clean(rig.mesh, event_id)


def test_money_taken_for_seats_sold_meanwhile_is_refunded(
    rig: Rig,
    event_id: str,
    buyer: str,
    keys_dir: Path,
    warm_up_event: str,
) -> None:
    rig.drop_payment_replies(warm_up_event, buyer)
    try:
        code, _, metadata = create_booking(
            rig.mesh, rig.booking_addr, buyer, event_id, ["vip-2-1"], str(uuid.uuid4())
        )
        assert code is grpc.StatusCode.UNAVAILABLE
        # While the outcome is unknown Redis forgets the hold and someone else buys
        # the seat through the healthy booking instance.
        forget_hold(rig.mesh, event_id, "vip-2-1")
        rival = mint_token(keys_dir, email="rival@example.com")
        assert (
            create_booking(
                rig.mesh,
                rig.mesh.target("booking"),
                rival,
                event_id,
                ["vip-2-1"],
                str(uuid.uuid4()),
            )[1]
            == "BOOKING_STATE_CONFIRMED"
        )
    finally:
        rig.proxy.restore()
    assert settled_state(rig.mesh, buyer, metadata["booking_id"]) == "BOOKING_STATE_FAILED"
    audit = audit_event(rig.mesh, event_id)
    assert audit.payments[metadata["booking_id"]] == "PAYMENT_STATE_REFUNDED"
    assert_clean(rig.mesh, event_id)


def test_unreachable_payment_takes_no_money_and_frees_the_seats(
    rig: Rig,
    event_id: str,
    buyer: str,
) -> None:
    rig.proxy.cut()
    try:
        code, _, metadata = create_booking(
            rig.mesh, rig.booking_addr, buyer, event_id, ["standard-1-1"], str(uuid.uuid4())
        )
    finally:
        rig.proxy.restore()
    assert code is grpc.StatusCode.UNAVAILABLE
    assert settled_state(rig.mesh, buyer, metadata["booking_id"]) == "BOOKING_STATE_FAILED"
    audit = audit_event(rig.mesh, event_id)
    assert metadata["booking_id"] not in audit.payments
    assert_clean(rig.mesh, event_id)


def test_payment_and_booking_killed_mid_saga(
    rig: Rig, event_id: str, buyer: str, warm_up_event: str
) -> None:
    request_id = str(uuid.uuid4())
    rig.drop_payment_replies(warm_up_event, buyer)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            create_booking,
            rig.mesh,
            rig.booking_addr,
            buyer,
            event_id,
            ["standard-2-1", "vip-1-5"],
            request_id,
        )
        # The charge is through, its answer lost on the way back.
        wait_for(lambda: charged(rig.mesh, buyer, request_id), "the charge to be made")
        rig.mesh.stop("payment-faulty", signal.SIGKILL)
        rig.mesh.stop("booking-faulty", signal.SIGKILL)
        assert pending.result()[0] is not grpc.StatusCode.OK
    rig.proxy.restore()
    rig.restart_payment()
    rig.restart_booking()
    # The client retries its request: the same booking resumed where it stopped
    # (the charge found, the seats sold), never a second charge.
    code, state, _ = create_booking(
        rig.mesh, rig.booking_addr, buyer, event_id, ["standard-2-1", "vip-1-5"], request_id
    )
    audit = audit_event(rig.mesh, event_id)
    [booking_id] = audit.bookings
    # Settled at once, or (on a slow machine) said to be pending: never a PENDING body.
    assert (code, state) in {
        (grpc.StatusCode.OK, "BOOKING_STATE_CONFIRMED"),
        (grpc.StatusCode.UNAVAILABLE, "BOOKING_PENDING"),
    }, (code, state)
    assert settled_state(rig.mesh, buyer, booking_id) == "BOOKING_STATE_CONFIRMED"
    assert list(audit_event(rig.mesh, event_id).payments) == [booking_id]
    assert_clean(rig.mesh, event_id)


def test_sigterm_drains_a_booking_in_flight(
    rig: Rig, event_id: str, buyer: str, warm_up_event: str
) -> None:
    """SIGTERM stops new calls at once, and the booking already being paid for
    finishes (CONFIRMED, its answer delivered) before the process exits."""
    rig.drop_payment_replies(warm_up_event, buyer)  # the connection to payment is made
    rig.proxy.blackhole()  # the charge hangs on it
    request_id = str(uuid.uuid4())
    process = rig.mesh.processes["booking-faulty"]
    try:
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(
                create_booking,
                rig.mesh,
                rig.booking_addr,
                buyer,
                event_id,
                ["standard-3-1"],
                request_id,
            )
            wait_for(
                lambda: pending_booking(rig.mesh, buyer, request_id), "the booking to be paying"
            )
            os.killpg(process.pid, signal.SIGTERM)
            wait_for(
                lambda: not serving(rig.booking_addr, identity=rig.mesh.identity()),
                "booking to stop taking calls",
                timeout=5,
            )
            assert process.poll() is None, "exited with a booking in flight"
            rig.proxy.restore()  # the next charge attempt goes through
            assert in_flight.result(timeout=20)[:2] == (
                grpc.StatusCode.OK,
                "BOOKING_STATE_CONFIRMED",
            )
        wait_for(lambda: process.poll() is not None, "booking to exit once drained", timeout=15)
        assert process.returncode == 0
    finally:
        rig.proxy.restore()
        rig.mesh.stop("booking-faulty")
        rig.mesh.start_service("booking", name="booking-faulty", env=rig.booking_env)
    assert_clean(rig.mesh, event_id)


def pending_booking(mesh: Mesh, token: str, request_id: str) -> bool:
    user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
        found = conn.execute(
            "SELECT 1 FROM bookings WHERE booking_id = %s AND state = 1",
            (booking_id_for(user_id, request_id),),
        )
        return found.fetchone() is not None

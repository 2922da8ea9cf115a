"""Cross-service audit of one event, the invariants of DESIGN §7:

- every sold seat belongs to exactly one CONFIRMED booking, which paid for it;
- a CONFIRMED booking's money was taken (payment SUCCEEDED, the right amount);
- a booking that is not CONFIRMED kept no money and owns no seat;
- no seat is held once the sagas are over.

It reads the booking and event databases and asks the payment service.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import grpc
import psycopg

from runtime.db import libpq_url
from scripts.mesh import Mesh
from ticketing.event.v1 import event_pb2, event_pb2_grpc
from ticketing.payment.v1 import payment_pb2, payment_pb2_grpc

STATES = {1: "PENDING", 2: "CONFIRMED", 3: "FAILED", 4: "CANCELLED"}


@dataclass
class Audit:
    bookings: dict[str, str] = field(default_factory=dict)  # booking id -> state
    payments: dict[str, str] = field(default_factory=dict)  # booking id -> payment state
    sold: dict[str, str] = field(default_factory=dict)  # seat id -> booking id
    held: int = 0
    problems: list[str] = field(default_factory=list)

    def by_state(self, state: str) -> list[str]:
        return [b for b, s in self.bookings.items() if s == state]


def audit_event(mesh: Mesh, event_id: str) -> Audit:
    audit = Audit()
    seats_of: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
        for booking_id, state, seats, total in conn.execute(
            "SELECT booking_id, state, seats, total_minor FROM bookings WHERE event_id = %s",
            (event_id,),
        ):
            audit.bookings[str(booking_id)] = STATES[state]
            seats_of[str(booking_id)] = [s["seat_id"] for s in seats]
            totals[str(booking_id)] = total
    with psycopg.connect(libpq_url(mesh.env["EVENT_DATABASE_URL"])) as conn:
        for tier, row, number, booking_id in conn.execute(
            "SELECT tier, row, number, booking_id FROM seats "
            "WHERE event_id = %s AND status = 'SOLD'",
            (event_id,),
        ):
            name = event_pb2.Tier.Name(tier).removeprefix("TIER_").lower()
            audit.sold[f"{name}-{row}-{number}"] = str(booking_id)
    with mesh.channel("payment", "booking") as channel:  # LookupPayment is booking's
        payments = payment_pb2_grpc.PaymentServiceStub(channel)
        for booking_id in audit.bookings:
            try:
                payment = payments.LookupPayment(
                    payment_pb2.LookupPaymentRequest(idempotency_key=booking_id)
                )
            except grpc.RpcError as error:
                assert error.code() is grpc.StatusCode.NOT_FOUND, error
                continue
            audit.payments[booking_id] = payment_pb2.PaymentState.Name(payment.state)
            if (
                payment.state == payment_pb2.PAYMENT_STATE_SUCCEEDED
                and payment.amount.amount_minor != totals[booking_id]
            ):
                audit.problems.append(
                    f"{booking_id} charged {payment.amount.amount_minor}, "
                    f"total {totals[booking_id]}"
                )
    with mesh.channel("event") as channel:
        event = event_pb2_grpc.EventServiceStub(channel).GetEvent(
            event_pb2.GetEventRequest(event_id=event_id)
        )
        audit.held = sum(t.held for t in event.tiers)

    owners = defaultdict(list)
    for seat, booking_id in audit.sold.items():
        owners[booking_id].append(seat)
        if audit.bookings.get(booking_id) != "CONFIRMED":
            audit.problems.append(
                f"seat {seat} sold to {booking_id}, which is "
                f"{audit.bookings.get(booking_id, 'unknown')}"
            )
    for booking_id, state in audit.bookings.items():
        paid = audit.payments.get(booking_id) == "PAYMENT_STATE_SUCCEEDED"
        if state == "CONFIRMED":
            if not paid:
                audit.problems.append(f"ticket without money: {booking_id}")
            if sorted(owners[booking_id]) != sorted(seats_of[booking_id]):
                audit.problems.append(
                    f"{booking_id} owns {owners[booking_id]}, booked {seats_of[booking_id]}"
                )
        elif state in ("FAILED", "CANCELLED") and paid:
            audit.problems.append(f"money without a ticket: {booking_id} is {state}")
    return audit

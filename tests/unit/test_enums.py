"""The domain's enums and the contracts' enums agree value for value: the API
layers convert between them by value (`State(request.state)`, `state=x.value`),
so a member added, renumbered or renamed on one side only must fail here."""

from __future__ import annotations

import enum

import pytest
from google.protobuf.descriptor import EnumDescriptor

from auth.api import _ROLE_TO_PROTO
from booking import domain as booking_domain
from booking.gateways import PaymentState as BookingsViewOfPayments
from event.api import _STATUS_TO_PROTO
from event.domain import Tier
from notification import domain as notification_domain
from payment import domain as payment_domain
from runtime.identity import Role
from ticketing.auth.v1 import auth_pb2
from ticketing.booking.v1 import booking_pb2
from ticketing.event.v1 import event_pb2
from ticketing.notification.v1 import notification_pb2
from ticketing.payment.v1 import payment_pb2


def proto_members(descriptor: EnumDescriptor, prefix: str) -> dict[str, int]:
    return {
        v.name.removeprefix(prefix): v.number
        for v in descriptor.values
        if not v.name.endswith("_UNSPECIFIED")
    }


@pytest.mark.parametrize(
    ("domain_enum", "descriptor", "prefix"),
    [
        (booking_domain.State, booking_pb2.BookingState.DESCRIPTOR, "BOOKING_STATE_"),
        (payment_domain.State, payment_pb2.PaymentState.DESCRIPTOR, "PAYMENT_STATE_"),
        (BookingsViewOfPayments, payment_pb2.PaymentState.DESCRIPTOR, "PAYMENT_STATE_"),
        (Tier, event_pb2.Tier.DESCRIPTOR, "TIER_"),
        (
            notification_domain.Kind,
            notification_pb2.NotificationKind.DESCRIPTOR,
            "NOTIFICATION_KIND_",
        ),
        (
            notification_domain.State,
            notification_pb2.NotificationState.DESCRIPTOR,
            "NOTIFICATION_STATE_",
        ),
    ],
)
def test_domain_enum_matches_its_proto_enum(
    domain_enum: type[enum.IntEnum], descriptor: EnumDescriptor, prefix: str
) -> None:
    assert {m.name: m.value for m in domain_enum} == proto_members(descriptor, prefix)


def test_every_role_and_seat_status_has_its_proto_value() -> None:
    assert {r.name: _ROLE_TO_PROTO[r] for r in Role} == proto_members(
        auth_pb2.Role.DESCRIPTOR, "ROLE_"
    )
    assert {s: v for s, v in _STATUS_TO_PROTO.items()} == proto_members(
        event_pb2.SeatStatus.DESCRIPTOR, "SEAT_STATUS_"
    )

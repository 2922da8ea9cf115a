"""The public contract of each service, for tools that work across all of them
(the Envoy config, the OpenAPI document)."""

from __future__ import annotations

from google.api import annotations_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from runtime.config import SERVICES
from ticketing.auth.v1 import auth_pb2
from ticketing.booking.v1 import booking_pb2
from ticketing.event.v1 import event_pb2
from ticketing.notification.v1 import notification_pb2
from ticketing.payment.v1 import payment_pb2

PROTO_SERVICES: dict[str, ServiceDescriptor] = {
    "auth": auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    "booking": booking_pb2.DESCRIPTOR.services_by_name["BookingService"],
    "event": event_pb2.DESCRIPTOR.services_by_name["EventService"],
    "payment": payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
    "notification": notification_pb2.DESCRIPTOR.services_by_name["NotificationService"],
}
assert set(PROTO_SERVICES) == set(SERVICES)


def http_binding(method: MethodDescriptor) -> tuple[str, str, str] | None:
    """(HTTP verb, path template, body) of a method, or None if it is not public."""
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    if verb is None or verb == "custom":
        return None
    return verb.upper(), getattr(rule, verb), rule.body

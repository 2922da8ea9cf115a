"""One booking, one trace: Envoy's span, booking's CreateBooking, the event
service's LockSeat and ConfirmSeats, payment's Charge, and the notification
service's handling of the booking.confirmed message the outbox relayed, all
in the trace the client's request started, each a descendant of Envoy's span."""

from __future__ import annotations

import secrets

from scripts.mesh import Mesh, free_port
from scripts.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support import (
    Edge,
    card,
    event_body,
    register_and_login,
    start_second_edge,
    wait_for,
)

BOOKING = "/ticketing.booking.v1.BookingService/CreateBooking"
LOCK = "/ticketing.event.v1.EventService/LockSeat"
CONFIRM = "/ticketing.event.v1.EventService/ConfirmSeats"
CHARGE = "/ticketing.payment.v1.PaymentService/Charge"
SERVER, CONSUMER = 2, 5  # opentelemetry.proto.trace.v1.Span.SpanKind


def _one(spans: list[ReceivedSpan], service: str, kind: int, name: str = "") -> ReceivedSpan:
    found = [
        s
        for s in spans
        if s.service == service and s.span.kind == kind and (not name or s.span.name == name)
    ]
    assert len(found) == 1, f"{service} {name}: {[s.span.name for s in found]}"
    return found[0]


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    """The services of the spans from `span` up to its trace's root, in order."""
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span.service)
    return chain


def test_a_booking_is_one_trace_from_the_edge_to_the_email(
    edge: Edge, organizer: str, otlp_receiver: OtlpReceiver
) -> None:
    event = edge.post("/v1/events", event_body(), token=organizer)
    assert event.status == 200, event.body
    buyer = register_and_login(edge, "traced")
    # The client starts the trace (as a browser's instrumentation would), so
    # the test knows which one is the booking's among every test's traces.
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    otlp_receiver.watch(trace_id)
    reply = edge.call(
        "POST",
        "/v1/bookings",
        {
            "event_id": event.body["event_id"],
            "seat_ids": ["standard-1-1"],
            "payment_method": card(),
            "request_id": secrets.token_hex(8),
        },
        token=buyer.access_token,
        headers={"traceparent": f"00-{trace_id}-{client_span}-01"},
    )
    assert reply.status == 200, reply.body
    assert reply.body["state"] == "BOOKING_STATE_CONFIRMED"

    wanted = {("edge", ""), ("booking", BOOKING), ("event", LOCK), ("event", CONFIRM)}
    wanted |= {("payment", CHARGE), ("notification", "")}

    def hops(spans: list[ReceivedSpan]) -> set[tuple[str, str]]:
        """(service, RPC) of each span serving a hop; Envoy's (the one under the
        client's span) and the consumer's by service alone."""
        return {
            (s.service, s.span.name if s.service in ("booking", "event", "payment") else "")
            for s in spans
            if s.span.kind in (SERVER, CONSUMER)
            and (s.service != "edge" or s.parent_id == client_span)
        }

    try:
        spans = wait_for(
            lambda: (found := otlp_receiver.spans(trace_id)) and wanted <= hops(found) and found,
            "the booking's spans from every hop",
        )
    except AssertionError as timeout:
        got = [(s.service, s.span.name, s.span.kind) for s in otlp_receiver.spans(trace_id)]
        raise AssertionError(
            f"{timeout}; of {otlp_receiver.count} spans, this trace's: {got}"
        ) from None
    by_id = {s.span_id: s for s in spans}
    assert {s.trace_id for s in spans} == {trace_id}

    # Envoy continued the client's trace (its other spans: fetching the JWKS
    # through its own listener when the key cache was cold).
    (edge_span,) = [s for s in spans if s.service == "edge" and s.parent_id == client_span]
    assert edge_span.span.kind == SERVER
    booking = _one(spans, "booking", SERVER, BOOKING)
    # Envoy handed booking its span as the traceparent: nothing in between.
    assert booking.parent_id == edge_span.span_id
    for service, name in (("event", LOCK), ("event", CONFIRM), ("payment", CHARGE)):
        served = _one(spans, service, SERVER, name)
        # The child of booking's server span (the call makes no client span of
        # its own), up to Envoy's.
        assert served.parent_id == booking.span_id, name
        assert _ancestors(served, by_id) == ["booking", "edge"], name
    # The email's message: written to the outbox in booking's transaction,
    # relayed to RabbitMQ with its traceparent, handled by notification.
    consumed = _one(spans, "notification", CONSUMER)
    assert consumed.span.name == "notification process booking.confirmed"
    assert _ancestors(consumed, by_id)[-2:] == ["booking", "edge"]


def test_envoy_traces_the_share_it_is_told_to_and_the_services_follow(
    mesh: Mesh, otlp_receiver: OtlpReceiver
) -> None:
    """An Envoy of its own at TRACING_SAMPLE_PERCENT=0, exporting to a receiver
    of its own: a request that comes without a trace is not traced, by Envoy
    or by the service it reaches; one whose traceparent is sampled still is,
    end to end (the samplers are parent-based)."""
    own = OtlpReceiver(free_port(), keep=True).start()
    sampled = start_second_edge(
        mesh, "envoy-sampled", OTEL_EXPORTER_OTLP_ENDPOINT=own.endpoint, TRACING_SAMPLE_PERCENT="0"
    )
    try:
        for _ in range(30):
            assert sampled.get("/v1/events?page_size=1").status == 200
        trace_id = secrets.token_hex(16)
        otlp_receiver.watch(trace_id)
        reply = sampled.call(
            "GET",
            "/v1/events?page_size=1",
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        )
        assert reply.status == 200, reply.body
        # Envoy exports in order, so once the traced request's span is in, the
        # thirty before it would be too, had any been traced.
        wait_for(lambda: own.spans(trace_id), "Envoy's span of the traced request")
        assert {s.trace_id for s in own.spans()} == {trace_id}
        served = wait_for(lambda: otlp_receiver.spans(trace_id), "the event service's span")
        assert {(s.service, s.span.name) for s in served} == {
            ("event", "/ticketing.event.v1.EventService/ListEvents")
        }
    finally:
        mesh.stop("envoy-sampled")
        own.stop()

"""What tracing costs one booking's RPCs, in-process, without the mesh.

A booking through the mesh is one CreateBooking that makes three calls
(LockSeat, Charge, ConfirmSeats). Here a fake booking server does the same
through booking's real gateways (booking/grpc_gateways.py) to fake event and
payment servers, all with the interceptors runtime/server.py gives every
service and the channels runtime/tls.py makes; a driver plays Envoy (a
traceparent on each call, no interceptor). Each mode runs in a process of its
own (a tracer provider is set once per process), the spans exported to an OTLP
receiver in this one, so its CPU is not counted; a mode's CPU is its whole
process's (the gRPC threads and the exporter's included) over the calls and
the final flush of their spans.

    python -m bench.tracing_cpu [--bookings 3000] [--concurrency 8] [--runs 3]

It binds ephemeral ports only, so it runs beside a mesh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

MODES = ("off", "on")


async def _serve_fakes(collector: str, bookings: int, concurrency: int) -> dict[str, Any]:
    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp

    from booking.gateways import Card
    from booking.grpc_gateways import Downstream
    from runtime import tls, tracing
    from runtime.identity import TokenVerifier
    from runtime.interceptor import AccessRule, ServiceInterceptor
    from ticketing.booking.v1 import booking_pb2, booking_pb2_grpc
    from ticketing.common.v1 import access_pb2
    from ticketing.event.v1 import event_pb2, event_pb2_grpc
    from ticketing.payment.v1 import payment_pb2, payment_pb2_grpc

    tracing.configure("bench", collector)
    event_id = str(uuid.uuid4())
    expire = Timestamp(seconds=int(time.time()) + 600)
    locked = event_pb2.LockSeatResponse(
        owner_token="owner",
        fencing_token=7,
        expire_time=expire,
        seats=[event_pb2.Seat(seat_id="standard-1-1", tier=event_pb2.TIER_STANDARD)],
        event=event_pb2.EventSummary(event_id=event_id, title="t", venue="v", starts_at=expire),
    )
    paid = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()), state=payment_pb2.PAYMENT_STATE_SUCCEEDED
    )

    class Event(event_pb2_grpc.EventServiceServicer):
        async def LockSeat(self, request: Any, context: Any) -> Any:
            return locked

        async def ConfirmSeats(self, request: Any, context: Any) -> Any:
            return event_pb2.ConfirmSeatsResponse()

    class Payment(payment_pb2_grpc.PaymentServiceServicer):
        async def Charge(self, request: Any, context: Any) -> Any:
            return paid

    def server(rules: dict[str, AccessRule]) -> grpc.aio.Server:
        verifier = TokenVerifier(lambda kid: None, "issuer", "audience")  # type: ignore[arg-type,return-value]
        return grpc.aio.server(
            interceptors=[*tracing.server_interceptors(), ServiceInterceptor(rules, verifier)]
        )

    def rule(*callers: str) -> AccessRule:
        return AccessRule(access_pb2.ACCESS_INTERNAL, frozenset(callers))

    servers, ports = [], {}
    for name, add, servicer, methods, callers in (
        ("event", event_pb2_grpc.add_EventServiceServicer_to_server, Event(),
         ("event.v1.EventService/LockSeat", "event.v1.EventService/ConfirmSeats"), "booking"),
        ("payment", payment_pb2_grpc.add_PaymentServiceServicer_to_server, Payment(),
         ("payment.v1.PaymentService/Charge",), "booking"),
        ("booking", booking_pb2_grpc.add_BookingServiceServicer_to_server, None,
         ("booking.v1.BookingService/CreateBooking",), "developer"),
    ):  # fmt: skip
        one = server({f"/ticketing.{method}": rule(callers) for method in methods})
        if servicer is None:
            servicer = _booking_servicer(booking_pb2, booking_pb2_grpc, ports, event_id, Card)
        add(servicer, one)
        ports[name] = one.add_secure_port(
            "127.0.0.1:0", tls.TlsFiles.for_workload(name).server_credentials()
        )
        await one.start()
        servers.append(one)
    servicer.downstream = Downstream(  # type: ignore[attr-defined]
        f"127.0.0.1:{ports['event']}",
        f"127.0.0.1:{ports['payment']}",
        5.0,
        tls.TlsFiles.for_workload("booking"),
    )
    # Envoy's part: no interceptor, a traceparent of its own span on each call.
    edge = grpc.aio.secure_channel(
        f"127.0.0.1:{ports['booking']}",
        tls.TlsFiles.for_workload("developer").channel_credentials(),
        options=tls.channel_options("booking"),
    )
    create = booking_pb2_grpc.BookingServiceStub(edge).CreateBooking
    request = booking_pb2.CreateBookingRequest(
        event_id=event_id,
        seat_ids=["standard-1-1"],
        request_id="r" * 16,
        payment_method=payment_pb2.PaymentMethod(
            card_number="4242424242424242", exp_month=12, exp_year=2040, cvc="123"
        ),
    )

    async def book(count: int) -> None:
        for _ in range(count):
            traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
            await create(request, metadata=(("traceparent", traceparent),), timeout=5)

    await book(50)  # connections up, handlers wrapped, caches warm
    if tracing._provider is not None:
        tracing._provider.force_flush()
    cpu, wall = time.process_time(), time.perf_counter()
    share = bookings // concurrency
    await asyncio.gather(*(book(share) for _ in range(concurrency)))
    if tracing._provider is not None:
        tracing._provider.force_flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = share * concurrency
    await servicer.downstream.aclose()  # type: ignore[attr-defined]
    await edge.close()
    for one in servers:
        await one.stop(None)
    return {"bookings": done, "cpu_ms": cpu * 1000 / done, "wall_ms": wall * 1000 / done}


def _booking_servicer(
    booking_pb2: Any, booking_pb2_grpc: Any, ports: dict[str, int], event_id: str, card: Any
) -> Any:
    """CreateBooking's calls, as the saga makes them through its gateways."""

    class Booking(booking_pb2_grpc.BookingServiceServicer):
        downstream: Any = None

        async def CreateBooking(self, request: Any, context: Any) -> Any:
            from runtime import tracing

            hold = await self.downstream.seats.hold(event_id, request.seat_ids, "owner", 600)
            paid_with = card("4242424242424242", 12, 2040, "123")
            await self.downstream.payments.charge(
                request.request_id, uuid.uuid4(), 1000, "EUR", paid_with, "bookings/x"
            )
            await self.downstream.seats.confirm(
                event_id, request.seat_ids, hold.owner_token, hold.fencing_token, uuid.uuid4()
            )
            tracing.current_traceparent()  # the outbox row's trace context
            return booking_pb2.Booking()

    return Booking()


def _child(args: argparse.Namespace) -> None:
    result = asyncio.run(_serve_fakes(args.collector, args.bookings, args.concurrency))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bookings", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--collector", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.collector is not None:
        _child(args)
        return

    from scripts.mesh import free_port
    from scripts.otlp_receiver import OtlpReceiver

    receiver = OtlpReceiver(free_port(), keep=False).start()
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    spans: list[float] = []
    try:
        for _ in range(args.runs):  # interleaved, so a busy moment hits both modes
            for mode in MODES:
                before = receiver.count
                ran = subprocess.run(
                    [sys.executable, "-m", "bench.tracing_cpu",
                     "--bookings", str(args.bookings), "--concurrency", str(args.concurrency),
                     "--collector", receiver.endpoint if mode == "on" else ""],
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "LOG_LEVEL": "WARNING"},
                )  # fmt: skip
                result = json.loads(ran.stdout.strip().splitlines()[-1])
                results[mode].append(result)
                if mode == "on":
                    spans.append((receiver.count - before) / (result["bookings"] + 50))
    finally:
        receiver.stop()
    cpu = {mode: statistics.median(r["cpu_ms"] for r in results[mode]) for mode in MODES}
    print(f"{args.bookings} bookings x {args.runs} runs, {args.concurrency} at a time; median:")
    for mode in MODES:
        runs = ", ".join(f"{r['cpu_ms']:.3f}" for r in results[mode])
        print(f"  tracing {mode:3}  {cpu[mode]:.3f} ms CPU per booking  ({runs})")
    print(f"  tracing costs {cpu['on'] - cpu['off']:.3f} ms CPU per booking, "
          f"{statistics.median(spans):.2f} spans per booking")  # fmt: skip


if __name__ == "__main__":
    main()

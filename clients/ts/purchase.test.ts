// A TypeScript client on the stubs `make stubs` writes to gen/ts (protobuf-es)
// with Connect-ES, through Envoy twice: over gRPC (HTTP/2, @connectrpc/connect-node)
// and over gRPC-Web (fetch, as a browser calls, @connectrpc/connect-web).
// Type-checked with `tsc --noEmit -p clients/ts`; bundled by esbuild and run:
//
//   node_modules/.bin/esbuild clients/ts/purchase.test.ts --bundle --platform=node \
//     --format=esm --packages=external --outfile=var/ts/purchase.test.mjs
//   EDGE=http://localhost:8080 ADMIN_EMAIL=admin@example.com node --test var/ts/purchase.test.mjs
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { ErrorInfoSchema } from "../../gen/ts/google/rpc/error_details_pb.js";
import { AuthService } from "../../gen/ts/ticketing/auth/v1/auth_pb.js";
import { BookingService, BookingState } from "../../gen/ts/ticketing/booking/v1/booking_pb.js";
import { EventService, SeatStatus, Tier } from "../../gen/ts/ticketing/event/v1/event_pb.js";

const edge = process.env.EDGE ?? "http://localhost:8080";
const admin = {
  email: process.env.ADMIN_EMAIL ?? "admin@example.com",
  password: process.env.ADMIN_PASSWORD ?? "admin-change-me",
};
const card = { cardNumber: "4242424242424242", expMonth: 12, expYear: 2030, cvc: "123" };
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

// The reason of an error, from the ErrorInfo in its grpc-status-details-bin.
function reason(error: unknown): [string, string | undefined] {
  const connectError = ConnectError.from(error);
  const [info] = connectError.findDetails(ErrorInfoSchema);
  return [Code[connectError.code], info?.reason];
}

async function refusal(call: Promise<unknown>): Promise<[string, string | undefined]> {
  try {
    await call;
  } catch (error) {
    return reason(error);
  }
  throw new Error("the call was not refused");
}

async function purchase(transport: Transport) {
  const auth = createClient(AuthService, transport);
  const events = createClient(EventService, transport);
  const bookings = createClient(BookingService, transport);

  const { accessToken: adminToken } = await auth.login(admin);
  const event = await events.createEvent({
    event: {
      title: "Opening night",
      venue: "Main Hall",
      startsAt: timestampFromDate(new Date("2030-06-01T20:00:00Z")),
      // int64 is a bigint in TS (a string in JSON).
      tiers: [{ tier: Tier.VIP, price: { currencyCode: "USD", amountMinor: 15000n }, rows: 2, seatsPerRow: 10 }],
    },
  }, bearer(adminToken));

  const email = `ts-${randomUUID()}@example.com`;
  await auth.register({ email, password: "correct-horse", displayName: "TS" });
  const { accessToken } = await auth.login({ email, password: "correct-horse" });

  const booking = await bookings.createBooking(
    { eventId: event.eventId, seatIds: ["vip-1-1"], paymentMethod: card, requestId: randomUUID() },
    bearer(accessToken),
  );
  assert.equal(booking.state, BookingState.CONFIRMED);
  assert.equal(booking.total?.amountMinor, 15000n);
  const seats = await events.listSeats({ eventId: event.eventId, tier: Tier.VIP, pageSize: 1 });
  assert.deepEqual(seats.seats.map((s) => [s.seatId, SeatStatus[s.status]]), [["vip-1-1", "SOLD"]]);

  // The seat is sold: the booking service refuses, with its reason.
  assert.deepEqual(await refusal(bookings.createBooking(
    { eventId: event.eventId, seatIds: ["vip-1-1"], paymentMethod: card, requestId: randomUUID() },
    bearer(accessToken),
  )), ["Aborted", "SEAT_UNAVAILABLE"]);
  // No token: Envoy's jwt_authn refuses, with an ErrorInfo all the same.
  assert.deepEqual(await refusal(bookings.getBooking({ bookingId: booking.bookingId })),
    ["Unauthenticated", "UNAUTHENTICATED"]);

  const cancelled = await bookings.cancelBooking({ bookingId: booking.bookingId }, bearer(accessToken));
  assert.equal(cancelled.state, BookingState.CANCELLED);
}

test("a purchase over gRPC through Envoy", () => purchase(createGrpcTransport({ baseUrl: edge })));

test("a purchase over gRPC-Web through Envoy", () => purchase(createGrpcWebTransport({ baseUrl: edge })));

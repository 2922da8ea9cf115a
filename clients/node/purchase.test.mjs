// A Node.js client of the ticketing mesh, built only from the .proto files
// (@grpc/grpc-js + @grpc/proto-loader): register -> login -> create event ->
// book -> get booking, straight against the services over mutual TLS with the
// developer certificate that `make up` issues into var/tls (TLS_DIR).
//
//   AUTH_ADDR=127.0.0.1:3001 EVENT_ADDR=127.0.0.1:3003 BOOKING_ADDR=127.0.0.1:3002 \
//   ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=admin-change-me \
//   node --test clients/node/purchase.test.mjs
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import path from "node:path";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, "../../protos");
const env = (name, fallback) => process.env[name] ?? fallback;

const definition = protoLoader.loadSync(
  ["ticketing/auth/v1/auth.proto", "ticketing/event/v1/event.proto",
   "ticketing/booking/v1/booking.proto"],
  { includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true },
);
const ticketing = grpc.loadPackageDefinition(definition).ticketing;

const tlsDir = env("TLS_DIR", path.resolve(here, "../../var/tls"));
const pem = (file) => readFileSync(path.join(tlsDir, file));
const credentials = grpc.credentials.createSsl(
  pem("ca.pem"), pem("developer.key"), pem("developer.pem"));
const auth = new ticketing.auth.v1.AuthService(env("AUTH_ADDR", "127.0.0.1:3001"), credentials);
const events = new ticketing.event.v1.EventService(env("EVENT_ADDR", "127.0.0.1:3003"), credentials);
const bookings = new ticketing.booking.v1.BookingService(
  env("BOOKING_ADDR", "127.0.0.1:3002"), credentials);

// Promisified unary call, with a bearer token when given.
function call(client, method, request, token) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 30_000 },
      (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

test("register, log in, create an event, book and read the booking", async () => {
  const email = `node-${randomUUID()}@example.com`;
  const user = await call(auth, "Register",
    { email, password: "node-client-pass", display_name: "Node" });
  assert.equal(user.role, "ROLE_USER");
  const { access_token: token } = await call(auth, "Login",
    { email, password: "node-client-pass" });

  const admin = await call(auth, "Login",
    { email: env("ADMIN_EMAIL", "admin@example.com"),
      password: env("ADMIN_PASSWORD", "admin-change-me") });
  const startsAt = { seconds: String(Math.floor(Date.now() / 1000) + 86_400 * 30), nanos: 0 };
  const event = await call(events, "CreateEvent", { event: {
    title: "Node night", venue: "JS Hall", starts_at: startsAt,
    tiers: [
      { tier: "TIER_STANDARD", price: { currency_code: "USD", amount_minor: "4000" },
        rows: 2, seats_per_row: 5 },
      { tier: "TIER_VIP", price: { currency_code: "USD", amount_minor: "9000" },
        rows: 1, seats_per_row: 2 },
    ] } }, admin.access_token);
  assert.equal(event.tiers.length, 2);

  const booking = await call(bookings, "CreateBooking", {
    event_id: event.event_id, seat_ids: ["vip-1-1", "standard-2-5"], request_id: randomUUID(),
    payment_method: { card_number: "4242424242424242", exp_month: 12,
                      exp_year: new Date().getFullYear() + 2, cvc: "123" },
  }, token);
  assert.equal(booking.state, "BOOKING_STATE_CONFIRMED");
  assert.equal(booking.total.amount_minor, "13000");

  const fetched = await call(bookings, "GetBooking", { booking_id: booking.booking_id }, token);
  assert.deepEqual(fetched.seats.map((s) => s.seat_id), ["vip-1-1", "standard-2-5"]);
  assert.equal(fetched.user_id, user.user_id);

  await assert.rejects(call(bookings, "GetBooking", { booking_id: booking.booking_id }),
    (error) => error.code === grpc.status.UNAUTHENTICATED);
});

// The page's logic: gRPC-Web calls to Envoy with Connect-ES on the stubs of
// gen/ts, from another origin than Envoy's (CORS preflights each call, and the
// grpc-status, grpc-message and grpc-status-details-bin headers it exposes
// carry every error's code and ErrorInfo reason).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { ErrorInfoSchema } from "../../gen/ts/google/rpc/error_details_pb.js";
import { AuthService } from "../../gen/ts/ticketing/auth/v1/auth_pb.js";
import { BookingService, BookingState } from "../../gen/ts/ticketing/booking/v1/booking_pb.js";
import { EventService, SeatStatus } from "../../gen/ts/ticketing/event/v1/event_pb.js";

const edge = new URLSearchParams(location.search).get("edge") ?? "http://localhost:8080";
const transport = createGrpcWebTransport({ baseUrl: edge });
const auth = createClient(AuthService, transport);
const events = createClient(EventService, transport);
const bookings = createClient(BookingService, transport);
const testCard = { cardNumber: "4242424242424242", expMonth: 12, expYear: 2030, cvc: "123" };

let token = "";
const element = (id: string) => document.getElementById(id) as HTMLElement;
const say = (text: string) => (element("message").textContent = text);

function refusal(error: unknown): string {
  const connectError = ConnectError.from(error);
  const [info] = connectError.findDetails(ErrorInfoSchema);
  return `Refused: ${info?.reason ?? "no reason"} (${Code[connectError.code]})`;
}

async function showEvents() {
  const { events: found } = await events.listEvents({ pageSize: 20 });
  element("events").replaceChildren(
    ...found.map((event) => {
      const item = document.createElement("li");
      const open = document.createElement("button");
      open.textContent = event.title;
      open.dataset.eventId = event.eventId;
      open.onclick = () => showSeats(event.eventId).catch((error) => say(refusal(error)));
      item.append(open);
      return item;
    }),
  );
}

async function showSeats(eventId: string) {
  const event = await events.getEvent({ eventId });
  const { seats } = await events.listSeats({ eventId, pageSize: 100 });
  element("event-title").textContent = event.title;
  element("seats").replaceChildren(
    ...seats.map((seat) => {
      const button = document.createElement("button");
      const status = SeatStatus[seat.status].toLowerCase();
      button.textContent = seat.seatId;
      button.className = status;
      button.dataset.seatId = seat.seatId;
      button.dataset.status = status;
      button.onclick = () => book(eventId, seat.seatId);
      return button;
    }),
  );
}

async function book(eventId: string, seatId: string) {
  say(`Booking ${seatId}...`);
  try {
    const booking = await bookings.createBooking(
      { eventId, seatIds: [seatId], paymentMethod: testCard, requestId: crypto.randomUUID() },
      { headers: token ? { authorization: `Bearer ${token}` } : {} },
    );
    say(`Booked ${seatId}: ${BookingState[booking.state]}, ${booking.total?.amountMinor} ${booking.total?.currencyCode}`);
  } catch (error) {
    say(refusal(error));
  }
  await showSeats(eventId);
}

element("sign-in").onsubmit = async (submitted) => {
  submitted.preventDefault();
  const form = new FormData(submitted.target as HTMLFormElement);
  try {
    const email = String(form.get("email"));
    ({ accessToken: token } = await auth.login({ email, password: String(form.get("password")) }));
    element("who").textContent = `signed in as ${email}`;
  } catch (error) {
    say(refusal(error));
  }
};

showEvents().catch((error) => say(refusal(error)));

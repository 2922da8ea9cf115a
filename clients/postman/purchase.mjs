// The purchase scenario of the Postman collection (`make protos` builds it
// into gen/postman/ from /openapi.json; `make test` runs it with newman).
// Each step is a generated request, named by its method and path, with the
// body it sends, whose token it carries, and its test script: the status it
// expects and the ids it keeps in collection variables for the steps after.
const card = { card_number: "4242424242424242", exp_month: 12, exp_year: 2099, cvc: "123" };

// Signs in and keeps the access token in the variable `token`.
const signIn = (name, email, password, token) => ({
  request: "POST /v1/auth/login",
  name,
  body: { email, password },
  test: `pm.test("200", () => pm.response.to.have.status(200));
pm.collectionVariables.set("${token}", pm.response.json().access_token);`,
});

export const steps = [
  signIn("The admin signs in", "{{admin_email}}", "{{admin_password}}", "admin_token"),
  {
    request: "POST /v1/events",
    name: "The admin creates an event",
    token: "admin_token",
    prerequest: `const month = new Date(Date.now() + 30 * 24 * 3600 * 1000);
pm.collectionVariables.set("starts_at", month.toISOString());`,
    body: {
      title: "Postman night",
      venue: "Main Hall",
      starts_at: "{{starts_at}}",
      tiers: [
        { tier: "TIER_VIP", price: { currency_code: "USD", amount_minor: "15000" }, rows: 2, seats_per_row: 5 },
      ],
    },
    test: `pm.test("200", () => pm.response.to.have.status(200));
pm.test("10 seats on sale", () => pm.expect(pm.response.json().tiers[0].available).to.equal(10));
pm.collectionVariables.set("event_id", pm.response.json().event_id);`,
  },
  {
    request: "POST /v1/auth/register",
    name: "A fan registers",
    prerequest: `pm.collectionVariables.set("fan_email", "fan-" + Date.now() + "@example.com");`,
    body: { email: "{{fan_email}}", password: "correct-horse-battery", display_name: "Fan" },
    test: `pm.test("200", () => pm.response.to.have.status(200));
pm.test("a user", () => pm.expect(pm.response.json().role).to.equal("ROLE_USER"));`,
  },
  signIn("The fan signs in", "{{fan_email}}", "correct-horse-battery", "fan_token"),
  {
    request: "POST /v1/bookings",
    name: "The fan books two seats",
    token: "fan_token",
    body: {
      event_id: "{{event_id}}",
      seat_ids: ["vip-1-1", "vip-1-2"],
      payment_method: card,
      request_id: "{{$guid}}",
    },
    test: `pm.test("200", () => pm.response.to.have.status(200));
const booking = pm.response.json();
pm.test("confirmed", () => pm.expect(booking.state).to.equal("BOOKING_STATE_CONFIRMED"));
pm.test("priced by the server", () => pm.expect(booking.total.amount_minor).to.equal("30000"));
pm.collectionVariables.set("booking_id", booking.booking_id);
pm.collectionVariables.set("payment_id", booking.payment_id);`,
  },
  {
    request: "POST /v1/bookings",
    name: "A second booking of the same seat is refused",
    token: "fan_token",
    body: {
      event_id: "{{event_id}}",
      seat_ids: ["vip-1-2"],
      payment_method: card,
      request_id: "{{$guid}}",
    },
    test: `pm.test("409", () => pm.response.to.have.status(409));
const info = pm.response.json().details.find((d) => d["@type"].endsWith("ErrorInfo"));
pm.test("SEAT_UNAVAILABLE", () => pm.expect(info.reason).to.equal("SEAT_UNAVAILABLE"));`,
  },
  {
    request: "GET /v1/bookings/{booking_id}",
    name: "The fan reads the booking",
    token: "fan_token",
    test: `pm.test("200", () => pm.response.to.have.status(200));
pm.test("still confirmed", () => pm.expect(pm.response.json().state).to.equal("BOOKING_STATE_CONFIRMED"));`,
  },
  {
    request: "GET /v1/payments/{payment_id}",
    name: "The fan reads the payment",
    token: "fan_token",
    test: `pm.test("200", () => pm.response.to.have.status(200));
pm.test("paid by visa", () => pm.expect(pm.response.json().card_brand).to.equal("visa"));`,
  },
  {
    request: "POST /v1/bookings/{booking_id}:cancel",
    name: "The fan cancels",
    token: "fan_token",
    body: {},
    test: `pm.test("200", () => pm.response.to.have.status(200));
pm.test("cancelled", () => pm.expect(pm.response.json().state).to.equal("BOOKING_STATE_CANCELLED"));`,
  },
  {
    request: "GET /v1/payments/{payment_id}",
    name: "The payment is refunded",
    token: "fan_token",
    test: `pm.test("200", () => pm.response.to.have.status(200));
pm.test("refunded", () => pm.expect(pm.response.json().state).to.equal("PAYMENT_STATE_REFUNDED"));`,
  },
];

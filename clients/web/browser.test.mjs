// The page in a real browser: Debian's Chromium, headless, driven by
// playwright-core. The page comes from PAGE, another origin than the edge's
// (EDGE), so every gRPC-Web call is a CORS request with a preflight, and an
// error's reason is readable only through the headers Envoy exposes.
//   EDGE=http://127.0.0.1:8080 PAGE=http://127.0.0.1:3000/ node --test clients/web/browser.test.mjs
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const edge = process.env.EDGE ?? "http://127.0.0.1:8080";
const page_url = process.env.PAGE ?? "http://127.0.0.1:3000/";
const card = { card_number: "4242424242424242", exp_month: 12, exp_year: 2030, cvc: "123" };

// Setting the scene over HTTP/JSON: an event, and two buyers.
async function post(path, body, token) {
  const reply = await fetch(edge + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token && { authorization: `Bearer ${token}` }) },
    body: JSON.stringify(body),
  });
  assert.equal(reply.status, 200, `${path}: ${await reply.clone().text()}`);
  return reply.json();
}

async function buyer(name) {
  const email = `${name}-${randomUUID()}@example.com`;
  await post("/v1/auth/register", { email, password: "correct-horse", display_name: name });
  return { email, token: (await post("/v1/auth/login", { email, password: "correct-horse" })).access_token };
}

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});
after(() => browser?.close());

test("list events, open a seat map, book a seat, and read a refusal's reason", async () => {
  assert.notEqual(new URL(page_url).origin, new URL(edge).origin);
  const admin = await post("/v1/auth/login", {
    email: process.env.ADMIN_EMAIL ?? "admin@example.com",
    password: process.env.ADMIN_PASSWORD ?? "admin-change-me",
  });
  const title = `Browser night ${randomUUID().slice(0, 8)}`;
  // Soon, so that it is on the page's first page of events (listed by start).
  const startsAt = new Date(Date.now() + 3_600_000).toISOString();
  const event = await post("/v1/events", {
    title, venue: "Main Hall", starts_at: startsAt,
    tiers: [{ tier: "TIER_VIP", price: { currency_code: "USD", amount_minor: "15000" }, rows: 1, seats_per_row: 4 }],
  }, admin.access_token);
  const fan = await buyer("fan");
  const rival = await buyer("rival");

  const page = await browser.newPage();
  const crossOrigin = [];
  page.on("response", (response) => {
    if (response.url().startsWith(edge)) crossOrigin.push(response.headers()["access-control-allow-origin"]);
  });
  await page.goto(`${page_url}?edge=${encodeURIComponent(edge)}`);
  await page.getByRole("button", { name: title }).click();
  const seats = page.locator("#seats button");
  await assert.doesNotReject(seats.first().waitFor());
  assert.deepEqual(await seats.evaluateAll((all) => all.map((b) => [b.dataset.seatId, b.dataset.status])),
    [["vip-1-1", "available"], ["vip-1-2", "available"], ["vip-1-3", "available"], ["vip-1-4", "available"]]);
  const message = page.locator("#message");

  // Not signed in: Envoy refuses, and the page reads the reason from
  // grpc-status-details-bin, which CORS exposes to it.
  await page.locator('[data-seat-id="vip-1-1"]').click();
  await page.locator("#message", { hasText: "Refused" }).waitFor();
  assert.equal(await message.textContent(), "Refused: UNAUTHENTICATED (Unauthenticated)");

  await page.fill('input[name="email"]', fan.email);
  await page.fill('input[name="password"]', "correct-horse");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#who", { hasText: "signed in as" }).waitFor();
  await page.locator('[data-seat-id="vip-1-1"]').click();
  await page.locator("#message", { hasText: "Booked" }).waitFor();
  assert.equal(await message.textContent(), "Booked vip-1-1: CONFIRMED, 15000 USD");
  await page.locator('[data-seat-id="vip-1-1"][data-status="sold"]').waitFor();

  // A rival buys vip-1-2 while the page still shows it free: the booking
  // service refuses the page's try, with its reason.
  const taken = await post("/v1/bookings", { event_id: event.event_id, seat_ids: ["vip-1-2"],
    payment_method: card, request_id: randomUUID() }, rival.token);
  assert.equal(taken.state, "BOOKING_STATE_CONFIRMED");
  assert.equal(await page.locator('[data-seat-id="vip-1-2"]').getAttribute("data-status"), "available");
  await page.locator('[data-seat-id="vip-1-2"]').click();
  await page.locator("#message", { hasText: "Refused" }).waitFor();
  assert.equal(await message.textContent(), "Refused: SEAT_UNAVAILABLE (Aborted)");
  await page.locator('[data-seat-id="vip-1-2"][data-status="sold"]').waitFor();
  // Every call was cross-origin and allowed for the page's origin alone.
  assert.ok(crossOrigin.length > 0 && crossOrigin.every((origin) => origin === new URL(page_url).origin));
});

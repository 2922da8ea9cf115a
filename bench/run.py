"""`make bench`: measures the running mesh (`make up` first) the way users load it.

Sections, each with its baseline measured in the same run:
  rpc     empty health RPC vs LockSeat+ReleaseSeat vs GetEvent, one server, same concurrency
  edge    GetEvent over direct gRPC vs HTTP/JSON through Envoy
  sale    a flash sale through Envoy: N buyers book 1-4 random seats until sold out
  sale2   the same sale in two steps: each buyer holds the seats (CreateHold), then
          books the hold (CreateBooking with hold_id)
  holds   best-available holds (CreateHold, 2 seats) on a 100,000-seat event,
          16 buyers at once through Envoy
  cpu     CPU per booking in every process (services, PostgreSQL, Redis, RabbitMQ,
          Envoy), over sequential bookings with the emails counted apart
  scale   GetEvent and first-page ListSeats for a 1,000- vs a 100,000-seat event
  memory  peak RSS of every service process after the sale and a burst of logins
  email   booking confirmed -> email in the SMTP sink, over 100 bookings
  chaos   the same sale twice, undisturbed and with one service (--chaos-service,
          payment) killed for 5 s mid-way: buyers retrying 503s with the same
          request_id as clients do; confirmed/s of each, bookings failed or
          refunded by the outage, and restart -> last PENDING booking settled
  refund  an event of 2,000 confirmed bookings cancelled: until all are refunded,
          and until every buyer's email is in the sink
  search  ListEvents with each filter over 100,000 more events
  tracing the sale six times: tracing off, on, sampled, sampled, on, off (on:
          every request traced, every service and Envoy exporting to an OTLP
          receiver the bench runs; sampled: Envoy tracing 10% of the requests,
          the services following its decision), each after restarting the mesh's
          services and Envoy so, one process at a time; each mode's two sales
          pooled; last, the mesh is restarted as `make up` started it
  redis   Redis loses all its data (FLUSHDB of the mesh's database) under a
          5,000-seat event sold half way and a 100,000-seat one with 60,000
          sold, while 4 clients each hold, book and read the seat map: until
          the first hold succeeds again, until the seat map counts every
          sale, and every answer the clients got meanwhile

Prints a table and writes bench/results/<time>.json; a full run also writes
bench/latest.md (which the README quotes), each with the commit and the core
count it was measured on.

    python -m bench.run [--buyers 64] [--seats 5000] [--seconds 5] [--only sale,tracing]

It measures whatever mesh EDGE_PORT, the *_GRPC_ADDR and *_DATABASE_URL
variables and MESH_STATE (its pid files and mail) point at; `make up`'s by default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.http import HttpConnection
from event.domain import Tier
from runtime import tls
from runtime.config import REPO_ROOT, SERVICES, grpc_addr
from runtime.db import libpq_url
from ticketing.auth.v1 import auth_pb2, auth_pb2_grpc
from ticketing.common.v1 import money_pb2
from ticketing.event.v1 import event_pb2, event_pb2_grpc
from ticketing.payment.v1 import payment_pb2, payment_pb2_grpc

EDGE = f"http://127.0.0.1:{os.environ.get('EDGE_PORT', '8080')}"
STATE = Path(os.environ.get("MESH_STATE", REPO_ROOT / "var"))
ADMIN = (
    os.environ.get("ADMIN_EMAIL", "admin@example.com"),
    os.environ.get("ADMIN_PASSWORD", "admin-change-me"),
)
CARD = {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123"}
PG = os.environ.get("PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
DEVELOPER = tls.TlsFiles.for_workload("developer")
# LockSeat and ReleaseSeat take calls from booking alone; the bench plays it.
BOOKING = tls.TlsFiles.for_workload("booking")


def grpc_channel(service: str, identity: tls.TlsFiles = DEVELOPER) -> grpc.aio.Channel:
    """A mutual-TLS channel to the first process of `service`."""
    return tls.aio_channel(grpc_addr(service).split(",")[0], service, identity, options=())


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    return {
        "ops": len(latencies),
        "per_second": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


async def hammer(
    concurrency: int, seconds: float, operation: Callable[[int], Awaitable[None]]
) -> dict[str, float]:
    """Runs `operation(worker)` back to back in `concurrency` workers for `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await operation(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return summary(latencies, time.perf_counter() - started)


async def login(http: HttpConnection, email: str, password: str) -> str:
    status, body = await http.request(
        "POST", "/v1/auth/login", {"email": email, "password": password}
    )
    assert status == 200, body
    return body["access_token"]


async def create_event(
    http: HttpConnection, admin: str, title: str, tiers: list[tuple[str, int, int, int]]
) -> dict[str, Any]:
    starts = (datetime.now(UTC) + timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, body = await http.request(
        "POST",
        "/v1/events",
        {
            "title": title,
            "venue": "Bench Arena",
            "starts_at": starts,
            "tiers": [
                {
                    "tier": t,
                    "price": {"currency_code": "USD", "amount_minor": str(p)},
                    "rows": r,
                    "seats_per_row": s,
                }
                for t, p, r, s in tiers
            ],
        },
        admin,
    )
    assert status == 200, body
    return body


# -- sections -----------------------------------------------------------------------------


async def serving(
    service: str, args: argparse.Namespace, operation: Callable[[int], Awaitable[None]]
) -> dict[str, float]:
    """`hammer`, with the CPU the serving process spent per operation."""
    before = cpu_seconds()[service]
    result = await hammer(args.concurrency, args.seconds, operation)
    spent = cpu_seconds()[service] - before
    return {**result, "server_cpu_ms": round(spent * 1000 / max(result["ops"], 1), 3)}


async def rpc_section(args: argparse.Namespace, admin: str) -> dict[str, Any]:
    http = HttpConnection(EDGE)
    event = await create_event(http, admin, "rpc bench", [("TIER_STANDARD", 1000, 100, 100)])
    async with (
        grpc_channel("event") as channel,
        grpc_channel("event", BOOKING) as as_booking,
        grpc_channel("payment", BOOKING) as to_payment,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        events = event_pb2_grpc.EventServiceStub(channel)
        holds = event_pb2_grpc.EventServiceStub(as_booking)
        payments = payment_pb2_grpc.PaymentServiceStub(to_payment)
        check = health_pb2.HealthCheckRequest()
        get = event_pb2.GetEventRequest(event_id=event["event_id"])

        async def empty(_: int) -> None:
            await health.Check(check)

        async def hold_and_release(worker: int) -> None:
            seat = f"standard-{worker % 100 + 1}-{worker // 100 + 1}"
            owner = uuid.uuid4().hex
            await holds.LockSeat(
                event_pb2.LockSeatRequest(
                    event_id=event["event_id"], seat_ids=[seat], owner=owner, ttl_seconds=30
                )
            )
            await holds.ReleaseSeat(
                event_pb2.ReleaseSeatRequest(
                    event_id=event["event_id"], seat_ids=[seat], owner_token=owner
                )
            )

        async def get_event(_: int) -> None:
            await events.GetEvent(get)

        async def charge(_: int) -> None:
            await payments.Charge(
                payment_pb2.ChargeRequest(
                    idempotency_key=str(uuid.uuid4()),
                    user_id=str(uuid.uuid4()),
                    amount=money_pb2.Money(currency_code="USD", amount_minor=1000),
                    payment_method=payment_pb2.PaymentMethod(**CARD),
                    reference="bench",
                )
            )

        await hammer(args.concurrency, 1, empty)  # warm up
        results = {
            "empty_rpc": await serving("event", args, empty),
            "lock_release_pair": await serving("event", args, hold_and_release),
            "get_event": await serving("event", args, get_event),
            "charge": await serving("payment", args, charge),
        }
    await http.close()
    for name in ("lock_release_pair", "get_event"):
        results[f"{name}_vs_empty"] = round(
            results[name]["per_second"] / results["empty_rpc"]["per_second"], 2
        )
    return results


async def edge_section(args: argparse.Namespace, admin: str) -> dict[str, Any]:
    http = HttpConnection(EDGE)
    event = await create_event(http, admin, "edge bench", [("TIER_VIP", 5000, 10, 10)])
    await http.close()
    async with grpc_channel("event") as channel:
        events = event_pb2_grpc.EventServiceStub(channel)
        get = event_pb2.GetEventRequest(event_id=event["event_id"])

        async def direct(_: int) -> None:
            await events.GetEvent(get)

        direct_result = await hammer(args.concurrency, args.seconds, direct)
    connections = [HttpConnection(EDGE) for _ in range(args.concurrency)]

    async def via_envoy(worker: int) -> None:
        status, _ = await connections[worker].request("GET", f"/v1/events/{event['event_id']}")
        assert status == 200

    envoy_result = await hammer(args.concurrency, args.seconds, via_envoy)
    for connection in connections:
        await connection.close()
    return {
        "grpc_direct": direct_result,
        "http_via_envoy": envoy_result,
        "envoy_vs_direct": round(envoy_result["per_second"] / direct_result["per_second"], 2),
    }


async def register_buyers(count: int) -> list[str]:
    """Accounts made beforehand, straight at the auth service: Envoy rate-limits
    sign-ups and logins, as it should during a sale."""
    tokens = []
    async with grpc_channel("auth") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        for n in range(count):
            email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
            await auth.Register(
                auth_pb2.RegisterRequest(
                    email=email, password="bench-password", display_name=f"Buyer {n}"
                )
            )
            pair = await auth.Login(auth_pb2.LoginRequest(email=email, password="bench-password"))
            tokens.append(pair.access_token)
    return tokens


class FreeSeats:
    """The seats buyers believe free: random picks and removals in O(1), so the
    load generator does not spend the services' CPU sorting 5,000 ids a try."""

    def __init__(self, seat_ids: list[str]) -> None:
        self._ids = list(seat_ids)
        self._where = {seat: i for i, seat in enumerate(self._ids)}

    def __len__(self) -> int:
        return len(self._ids)

    def sample(self, rng: random.Random, count: int) -> list[str]:
        return [self._ids[i] for i in rng.sample(range(len(self._ids)), min(count, len(self)))]

    def discard(self, seat_ids: list[str]) -> None:
        for seat in seat_ids:
            where = self._where.pop(seat, None)
            if where is None:
                continue
            last = self._ids.pop()
            if where < len(self._ids):  # fill the hole with the last seat
                self._ids[where] = last
                self._where[last] = where


async def purchase(
    http: HttpConnection, token: str, event_id: str, wanted: list[str], two_step: bool
) -> tuple[int, Any]:
    """One buyer's try: book the seats, or hold them and then book the hold."""
    booking: dict[str, Any] = {"payment_method": CARD, "request_id": str(uuid.uuid4())}
    if two_step:
        status, held = await http.request(
            "POST",
            f"/v1/events/{event_id}/holds",
            {"seat_ids": wanted, "request_id": str(uuid.uuid4())},
            token,
        )
        if status != 200:
            return status, held
        booking["hold_id"] = held["hold_id"]
    else:
        booking |= {"event_id": event_id, "seat_ids": wanted}
    return await http.request("POST", "/v1/bookings", booking, token)


async def sale_section(
    args: argparse.Namespace, admin: str, two_step: bool = False
) -> dict[str, Any]:
    tokens = await register_buyers(args.buyers)
    http = HttpConnection(EDGE)
    rows = args.seats // 50
    event = await create_event(
        http,
        admin,
        "Two-step flash sale" if two_step else "Flash sale",
        [("TIER_STANDARD", 5000, rows * 4 // 5, 50), ("TIER_VIP", 15000, rows // 5, 50)],
    )
    await http.close()
    event_id = event["event_id"]
    capacity = sum(t["capacity"] for t in event["tiers"])
    # What the buyers believe is free: a seat map they refresh from their 409s.
    free = [
        f"{t['tier'].removeprefix('TIER_').lower()}-{r}-{n}"
        for t in event["tiers"]
        for r in range(1, t["rows"] + 1)
        for n in range(1, t["seats_per_row"] + 1)
    ]
    believed = FreeSeats(free)
    outcomes: dict[int, int] = {}
    latencies: list[float] = []
    confirmed: list[str] = []

    async def buyer(n: int) -> None:
        http = HttpConnection(EDGE)
        rng = random.Random(n)
        while believed:
            wanted = believed.sample(rng, rng.randint(1, 4))
            started = time.perf_counter()
            status, body = await purchase(http, tokens[n], event_id, wanted, two_step)
            latencies.append(time.perf_counter() - started)
            outcomes[status] = outcomes.get(status, 0) + 1
            if status == 200:
                confirmed.append(body["booking_id"])
                believed.discard(wanted)
            elif status == 409:
                taken = body["details"][0]["metadata"].get("seat_ids", "")
                believed.discard(taken.split(",") if taken else wanted)
        await http.close()

    cpu_before, own_before = cpu_seconds(), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(buyer(n) for n in range(args.buyers)))
    elapsed = time.perf_counter() - started
    cpu_after, own_cpu = cpu_seconds(), time.process_time() - own_before
    audit = audit_sale(event_id)
    http = HttpConnection(EDGE)
    _, final = await http.request("GET", f"/v1/events/{event_id}")
    await http.close()
    emails = await wait_for_emails(set(confirmed), patience=120)
    last_email_seconds = round(time.perf_counter() - started - elapsed, 1)
    attempts = sum(outcomes.values())
    by_process = {
        n: (cpu_after[n] - cpu_before.get(n, 0.0)) * 1000 / max(len(confirmed), 1)
        for n in sorted(cpu_after)
        if n != "notification"
    }
    return {
        "buyers": args.buyers,
        "capacity": capacity,
        "seconds": round(elapsed, 2),
        "confirmed_bookings": len(confirmed),
        "confirmed_per_second": round(len(confirmed) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "attempts": attempts,
        "status_counts": {str(k): v for k, v in sorted(outcomes.items())},
        "conflict_share": round(outcomes.get(409, 0) / attempts, 3),
        "seats_sold": sum(t["sold"] for t in final["tiers"]),
        "seats_sold_twice": audit["sold_twice"],
        "seats_sold_without_booking": audit["orphans"],
        "seats_left_held": sum(t["held"] for t in final["tiers"]),
        "emails_sent": emails,
        "emails_expected": len(confirmed),
        "last_email_after_seconds": last_email_seconds,
        # Everything but the emails, refused attempts included, per confirmed booking.
        "cpu_ms_per_confirmed": round(sum(by_process.values()), 2),
        "cpu_ms_per_confirmed_by_process": {n: round(ms, 2) for n, ms in by_process.items()},
        # The buyers run on the same two cores: what they take, the mesh cannot use.
        "load_generator_cpu_share": round(own_cpu / (elapsed * (os.cpu_count() or 1)), 3),
    }


def database_url(service: str) -> str:
    return libpq_url(os.environ.get(f"{service.upper()}_DATABASE_URL", f"{PG}/{service}"))


def audit_sale(event_id: str) -> dict[str, int]:
    with psycopg.connect(database_url("event")) as conn:
        [(sold_twice,)] = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM seat_sales WHERE event_id = %s AND "
            "returned_time IS NULL GROUP BY tier, row, number HAVING count(*) > 1) x",
            (event_id,),
        ).fetchall()
        sold = {
            str(b)
            for (b,) in conn.execute(
                "SELECT DISTINCT booking_id FROM seats WHERE event_id = %s AND status = 'SOLD'",
                (event_id,),
            )
        }
    with psycopg.connect(database_url("booking")) as conn:
        confirmed = {
            str(b)
            for (b,) in conn.execute(
                "SELECT booking_id FROM bookings WHERE event_id = %s AND state = 2", (event_id,)
            )
        }
    return {"sold_twice": sold_twice, "orphans": len(sold - confirmed)}


# Booking ids in the sink's emails, with when each landed; each email read
# once, by name: the sink keeps every run's emails (over 100,000 after a few
# benches), and globbing and parsing them all at each poll took the CPU the
# notification service needed.
_EMAILS_READ: set[str] = set()
_DELIVERED: dict[str, float] = {}


def _emails_in_sink() -> set[str]:
    directory = STATE / "mail"
    return {n for n in os.listdir(directory) if n.endswith(".eml")} if directory.is_dir() else set()


def skip_earlier_emails() -> None:
    """Leaves the emails of earlier runs unread: none is about this run's bookings."""
    _EMAILS_READ.update(_emails_in_sink())


def delivered_booking_ids() -> dict[str, float]:
    """Booking ids mentioned in the sink's emails since the run began, with when
    each email landed."""
    directory = STATE / "mail"
    for name in sorted(_emails_in_sink() - _EMAILS_READ):
        path = directory / name
        _DELIVERED.update(dict.fromkeys(_booking_ids_in(path.read_bytes()), path.stat().st_mtime))
        _EMAILS_READ.add(name)
    return dict(_DELIVERED)


def _booking_ids_in(raw: bytes) -> list[str]:
    for part in message_from_bytes(raw).walk():
        if part.get_content_type() == "text/plain":
            text = part.get_payload(decode=True).decode(errors="replace")
            return [word for word in text.split() if len(word) == 36 and word.count("-") == 4]
    return []


async def wait_for_emails(booking_ids: set[str], patience: float) -> int:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        arrived = booking_ids & set(delivered_booking_ids())
        if len(arrived) == len(booking_ids):
            break
        await asyncio.sleep(1)
    return len(booking_ids & set(delivered_booking_ids()))


# Processes outside the services, by a substring of their command line.
BACKING_PROCESSES = {
    "postgres": "postgres",
    "rabbitmq": "beam.smp",
    "redis": "redis-server",
}


async def book_one(http: HttpConnection, token: str, event_id: str, seat_id: str) -> str:
    """Books one seat through Envoy; the booking's id."""
    status, body = await http.request(
        "POST",
        "/v1/bookings",
        {
            "event_id": event_id,
            "seat_ids": [seat_id],
            "payment_method": CARD,
            "request_id": str(uuid.uuid4()),
        },
        token,
    )
    assert status == 200, body
    return body["booking_id"]


def mesh_pids() -> dict[str, str]:
    """The pid of every process `make up` started but the SMTP sink, by name
    (`event`, `event-2` for a replica, `envoy`)."""
    return {
        pid_file.stem: pid_file.read_text().strip()
        for pid_file in sorted((STATE / "run").glob("*.pid"))
        if pid_file.stem != "smtp"
    }


def with_descendants(pid: str) -> list[str]:
    """The process and every process under it (Envoy runs under a shell)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += with_descendants(child)
    return found


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) so far per part of the mesh: the services and
    Envoy by their pid files, the backing services by name (all their processes,
    so load from anything else on the machine counts too: measure on a quiet one)."""
    pids: dict[str, list[str]] = {}
    for process, pid in mesh_pids().items():
        pids.setdefault(process.split("-")[0], []).extend(with_descendants(pid))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        for name, marker in BACKING_PROCESSES.items():
            if marker in command:
                pids.setdefault(name, []).append(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for name, group in pids.items():
        for pid in group:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # Own time plus that of exited children (PostgreSQL's backends come and go).
            spent = sum(int(f) for f in fields[11:15])
            totals[name] = totals.get(name, 0.0) + spent / ticks
    return totals


def emailing_cpu(start: float) -> float:
    """CPU the resumed notification service spends until its backlog is sent."""
    last, quiet = start, 0
    while quiet < 3:
        time.sleep(1)
        now = cpu_seconds()["notification"]
        quiet = quiet + 1 if now - last < 0.05 else 0
        last = now
    return last - start


async def cpu_section(admin: str, count: int = 300) -> dict[str, Any]:
    """Sequential bookings through Envoy with the notification service paused,
    so the sale path is measured alone; then its emails, once it resumes."""
    http = HttpConnection(EDGE)
    event = await create_event(
        http, admin, "cpu profile", [("TIER_STANDARD", 1000, count // 50 + 1, 50)]
    )
    [token] = await register_buyers(1)
    emailer = int(mesh_pids()["notification"])
    os.kill(emailer, signal.SIGSTOP)
    try:
        before = cpu_seconds()
        started = time.perf_counter()
        for n in range(count):
            await book_one(http, token, event["event_id"], f"standard-{n // 50 + 1}-{n % 50 + 1}")
        elapsed = time.perf_counter() - started
        after = cpu_seconds()
    finally:
        os.kill(emailer, signal.SIGCONT)
        await http.close()
    sale_path = {
        name: round((after[name] - before.get(name, 0.0)) * 1000 / count, 2)
        for name in after
        if name != "notification"
    }
    email = round(emailing_cpu(after["notification"]) * 1000 / count, 2)
    return {
        "bookings": count,
        "wall_ms_per_booking": round(elapsed * 1000 / count, 2),
        "sale_path_ms": dict(sorted(sale_path.items(), key=lambda item: -item[1])),
        "sale_path_total_ms": round(sum(sale_path.values()), 2),
        "email_ms": email,
    }


async def scale_section(args: argparse.Namespace, admin: str) -> dict[str, Any]:
    http = HttpConnection(EDGE)
    # The same three tiers in both, so only the number of seats differs.
    small = await create_event(
        http,
        admin,
        "1k seats",
        [("TIER_STANDARD", 1000, 16, 50), ("TIER_VIP", 5000, 3, 50), ("TIER_VVIP", 9000, 1, 50)],
    )
    started = time.perf_counter()
    big = await create_event(
        http,
        admin,
        "100k seats",
        [
            ("TIER_STANDARD", 1000, 160, 500),
            ("TIER_VIP", 5000, 30, 500),
            ("TIER_VVIP", 9000, 10, 500),
        ],
    )
    created_in = time.perf_counter() - started
    await http.close()
    results: dict[str, Any] = {"create_100k_seconds": round(created_in, 2)}
    async with grpc_channel("event") as channel:
        events = event_pb2_grpc.EventServiceStub(channel)
        # Each twice, in the order 1k, 100k, 100k, 1k, so whatever the machine
        # does meanwhile weighs on both alike.
        runs: dict[str, list[dict[str, float]]] = {"1k": [], "100k": []}
        for name, event in (("1k", small), ("100k", big), ("100k", big), ("1k", small)):
            get = event_pb2.GetEventRequest(event_id=event["event_id"])
            runs[name].append(
                await hammer(1, args.seconds / 4, lambda _, r=get: events.GetEvent(r))
            )
        for name, event in (("1k", small), ("100k", big)):
            seats = event_pb2.ListSeatsRequest(event_id=event["event_id"], page_size=100)

            async def list_seats(_: int, request: Any = seats) -> None:
                await events.ListSeats(request)

            results[f"list_seats_{name}"] = await hammer(1, args.seconds / 2, list_seats)
            first, second = runs[name]
            results[f"get_event_{name}"] = {
                **first,
                "p50_ms": round((first["p50_ms"] + second["p50_ms"]) / 2, 3),
            }
    results["get_event_100k_vs_1k"] = round(
        results["get_event_100k"]["p50_ms"] / results["get_event_1k"]["p50_ms"], 2
    )
    return results


async def holds_section(args: argparse.Namespace, admin: str, callers: int = 16) -> dict[str, Any]:
    """Best-available on a 100,000-seat event: `callers` buyers at once each
    ask for the best two standard seats, again and again, through Envoy."""
    tokens = await register_buyers(callers)
    http = HttpConnection(EDGE)
    event = await create_event(
        http,
        admin,
        "100k seats, best available",
        [
            ("TIER_STANDARD", 1000, 160, 500),
            ("TIER_VIP", 5000, 30, 500),
            ("TIER_VVIP", 9000, 10, 500),
        ],
    )
    await http.close()
    connections = [HttpConnection(EDGE) for _ in range(callers)]
    placements: dict[str, int] = {}

    async def best_available(worker: int) -> None:
        status, body = await connections[worker].request(
            "POST",
            f"/v1/events/{event['event_id']}/holds",
            {"best_available": {"tier": "TIER_STANDARD", "quantity": 2}},
            tokens[worker],
        )
        assert status == 200, body
        placement = body.get("placement", "")
        placements[placement] = placements.get(placement, 0) + 1

    result = await hammer(callers, args.seconds, best_available)
    for connection in connections:
        await connection.close()
    return {"callers": callers, **result, "placements": placements}


async def login_burst(count: int = 200) -> int:
    """`count` logins at once, each an argon2 check (~19 MiB while it runs), so
    the memory section sees what a rush of users signing in costs the auth service."""
    # Straight at the auth service: Envoy's login rate limit (60 a minute by
    # default) would turn most of the burst away before it reached auth.
    async with grpc_channel("auth") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        request = auth_pb2.LoginRequest(email=ADMIN[0], password=ADMIN[1])
        await asyncio.gather(*(auth.Login(request) for _ in range(count)))
    return count


def memory_section(logins: int) -> dict[str, Any]:
    """Peak resident memory (VmHWM) of every process `make up` started."""
    peaks = {}
    for process, pid in mesh_pids().items():
        if process == "envoy":
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        peaks[process] = round(kb / 1024, 1)
    return {"logins": logins, "peak_rss_mb": peaks, "max_mb": max(peaks.values(), default=0)}


async def email_section(admin: str, count: int = 100) -> dict[str, Any]:
    http = HttpConnection(EDGE)
    event = await create_event(http, admin, "email bench", [("TIER_STANDARD", 2000, 10, 10)])
    [token] = await register_buyers(1)
    confirmed_at: dict[str, float] = {}
    for n in range(count):
        booking_id = await book_one(
            http, token, event["event_id"], f"standard-{n // 10 + 1}-{n % 10 + 1}"
        )
        confirmed_at[booking_id] = time.time()
    await http.close()
    await wait_for_emails(set(confirmed_at), patience=120)
    landed = delivered_booking_ids()
    delays = [landed[b] - t for b, t in confirmed_at.items() if b in landed]
    return {
        "bookings": count,
        "emails": len(delays),
        "median_ms": round(statistics.median(delays) * 1000, 1) if delays else None,
        "p95_ms": round(percentile(delays, 0.95) * 1000, 1) if delays else None,
    }


CHAOS_OUTAGE_SECONDS = 5.0


async def retrying_sale(
    event: dict[str, Any],
    tokens: list[str],
    meanwhile: Callable[[asyncio.Event], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Buyers book 1-4 random seats until sold out, each attempt retried with its
    request_id on a 503 (after its retry_after_seconds, or 0.3 s) as a client
    would, until a final answer. `meanwhile(half sold)` runs beside the buyers
    (the outage); the event is set once half the seats are sold."""
    event_id = event["event_id"]
    believed = FreeSeats(
        [
            f"{t['tier'].removeprefix('TIER_').lower()}-{r}-{n}"
            for t in event["tiers"]
            for r in range(1, t["rows"] + 1)
            for n in range(1, t["seats_per_row"] + 1)
        ]
    )
    statuses: dict[str, int] = {}
    confirmed: list[str] = []
    sold = [0]
    half_sold = asyncio.Event()
    capacity = len(believed)
    latencies: list[float] = []

    async def buyer(n: int) -> None:
        http = HttpConnection(EDGE)
        rng = random.Random(n)
        while believed:
            wanted = believed.sample(rng, rng.randint(1, 4))
            request_id = str(uuid.uuid4())
            started = time.perf_counter()
            while True:
                try:
                    status, body = await http.request(
                        "POST",
                        "/v1/bookings",
                        {
                            "event_id": event_id,
                            "seat_ids": wanted,
                            "payment_method": CARD,
                            "request_id": request_id,
                        },
                        tokens[n],
                    )
                except (OSError, ValueError):  # the edge dropped the connection
                    await http.close()
                    status, body = 0, None
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status not in (0, 503):
                    break
                info = (body or {}).get("details", [{}])[0].get("metadata", {})
                await asyncio.sleep(float(info.get("retry_after_seconds", 0.3)))
            latencies.append(time.perf_counter() - started)
            if status == 200:
                confirmed.append(body["booking_id"])
                believed.discard(wanted)
                sold[0] += len(wanted)
                if sold[0] * 2 >= capacity:
                    half_sold.set()
            elif status == 409:
                taken = body["details"][0]["metadata"].get("seat_ids", "")
                believed.discard(taken.split(",") if taken else wanted)
            else:  # a final error: the sale moves on past these seats
                believed.discard(wanted)
        await http.close()

    started = time.perf_counter()
    beside = asyncio.create_task(meanwhile(half_sold)) if meanwhile else None
    await asyncio.gather(*(buyer(n) for n in range(len(tokens))))
    elapsed = time.perf_counter() - started
    if beside is not None:
        await beside
    return {
        "seconds": round(elapsed, 2),
        "confirmed_bookings": len(confirmed),
        "confirmed_per_second": round(len(confirmed) / elapsed, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "answers": dict(sorted(statuses.items())),
        "client_errors": sum(v for k, v in statuses.items() if k not in ("200", "409", "503")),
    }


def booking_states(event_id: str) -> dict[str, int]:
    """PENDING / CONFIRMED / FAILED / refunded (FAILED with money taken) bookings."""
    with psycopg.connect(database_url("booking")) as conn:
        [(pending, confirmed, failed, refunded)] = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2), "
            "count(*) FILTER (WHERE state = 3), "
            "count(*) FILTER (WHERE state = 3 AND payment_id IS NOT NULL) "
            "FROM bookings WHERE event_id = %s",
            (event_id,),
        ).fetchall()
    return {"pending": pending, "confirmed": confirmed, "failed": failed, "refunded": refunded}


def pending_bookings(event_id: str) -> set[str]:
    with psycopg.connect(database_url("booking")) as conn:
        return {
            str(b)
            for (b,) in conn.execute(
                "SELECT booking_id FROM bookings WHERE event_id = %s AND state = 1", (event_id,)
            )
        }


async def chaos_section(args: argparse.Namespace, admin: str) -> dict[str, Any]:
    from scripts.mesh import Mesh  # its restart: the argv and environment `up` used

    tokens = await register_buyers(args.buyers)
    seats = max(args.seats // 5, 200)
    rows = max(seats // 50, 1)
    tiers = [("TIER_STANDARD", 5000, rows, 50)]
    http = HttpConnection(EDGE)
    calm = await create_event(http, admin, "Calm sale", tiers)
    stormy = await create_event(http, admin, "Stormy sale", tiers)
    await http.close()
    undisturbed = await retrying_sale(calm, tokens)

    mesh = Mesh(STATE)
    name = args.chaos_service
    timeline: dict[str, float] = {}
    capacity = rows * 50

    async def outage(half_sold: asyncio.Event) -> None:
        await half_sold.wait()
        timeline["killed"] = time.perf_counter()
        await asyncio.to_thread(mesh.stop, name, signal.SIGKILL)
        await asyncio.sleep(CHAOS_OUTAGE_SECONDS)
        await asyncio.to_thread(mesh.start_again, name)
        timeline["restarted"] = time.perf_counter()
        waiting = pending_bookings(stormy["event_id"])
        while waiting:
            await asyncio.sleep(0.2)
            waiting &= pending_bookings(stormy["event_id"])
        timeline["settled"] = time.perf_counter()

    disturbed = await retrying_sale(stormy, tokens, outage)
    # The last ones, if the sale ended first. noqa: the database signals nothing.
    while pending_bookings(stormy["event_id"]):  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    states = booking_states(stormy["event_id"])
    return {
        "service": name,
        "outage_seconds": CHAOS_OUTAGE_SECONDS,
        "buyers": args.buyers,
        "capacity": capacity,
        "undisturbed": undisturbed,
        "disturbed": disturbed,
        "disturbed_vs_undisturbed": round(
            disturbed["confirmed_per_second"] / max(undisturbed["confirmed_per_second"], 0.1), 2
        ),
        "failed_bookings": states["failed"],
        "refunded_bookings": states["refunded"],
        "restart_seconds": round(timeline["restarted"] - timeline["killed"], 1),
        "restart_to_last_pending_settled_seconds": round(
            timeline["settled"] - timeline["restarted"], 1
        ),
    }


def cancelled_emails() -> dict[str, float]:
    """Booking ids of the sink's EVENT_CANCELLED emails, with when each landed."""
    found = {}
    for path in (STATE / "mail").glob("*.eml"):
        message = message_from_bytes(path.read_bytes())
        if message["X-Ticketing-Kind"] != "EVENT_CANCELLED":
            continue
        for part in message.walk():
            if part.get_content_type() == "text/plain":
                text = part.get_payload(decode=True).decode(errors="replace")
                for word in text.split():
                    if len(word) == 36 and word.count("-") == 4:
                        found[word] = path.stat().st_mtime
                break
    return found


async def refund_section(admin: str, count: int) -> dict[str, Any]:
    """An event with `count` confirmed bookings cancelled: the time until every
    booking is refunded (the Event's cancellation.finish_time) and until every
    buyer's email is in the sink."""
    http = HttpConnection(EDGE)
    rows = (count + 49) // 50
    event = await create_event(http, admin, "refund bench", [("TIER_STANDARD", 2500, rows, 50)])
    tokens = await register_buyers(16)
    seats = iter(range(count))
    booking_ids: list[str] = []

    async def buyer(n: int) -> None:
        connection = HttpConnection(EDGE)
        for seat in seats:
            seat_id = f"standard-{seat // 50 + 1}-{seat % 50 + 1}"
            booking_ids.append(await book_one(connection, tokens[n], event["event_id"], seat_id))
        await connection.close()

    booked_started = time.monotonic()
    await asyncio.gather(*(buyer(n) for n in range(len(tokens))))
    booking_seconds = time.monotonic() - booked_started
    started, wall = time.monotonic(), time.time()
    status, body = await http.request(
        "POST", f"/v1/events/{event['event_id']}:cancel", {"reason": "bench"}, admin
    )
    assert status == 200, body
    answered_ms = (time.monotonic() - started) * 1000
    refunded = 0
    while time.monotonic() - started < 600:
        status, body = await http.request("GET", f"/v1/events/{event['event_id']}", None, None)
        progress = body.get("cancellation", {})
        refunded = progress.get("bookings_refunded", 0)
        if progress.get("finish_time"):
            break
        await asyncio.sleep(0.25)
    refund_seconds = time.monotonic() - started
    await http.close()
    wanted = set(booking_ids)
    deadline = time.monotonic() + 300
    landed = cancelled_emails()
    while time.monotonic() < deadline and not wanted <= set(landed):
        await asyncio.sleep(1)
        landed = cancelled_emails()
    emailed = [landed[b] for b in wanted if b in landed]
    return {
        "bookings": len(booking_ids),
        "booking_seconds": round(booking_seconds, 1),
        "cancel_answered_ms": round(answered_ms, 1),
        "refunded": refunded,
        "refund_seconds": round(refund_seconds, 1),
        "emails": len(emailed),
        "emails_seconds": round(max(emailed) - wall, 1) if emailed else None,
    }


REDIS_CLIENTS = 4  # of each kind: holders, bookers, seat-map readers


def mesh_redis_url() -> str:
    """The Redis database the mesh's event service uses, as it was started."""
    spec = json.loads((STATE / "run" / "event.json").read_text())
    return str(spec["env"].get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def sell_directly(event_id: str, tier: int, rows: int, seats_per_row: int) -> int:
    """Sells the first `rows` rows of a tier in PostgreSQL as sell_seats would
    leave them (seats, seat_sales, the tier's counter), four seats a booking,
    in three statements: 60,000 seats through the booking saga would take
    minutes, and the rebuild reads nothing else. No booking exists for these."""
    with psycopg.connect(database_url("event"), autocommit=True) as conn, conn.transaction():
        sold = conn.execute(
            """
            UPDATE seats SET status = 'SOLD', fence = 1,
                   booking_id = md5(event_id::text || row || ':' || (number - 1) / 4)::uuid
             WHERE event_id = %s AND tier = %s AND row <= %s AND status = 'AVAILABLE'
            RETURNING 1
            """,
            (event_id, tier, rows),
        ).rowcount
        conn.execute(
            "INSERT INTO seat_sales (event_id, tier, row, number, booking_id, fence) "
            "SELECT event_id, tier, row, number, booking_id, fence FROM seats "
            "WHERE event_id = %s AND tier = %s AND row <= %s AND fence = 1",
            (event_id, tier, rows),
        )
        conn.execute(
            "UPDATE event_tiers SET sold = sold + %s WHERE event_id = %s AND tier = %s",
            (sold, event_id, tier),
        )
    assert sold == rows * seats_per_row, sold
    return sold


def sold_in_database(event_id: str) -> set[str]:
    names = {t.value: t.slug for t in Tier}
    with psycopg.connect(database_url("event")) as conn:
        return {
            f"{names[tier]}-{row}-{number}"
            for tier, row, number in conn.execute(
                "SELECT tier, row, number FROM seats WHERE event_id = %s AND status = 'SOLD'",
                (event_id,),
            )
        }


async def sold_markers(store: Any, event_id: str) -> int:
    """Seats of the event marked sold in Redis."""
    keys = [k async for k in store.scan_iter(match=f"ev:{{{event_id}}}:hold:*", count=10_000)]
    marked = 0
    for start in range(0, len(keys), 10_000):
        values = await store.mget(keys[start : start + 10_000])
        marked += sum(1 for v in values if v is not None and v.startswith(b"sold:"))
    return marked


async def redis_recovery(
    event: dict[str, Any], tokens: list[str], store: Any, settle_seconds: float = 3.0
) -> dict[str, Any]:
    """Redis loses all its data (FLUSHDB) while clients hold, book and read the
    event's seat map: how long until a hold succeeds again and the seat map
    counts every sale again, and what the clients were answered meanwhile."""
    event_id = event["event_id"]
    sold = sold_in_database(event_id)
    free = FreeSeats(
        [
            seat
            for t in event["tiers"]
            for r in range(1, t["rows"] + 1)
            for n in range(1, t["seats_per_row"] + 1)
            if (seat := f"{t['tier'].removeprefix('TIER_').lower()}-{r}-{n}") not in sold
        ]
    )
    sold_list = sorted(sold)
    # A hold first, so the event's state in Redis is complete before it is lost.
    http = HttpConnection(EDGE)
    status, body = await http.request(
        "POST",
        f"/v1/events/{event_id}/holds",
        {"seat_ids": free.sample(random.Random(0), 1)},
        tokens[0],
    )
    assert status == 200, body
    await http.request("DELETE", f"/v1/holds/{body['hold_id']}", None, tokens[0])
    markers_before = await sold_markers(store, event_id)
    sold_before = len(sold)
    answers: list[tuple[float, str, int, str]] = []  # (when, call, status, reason)
    wrong: list[str] = []  # a sold seat held or booked, a sale the seat map forgot
    stop = asyncio.Event()
    flushed = [float("inf")]

    def note(call: str, status: int, body: Any) -> None:
        reason = ""
        if status != 200 and isinstance(body, dict):
            reason = (body.get("details") or [{}])[0].get("reason", "")
        answers.append((time.perf_counter(), call, status, reason))

    async def holder(n: int) -> None:
        connection, rng = HttpConnection(EDGE), random.Random(100 + n)
        while not stop.is_set():
            on_sold = rng.random() < 0.5
            seat = rng.choice(sold_list) if on_sold else free.sample(rng, 1)[0]
            status, body = await connection.request(
                "POST",
                f"/v1/events/{event_id}/holds",
                {"seat_ids": [seat], "request_id": str(uuid.uuid4())},
                tokens[n],
            )
            note("hold", status, body)
            if status == 200:
                if on_sold:
                    wrong.append(f"sold seat {seat} held")
                status, body = await connection.request(
                    "DELETE", f"/v1/holds/{body['hold_id']}", None, tokens[n]
                )
                note("release", status, body)
        await connection.close()

    async def booker(n: int) -> None:
        connection, rng = HttpConnection(EDGE), random.Random(200 + n)
        while not stop.is_set():
            on_sold = rng.random() < 0.25
            seat = rng.choice(sold_list) if on_sold else free.sample(rng, 1)[0]
            request = {
                "event_id": event_id,
                "seat_ids": [seat],
                "payment_method": CARD,
                "request_id": str(uuid.uuid4()),
            }
            while True:  # a 503 again after its hint, with the same request_id
                status, body = await connection.request("POST", "/v1/bookings", request, tokens[n])
                note("booking", status, body)
                if status != 503:
                    break
                info = (body or {}).get("details", [{}])[0].get("metadata", {})
                await asyncio.sleep(float(info.get("retry_after_seconds", 0.3)))
            if status in (200, 409):
                free.discard([seat])
            if status == 200 and on_sold:
                wrong.append(f"sold seat {seat} booked")
        await connection.close()

    seat_map_right_at = [float("inf")]

    async def reader(n: int) -> None:
        connection = HttpConnection(EDGE)
        first_sold = sold_list[0].rsplit("-", 2)[0]  # a sold tier's first page
        while not stop.is_set():
            started = time.perf_counter()
            status, body = await connection.request("GET", f"/v1/events/{event_id}")
            note("get_event", status, body)
            counted = sum(t["sold"] for t in body["tiers"]) if status == 200 else -1
            status, page = await connection.request(
                "GET", f"/v1/events/{event_id}/seats?tier=TIER_{first_sold.upper()}&page_size=50"
            )
            note("list_seats", status, page)
            shown = {s["seat_id"]: s["status"] for s in (page or {}).get("seats", [])}
            right = counted >= sold_before and all(
                state == "SEAT_STATUS_SOLD" for seat, state in shown.items() if seat in sold
            )
            if not right:
                wrong.append(f"seat map: {counted} sold, page {sorted(set(shown.values()))}")
            elif started > flushed[0]:
                seat_map_right_at[0] = min(seat_map_right_at[0], time.perf_counter())
            await asyncio.sleep(0.05 * (n + 1))
        await connection.close()

    clients = [holder(n) for n in range(REDIS_CLIENTS)]
    clients += [booker(REDIS_CLIENTS + n) for n in range(REDIS_CLIENTS)]
    clients += [reader(n) for n in range(REDIS_CLIENTS)]
    running = asyncio.gather(*clients)
    await asyncio.sleep(settle_seconds)
    flushed[0] = time.perf_counter()
    await store.flushdb()
    # The first hold asked after the loss: it waits for the event's rebuild.
    probe = HttpConnection(EDGE)
    while True:
        status, body = await probe.request(
            "POST",
            f"/v1/events/{event_id}/holds",
            {"seat_ids": free.sample(random.Random(), 1)},
            tokens[-1],
        )
        if status == 200:
            first_hold = time.perf_counter() - flushed[0]
            await probe.request("DELETE", f"/v1/holds/{body['hold_id']}", None, tokens[-1])
            break
        note("probe", status, body)
    await probe.close()
    await asyncio.sleep(settle_seconds)
    stop.set()
    await running
    markers_after = await sold_markers(store, event_id)

    def counts(since: float, until: float) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for when, call, status, reason in answers:
            if since <= when < until:
                key = f"{status} {reason}".strip()
                found.setdefault(call, {})[key] = found.setdefault(call, {}).get(key, 0) + 1
        return {call: dict(sorted(c.items())) for call, c in sorted(found.items())}

    window = max(first_hold, 1.0)
    return {
        "seats": sum(t["capacity"] for t in event["tiers"]),
        "sold": sold_before,
        "sold_markers_before": markers_before,
        # At the end, with what the bookers bought meanwhile: the two agree.
        "sold_markers_after": markers_after,
        "sold_after": len(sold_in_database(event_id)),
        "first_hold_after_ms": round(first_hold * 1000, 1),
        "seat_map_right_after_ms": round((seat_map_right_at[0] - flushed[0]) * 1000, 1),
        "clients": {"holders": REDIS_CLIENTS, "bookers": REDIS_CLIENTS, "readers": REDIS_CLIENTS},
        "answers_before": counts(flushed[0] - settle_seconds, flushed[0]),
        "answers_after": counts(flushed[0], flushed[0] + window),
        "window_seconds": round(window, 2),
        "answers_later": counts(flushed[0] + window, float("inf")),
        "wrong_answers": len(wrong),
        "wrong_examples": wrong[:5],
    }


async def redis_section(admin: str) -> dict[str, Any]:
    """Redis loses its data under a 5,000-seat event sold half way by real
    bookings, then under a 100,000-seat event with 60,000 seats sold."""
    import redis.asyncio as aioredis

    tokens = await register_buyers(3 * REDIS_CLIENTS + 1)
    http = HttpConnection(EDGE)
    small = await create_event(
        http,
        admin,
        "Redis loss, 5k seats",
        [("TIER_STANDARD", 5000, 80, 50), ("TIER_VIP", 15000, 20, 50)],
    )
    big = await create_event(
        http,
        admin,
        "Redis loss, 100k seats",
        [
            ("TIER_STANDARD", 1000, 160, 500),
            ("TIER_VIP", 5000, 30, 500),
            ("TIER_VVIP", 9000, 10, 500),
        ],
    )
    await http.close()
    blocks = iter(range(625))  # 2,500 standard seats, four a booking

    async def buyer(n: int) -> None:
        connection = HttpConnection(EDGE)
        for block in blocks:
            row, first = block // 12 + 1, block % 12 * 4 + 1
            status, body = await connection.request(
                "POST",
                "/v1/bookings",
                {
                    "event_id": small["event_id"],
                    "seat_ids": [f"standard-{row}-{first + k}" for k in range(4)],
                    "payment_method": CARD,
                    "request_id": str(uuid.uuid4()),
                },
                tokens[n],
            )
            assert status == 200, body
        await connection.close()

    await asyncio.gather(*(buyer(n) for n in range(len(tokens))))
    sell_directly(big["event_id"], 1, 120, 500)
    store = aioredis.Redis.from_url(mesh_redis_url())
    try:
        return {
            "redis": mesh_redis_url(),
            "small": await redis_recovery(small, tokens, store),
            "big": await redis_recovery(big, tokens, store),
        }
    finally:
        await store.aclose()


SEARCH_WORDS = ("jazz", "opera", "rock", "folk", "ballet", "comedy", "techno", "choir")
SEARCH_VENUES = ("Main Hall", "Riverside", "Old Mill", "Arena", "Blue Room")


TRACING_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
SAMPLE_PERCENT_ENV = "TRACING_SAMPLE_PERCENT"


def restart_mesh(env: dict[str, str] | None) -> None:
    """Every service process (replicas too) and Envoy restarted one at a time, with
    `env` over the environment `make up` gave them, or as it gave it (None)."""
    from scripts.mesh import Mesh

    mesh = Mesh(STATE)
    names = [n for n in mesh_pids() if n != "envoy"]
    for name in [*names, "envoy"]:
        mesh.restart(name, env=env)


# Off, on, sampled, sampled, on, off: the host's speed drifts over minutes (the
# same sale ran at 100 and at 140 confirmed/s an hour apart), and a drift that
# is steady over the six sales weighs on every mode alike.
TRACING_ORDER = ("off", "on", "sampled", "sampled", "on", "off")
# "sampled": Envoy starts a trace for this share of the requests (the services
# follow its decision); "on": for every one.
TRACING_SAMPLED_PERCENT = 10


async def tracing_section(args: argparse.Namespace, admin: str) -> dict[str, Any]:
    from scripts.mesh import free_port
    from scripts.otlp_receiver import OtlpReceiver

    # Counting spans only: its memory and CPU stay small beside the sale's.
    receiver = OtlpReceiver(free_port(), keep=False).start()
    environments = {
        "off": {TRACING_ENV: ""},
        "on": {TRACING_ENV: receiver.endpoint, SAMPLE_PERCENT_ENV: "100"},
        "sampled": {
            TRACING_ENV: receiver.endpoint,
            SAMPLE_PERCENT_ENV: str(TRACING_SAMPLED_PERCENT),
        },
    }
    sales: dict[str, list[dict[str, Any]]] = {mode: [] for mode in environments}
    spans = dict.fromkeys(environments, 0)
    try:
        for mode in TRACING_ORDER:
            await asyncio.to_thread(restart_mesh, environments[mode])
            await asyncio.to_thread(vacuum_databases)  # each sale on no dead rows
            before = receiver.count
            sales[mode].append(await sale_section(args, admin))
            # Envoy's last spans leave on its tracer's next flush (5 s), the
            # services' on their exporters' next tick.
            await asyncio.sleep(0 if mode == "off" else 6)
            spans[mode] += receiver.count - before
    finally:
        await asyncio.to_thread(restart_mesh, None)
        receiver.stop()
    pooled = {mode: _pooled(sales[mode]) for mode in environments}
    for mode, sale in pooled.items():
        sale["spans_per_confirmed"] = round(spans[mode] / max(sale["confirmed_bookings"], 1), 1)
        sale["vs_off"] = round(
            sale["confirmed_per_second"] / max(pooled["off"]["confirmed_per_second"], 0.1), 2
        )
    return {**pooled, "sampled_percent": TRACING_SAMPLED_PERCENT, "sales": sales}


def _pooled(sales: list[dict[str, Any]]) -> dict[str, Any]:
    """Sales of one mode as one: bookings over seconds, CPU over bookings, the
    worst p99."""
    confirmed = sum(s["confirmed_bookings"] for s in sales)
    weights = [s["confirmed_bookings"] / confirmed for s in sales]
    by_process: dict[str, float] = {}
    for sale, weight in zip(sales, weights, strict=True):
        for name, ms in sale["cpu_ms_per_confirmed_by_process"].items():
            by_process[name] = by_process.get(name, 0.0) + ms * weight
    return {
        "buyers": sales[0]["buyers"],
        "confirmed_bookings": confirmed,
        "confirmed_per_second": round(confirmed / sum(s["seconds"] for s in sales), 1),
        "p99_ms": max(s["p99_ms"] for s in sales),
        "cpu_ms_per_confirmed": round(sum(by_process.values()), 2),
        "cpu_ms_per_confirmed_by_process": {n: round(v, 2) for n, v in by_process.items()},
        "each_confirmed_per_second": [s["confirmed_per_second"] for s in sales],
    }


async def search_section(count: int) -> dict[str, Any]:
    """ListEvents through Envoy over `count` extra events (made in the event
    database directly, which is all a search reads): the first page unfiltered
    and with each filter, 30 calls each; the events go again afterwards."""
    organizers = [uuid.uuid4() for _ in range(200)]
    url = libpq_url(os.environ.get("EVENT_DATABASE_URL", f"{PG}/event"))
    tag = f"bench-search-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            WITH made AS (
                INSERT INTO events (event_id, title, description, venue, starts_at,
                                    organizer_id, create_time, update_time, state)
                SELECT gen_random_uuid(),
                       format('%%s %%s night %%s', %(tag)s::text,
                              (%(words)s::text[])[1 + n %% 8], n),
                       '', (%(venues)s::text[])[1 + n %% 5],
                       now() + make_interval(mins => 10 + n * 5),
                       (%(organizers)s::uuid[])[1 + n %% 200], now(), now(),
                       CASE WHEN n %% 50 = 0 THEN 3 WHEN n %% 50 = 1 THEN 1 ELSE 2 END
                  FROM generate_series(1, %(count)s) AS n
                RETURNING event_id)
            INSERT INTO event_tiers (event_id, tier, price_minor, currency, rows, seats_per_row)
            SELECT event_id, 1, 5000, 'USD', 10, 10 FROM made
            """,
            {
                "tag": tag,
                "words": list(SEARCH_WORDS),
                "venues": list(SEARCH_VENUES),
                "organizers": organizers,
                "count": count,
            },
        )
        conn.execute("ANALYZE events, event_tiers")  # as autovacuum would; it is off here
    http = HttpConnection(EDGE)
    soon = datetime.now(UTC) + timedelta(days=30)
    window = (
        f"starts_after={soon.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        f"&starts_before={(soon + timedelta(days=7)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
    searches = {
        "first page": "",
        "organizer": f"organizer_id={organizers[7]}",
        "starts window": window,
        "state cancelled": "state=EVENT_STATE_CANCELLED",
        "query rare (title)": "query=night%204242",
        "query common (venue)": "query=riverside",
        "organizer + query": f"organizer_id={organizers[7]}&query=jazz",
    }
    results: dict[str, Any] = {"events": count}
    try:
        for name, query in searches.items():
            latencies = []
            for _ in range(30):
                began = time.perf_counter()
                status, body = await http.request(
                    "GET", f"/v1/events?page_size=20&{query}", None, None
                )
                latencies.append(time.perf_counter() - began)
                assert status == 200, body
            results[name] = {
                "found": len(body.get("events", [])),
                "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
                "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
            }
    finally:
        await http.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "DELETE FROM event_tiers WHERE event_id IN "
                "(SELECT event_id FROM events WHERE title LIKE %s)",
                (f"{tag} %",),
            )
            conn.execute("DELETE FROM events WHERE title LIKE %s", (f"{tag} %",))
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        f"Measured {results['time']} at commit {results['commit']} on {results['cores']} "
        f"cores, everything on one machine (`make up`, then `make bench`).",
        "",
        "| section | measure | value |",
        "|---|---|---|",
    ]

    def row(section: str, measure: str, value: Any) -> None:
        lines.append(f"| {section} | {measure} | {value} |")

    def ops(result: dict[str, Any]) -> str:
        served = (
            f", server CPU {result['server_cpu_ms']} ms each" if "server_cpu_ms" in result else ""
        )
        return (
            f"{result['per_second']}/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
            + served
        )

    if "rpc" in results:
        rpc = results["rpc"]
        row("rpc", "empty health RPC (baseline)", ops(rpc["empty_rpc"]))
        row("rpc", "LockSeat+ReleaseSeat pair", ops(rpc["lock_release_pair"]))
        row("rpc", "GetEvent", ops(rpc["get_event"]))
        row("rpc", "PaymentService.Charge (one statement)", ops(rpc["charge"]))
        row("rpc", "pair / empty (target ≥ 0.4)", rpc["lock_release_pair_vs_empty"])
        row("rpc", "GetEvent / empty (target ≥ 0.5)", rpc["get_event_vs_empty"])
    if "edge" in results:
        edge = results["edge"]
        row("edge", "GetEvent, gRPC direct (baseline)", ops(edge["grpc_direct"]))
        row("edge", "GetEvent, HTTP/JSON via Envoy", ops(edge["http_via_envoy"]))
        row("edge", "Envoy / direct (target ≥ 0.9)", edge["envoy_vs_direct"])
    if "sale" in results:
        sale = results["sale"]
        row(
            "sale",
            f"{sale['buyers']} buyers, {sale['capacity']} seats",
            f"sold out in {sale['seconds']} s",
        )
        row("sale", "confirmed bookings/s (target ≥ 200)", sale["confirmed_per_second"])
        row(
            "sale",
            "booking latency p50 / p95 / p99 (p99 target < 400 ms)",
            f"{sale['p50_ms']} / {sale['p95_ms']} / {sale['p99_ms']} ms",
        )
        row("sale", "409 share", sale["conflict_share"])
        row(
            "sale",
            "seats sold / sold twice / left held",
            f"{sale['seats_sold']} / {sale['seats_sold_twice']} / {sale['seats_left_held']}",
        )
        row(
            "sale",
            "emails sent / bookings confirmed",
            f"{sale['emails_sent']} / {sale['emails_expected']}",
        )
        row(
            "sale",
            "last email in the sink after the last booking (target ≤ 60 s)",
            f"{sale['last_email_after_seconds']} s",
        )
        row(
            "sale",
            "CPU per confirmed booking, all processes but emails, refusals included",
            f"{sale['cpu_ms_per_confirmed']} ms",
        )
        row(
            "sale",
            f"share of the machine the {sale['buyers']} buyers themselves take",
            f"{sale['load_generator_cpu_share']:.0%}",
        )
    if "sale2" in results:
        two = results["sale2"]
        row(
            "sale2",
            f"two steps (hold, then book the hold): {two['buyers']} buyers, "
            f"{two['capacity']} seats",
            f"sold out in {two['seconds']} s",
        )
        row("sale2", "confirmed bookings/s", two["confirmed_per_second"])
        row(
            "sale2",
            "purchase latency (hold + book) p50 / p95 / p99",
            f"{two['p50_ms']} / {two['p95_ms']} / {two['p99_ms']} ms",
        )
        row(
            "sale2",
            "seats sold / sold twice / left held",
            f"{two['seats_sold']} / {two['seats_sold_twice']} / {two['seats_left_held']}",
        )
        row(
            "sale2",
            "CPU per confirmed booking, refusals included",
            f"{two['cpu_ms_per_confirmed']} ms",
        )
    if "holds" in results:
        best = results["holds"]
        row(
            "holds",
            f"best-available hold, 100,000-seat event, {best['callers']} callers "
            "(p99 target < 50 ms)",
            ops(best),
        )
    if "cpu" in results:
        cpu = results["cpu"]
        row(
            "cpu",
            f"sale path, CPU per booking ({cpu['bookings']} in a row; target ≤ 7 ms)",
            f"{cpu['sale_path_total_ms']} ms: "
            + ", ".join(f"{k} {v}" for k, v in cpu["sale_path_ms"].items() if v >= 0.05),
        )
        row("cpu", "its email, CPU per booking (target ≤ 4 ms)", f"{cpu['email_ms']} ms")
    if "scale" in results:
        scale = results["scale"]
        row("scale", "create a 100,000-seat event", f"{scale['create_100k_seconds']} s")
        for name in ("1k", "100k"):
            row(
                "scale",
                f"GetEvent / ListSeats page, {name} seats",
                f"p50 {scale[f'get_event_{name}']['p50_ms']} / "
                f"{scale[f'list_seats_{name}']['p50_ms']} ms",
            )
        row("scale", "GetEvent 100k / 1k (target ≤ 1.1)", scale["get_event_100k_vs_1k"])
    if "memory" in results:
        peaks = results["memory"]["peak_rss_mb"]
        row(
            "memory",
            f"peak RSS after {results['memory']['logins']} logins at once, MB (target ≤ 150)",
            ", ".join(f"{k} {v}" for k, v in peaks.items()),
        )
    if "email" in results:
        email = results["email"]
        row(
            "email",
            f"confirmation -> sink, {email['bookings']} bookings",
            f"median {email['median_ms']} ms, p95 {email['p95_ms']} ms",
        )
    if "chaos" in results:
        chaos = results["chaos"]
        calm, storm = chaos["undisturbed"], chaos["disturbed"]
        row(
            "chaos",
            f"{chaos['buyers']} buyers, {chaos['capacity']} seats, undisturbed (baseline)",
            f"{calm['confirmed_per_second']} confirmed/s, p99 {calm['p99_ms']} ms",
        )
        row(
            "chaos",
            f"{chaos['service']} killed for {chaos['outage_seconds']:g} s mid-way",
            f"{storm['confirmed_per_second']} confirmed/s ({chaos['disturbed_vs_undisturbed']} "
            f"of undisturbed), p99 {storm['p99_ms']} ms, answers {storm['answers']}",
        )
        row(
            "chaos",
            "bookings failed / refunded by the outage (target 0)",
            f"{chaos['failed_bookings']} / {chaos['refunded_bookings']}",
        )
        row(
            "chaos",
            "restart -> last PENDING booking settled (target ≤ 10 s)",
            f"{chaos['restart_to_last_pending_settled_seconds']} s "
            f"(down {chaos['restart_seconds']} s)",
        )
        row("chaos", "client errors other than 409 or 503", storm["client_errors"])
    if "refund" in results:
        refund = results["refund"]
        row(
            "refund",
            f"cancel an event of {refund['bookings']} confirmed bookings: the call answers",
            f"{refund['cancel_answered_ms']} ms",
        )
        row(
            "refund",
            "every booking refunded and cancelled (target < 60 s)",
            f"{refund['refund_seconds']} s ({refund['refunded']} refunded)",
        )
        row(
            "refund",
            "every buyer's EVENT_CANCELLED email in the sink",
            f"{refund['emails_seconds']} s ({refund['emails']} emails)",
        )
    if "tracing" in results:
        traced = results["tracing"]
        names = {
            "off": "tracing off (baseline)",
            "on": "tracing every request",
            "sampled": f"tracing {traced.get('sampled_percent', '?')}% of requests",
        }
        for mode, name in names.items():
            if mode not in traced:
                continue
            sale = traced[mode]
            each = " and ".join(str(c) for c in sale.get("each_confirmed_per_second", ()))
            row(
                "tracing",
                f"sale, {sale['buyers']} buyers, {name}",
                f"{sale['confirmed_per_second']} confirmed/s ({each}), p99 {sale['p99_ms']} ms, "
                f"{sale['cpu_ms_per_confirmed']} ms CPU each",
            )
        off = traced["off"]["cpu_ms_per_confirmed_by_process"]
        for mode in ("on", "sampled"):
            if mode not in traced:
                continue
            sale = traced[mode]
            added = sale["cpu_ms_per_confirmed_by_process"]
            row(
                "tracing",
                f"CPU {names[mode]} adds per confirmed booking, by process",
                ", ".join(
                    f"{name} {added[name] - off.get(name, 0.0):+.2f}"
                    for name in sorted(added, key=lambda n: off.get(n, 0.0) - added[n])
                )
                + " ms",
            )
            target = " (target ≥ 0.9)" if mode == "on" else ""
            row(
                "tracing",
                f"{names[mode].removeprefix('tracing ')} / off confirmed/s{target}",
                f"{sale['vs_off']} ({sale['spans_per_confirmed']} spans per confirmed)",
            )
    if "search" in results:
        search = results["search"]
        for name, found in search.items():
            if isinstance(found, dict):
                row(
                    "search",
                    f"ListEvents over {search['events']:,} more events, {name}",
                    f"p50 {found['p50_ms']} / p95 {found['p95_ms']} ms ({found['found']} found)",
                )
    if "redis" in results:
        for loss in (results["redis"]["small"], results["redis"]["big"]):
            name = f"FLUSHDB under a {loss['seats']:,}-seat event, {loss['sold']:,} sold"
            row(
                "redis",
                f"{name}: first hold answered 200 after",
                f"{loss['first_hold_after_ms']} ms",
            )
            row(
                "redis",
                f"{name}: seat map (GetEvent sold, ListSeats) right again after",
                f"{loss['seat_map_right_after_ms']} ms",
            )
            row(
                "redis",
                f"{name}: answers in the first {loss['window_seconds']:g} s, "
                f"{REDIS_CLIENTS} clients each holding, booking, reading",
                "; ".join(
                    f"{call} {', '.join(f'{k}: {v}' for k, v in got.items())}"
                    for call, got in loss["answers_after"].items()
                ),
            )
            row(
                "redis",
                f"{name}: sold markers rebuilt / sold; wrong answers (target 0)",
                f"{loss['sold_markers_after']:,} / {loss['sold_after']:,}; {loss['wrong_answers']}",
            )
    return "\n".join(lines)


def commit() -> str:
    """The commit measured, marked when the work tree had changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    ).stdout.strip()
    return f"{head}{'+changes' if dirty else ''}" or "unknown"


def vacuum_databases() -> None:
    """Clears the dead rows earlier runs left. A sale turns every booking, outbox
    row and email over once or twice; where autovacuum is off (as on these
    machines), each run would otherwise measure a more bloated database than
    the last, and what production's autovacuum keeps from happening."""
    for service in SERVICES:
        with psycopg.connect(database_url(service), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")


# In the order they run (and print).
SECTIONS = (
    "rpc",
    "edge",
    "sale",
    "sale2",
    "holds",
    "cpu",
    "scale",
    "memory",
    "email",
    "chaos",
    "refund",
    "search",
    "tracing",
    "redis",
)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    vacuum_databases()
    skip_earlier_emails()
    http = HttpConnection(EDGE)
    admin = await login(http, *ADMIN)
    await http.close()
    sections = args.only.split(",")
    results: dict[str, Any] = {
        "time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "commit": commit(),
        "args": vars(args),
    }
    runners: dict[str, Callable[[], Awaitable[Any]]] = {
        "rpc": lambda: rpc_section(args, admin),
        "edge": lambda: edge_section(args, admin),
        "sale": lambda: sale_section(args, admin),
        "sale2": lambda: sale_section(args, admin, two_step=True),
        "holds": lambda: holds_section(args, admin),
        "scale": lambda: scale_section(args, admin),
        "cpu": lambda: cpu_section(admin),
        "email": lambda: email_section(admin),
        "chaos": lambda: chaos_section(args, admin),
        "refund": lambda: refund_section(admin, args.refund_bookings),
        "search": lambda: search_section(args.search_events),
        "tracing": lambda: tracing_section(args, admin),
        "redis": lambda: redis_section(admin),
    }
    for name in SECTIONS:
        if name in sections:
            print(f"running {name} ...", flush=True)
            results[name] = (
                memory_section(await login_burst()) if name == "memory" else await runners[name]()
            )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--buyers", type=int, default=64)
    parser.add_argument("--seats", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="a partial run prints its table and keeps its JSON; only a full run "
        "replaces bench/latest.md, which the README quotes",
    )
    parser.add_argument("--chaos-service", default="payment", choices=SERVICES)
    parser.add_argument("--refund-bookings", type=int, default=2000)
    parser.add_argument("--search-events", type=int, default=100_000)
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (REPO_ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO_ROOT / "bench" / "results" / f"{stamp}.json").write_text(json.dumps(outcome, indent=2))
    report = table(outcome)
    print(report)
    if set(arguments.only.split(",")) >= set(SECTIONS):
        (REPO_ROOT / "bench" / "latest.md").write_text(
            "## Benchmarks\n\n" + report + "\n\nRaw numbers: `bench/results/*.json`.\n"
        )

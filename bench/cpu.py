"""Where a booking's CPU goes: runs sequential bookings through Envoy against the
running mesh and prints the CPU each process spent per booking (from
/proc/<pid>/stat). The notification service is paused meanwhile (its emails
go out afterwards) so that the sale path is measured alone.

    python -m bench.cpu [--bookings 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

from bench.run import ADMIN, CARD, EDGE, STATE, HttpConnection, create_event, login, register_buyers

# Process name -> a substring of its command line.
PROCESSES = {
    "event": "-m event",
    "booking": "-m booking",
    "payment": "-m payment",
    "auth": "-m auth",
    "notification": "-m notification",
    "postgres": "postgres",
    "rabbitmq": "beam.smp",
    "envoy": "envoy -c",
    "redis": "redis-server",
}


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) so far, summed per process name."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = next((n for n, marker in PROCESSES.items() if marker in command), None)
        if name:
            totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


async def book_sequentially(count: int) -> float:
    http = HttpConnection(EDGE)
    admin = await login(http, *ADMIN)
    rows = count // 50 + 1
    event = await create_event(http, admin, "cpu profile", [("TIER_STANDARD", 1000, rows, 50)])
    [token] = await register_buyers(1)
    started = time.perf_counter()
    for n in range(count):
        status, body = await http.request(
            "POST",
            "/v1/bookings",
            {
                "event_id": event["event_id"],
                "seat_ids": [f"standard-{n // 50 + 1}-{n % 50 + 1}"],
                "payment_method": CARD,
                "request_id": str(uuid.uuid4()),
            },
            token,
        )
        assert status == 200, body
    await http.close()
    return time.perf_counter() - started


def emailing_cpu(start: float) -> float:
    """CPU the resumed notification service spends until its backlog is sent."""
    last, quiet = start, 0
    while quiet < 3:
        time.sleep(1)
        now = cpu_seconds()["notification"]
        quiet = quiet + 1 if now - last < 0.05 else 0
        last = now
    return last - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bookings", type=int, default=300)
    count = parser.parse_args().bookings
    emailer = int((STATE / "run" / "notification.pid").read_text())
    before = cpu_seconds()
    os.kill(emailer, signal.SIGSTOP)
    try:
        elapsed = asyncio.run(book_sequentially(count))
    finally:
        os.kill(emailer, signal.SIGCONT)
    after = cpu_seconds()
    spent = {name: (after[name] - before.get(name, 0.0)) * 1000 / count for name in after}
    spent["notification"] = emailing_cpu(after["notification"]) * 1000 / count
    print(
        f"{count} sequential bookings, {elapsed / count * 1000:.1f} ms each; "
        f"CPU per booking, by process:"
    )
    for name, ms in sorted(spent.items(), key=lambda item: -item[1]):
        if ms >= 0.05:
            print(f"  {name:13} {ms:5.1f} ms")
    print(
        f"  {'total':13} {sum(spent.values()):5.1f} ms  "
        f"(notification's share: its emails, sent once it was resumed)"
    )


if __name__ == "__main__":
    main()

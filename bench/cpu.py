"""Where a booking's CPU goes: `make bench`'s cpu section alone.

Runs sequential bookings through Envoy against the running mesh and prints the
CPU each process spent per booking (from /proc/<pid>/stat). The notification
service is paused meanwhile (its emails go out afterwards, counted apart) so
that the sale path is measured alone.

    python -m bench.cpu [--bookings 300]
"""

from __future__ import annotations

import argparse
import asyncio

from bench.run import ADMIN, EDGE, HttpConnection, cpu_section, login, vacuum_databases


async def profile(count: int) -> dict[str, object]:
    vacuum_databases()
    http = HttpConnection(EDGE)
    admin = await login(http, *ADMIN)
    await http.close()
    return await cpu_section(admin, count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bookings", type=int, default=300)
    count = parser.parse_args().bookings
    result = asyncio.run(profile(count))
    print(
        f"{count} sequential bookings, {result['wall_ms_per_booking']} ms each; "
        "CPU per booking, by process:"
    )
    for name, ms in result["sale_path_ms"].items():  # type: ignore[attr-defined]
        print(f"  {name:13} {ms:5.2f} ms")
    print(f"  {'sale path':13} {result['sale_path_total_ms']:5.2f} ms")
    print(f"  {'its email':13} {result['email_ms']:5.2f} ms  (notification, once resumed)")


if __name__ == "__main__":
    main()

"""`python -m <service> [serve|migrate|...]`: the one entry point of a service."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable

from runtime import db, logs, tracing
from runtime.config import ConfigError, S
from runtime.server import GrpcService


def main(
    service: str,
    settings_type: type[S],
    build: Callable[[S], Awaitable[GrpcService]],
    commands: dict[str, Callable[[S], None]] | None = None,
) -> None:
    commands = {"migrate": lambda s: db.migrate(service, s.database_url), **(commands or {})}
    parser = argparse.ArgumentParser(prog=f"python -m {service}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", *commands])
    args = parser.parse_args()

    try:
        settings = settings_type.load(service)
    except ConfigError as exc:
        # Before anything starts, and on stderr with exit status 1.
        raise SystemExit(f"{service}: bad settings, not starting: {exc}") from None
    logs.configure(service, settings.log_level)
    if args.command != "serve":
        commands[args.command](settings)
        return

    async def serve() -> None:
        await (await build(settings)).run()

    if settings.nice:
        # Background work (emails, say) yields the CPU to the sale in progress.
        os.nice(settings.nice)
    # Before `build`: the channels it opens get the tracing interceptors.
    tracing.configure(service, settings.otlp_endpoint)
    try:
        if settings.event_loop == "uvloop":
            import uvloop

            uvloop.run(serve())
        else:
            asyncio.run(serve())
    finally:
        tracing.shutdown()  # the last spans out before the process exits

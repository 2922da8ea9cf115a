"""`python -m <service> [serve|migrate|...]`: the one entry point of a service."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable

from runtime import db, logs
from runtime.config import Settings
from runtime.server import GrpcService

Build = Callable[[Settings], Awaitable[GrpcService]]
Command = Callable[[Settings], None]


def main(service: str, build: Build, commands: dict[str, Command] | None = None) -> None:
    commands = {"migrate": lambda s: db.migrate(service, s.database_url), **(commands or {})}
    parser = argparse.ArgumentParser(prog=f"python -m {service}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", *commands])
    args = parser.parse_args()

    settings = Settings.load(service)
    logs.configure(service, settings.log_level)
    if args.command != "serve":
        commands[args.command](settings)
        return

    async def serve() -> None:
        await (await build(settings)).run()

    if settings.nice:
        # Background work (emails, say) yields the CPU to the sale in progress.
        os.nice(settings.nice)
    if settings.event_loop == "uvloop":
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())

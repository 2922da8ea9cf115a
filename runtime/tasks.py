"""Background jobs that live as long as a service: async context managers to
hand to GrpcService.workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running(job: Callable[[], Awaitable[None]], name: str) -> AsyncIterator[None]:
    """Runs `job` in a task while entered, and cancels it on the way out."""
    task = asyncio.create_task(job(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def periodically(
    step: Callable[[], Awaitable[object]], interval_seconds: float, name: str
) -> contextlib.AbstractAsyncContextManager[None]:
    """Runs `step` every interval; a failing step is logged and tried again next time."""

    async def loop() -> None:
        while True:
            try:
                await step()
            except Exception:
                log.exception("%s failed; trying again in %.0fs", name, interval_seconds)
            await asyncio.sleep(interval_seconds)

    return running(loop, name)

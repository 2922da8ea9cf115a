"""The sale path's SQL, on psycopg 3 directly: a pool of autocommit connections.

SQLAlchemy's async layer costs several times what psycopg alone does per
statement (DESIGN §14: ~450 µs of CPU for an INSERT in its own transaction
against ~80 µs autocommit), and a booking's budget is spent mostly on round
trips. So each step of the sale is written as one statement that does all
the step needs (a CTE, or a function for the sale itself) and runs in
autocommit: one round trip, no BEGIN or COMMIT, and psycopg prepares it
after a few uses. Cold paths keep SQLAlchemy Core.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.abc import Query
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool

from runtime.db import libpq_url

Params = tuple[Any, ...] | dict[str, Any]


class Database:
    def __init__(self, database_url: str, size: int) -> None:
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            libpq_url(database_url),
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True, "row_factory": namedtuple_row},
            # A dead connection is found when it fails, and the pool replaces it;
            # checking every checkout would cost a round trip per statement.
            check=None,
            open=False,
            name="hot-path",
        )

    async def open(self) -> None:
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, query: Query, params: Params) -> int:
        """Runs a statement; how many rows it changed."""
        async with self._pool.connection() as conn:
            return (await conn.execute(query, params)).rowcount

    async def fetchone(self, query: Query, params: Params) -> Any | None:
        async with self._pool.connection() as conn:
            return await (await conn.execute(query, params)).fetchone()

    async def fetchall(self, query: Query, params: Params) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(query, params)).fetchall()

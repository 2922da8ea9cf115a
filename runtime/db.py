"""PostgreSQL access: one async engine per service database, and migrations.

Each service owns one database on the shared server and changes its schema
only through its Alembic migrations (`<service>/migrations`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from runtime.config import Settings

log = logging.getLogger(__name__)


def async_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        # An error's text would otherwise carry the statement's parameters (emails,
        # password hashes, tokens' digests) into the logs with its traceback.
        hide_parameters=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


T = TypeVar("T")
# Failures PostgreSQL asks the client to retry: the transaction did nothing.
RETRYABLE_ERRORS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


async def in_transaction(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], attempts: int = 3
) -> T:
    """Runs `work` in a transaction, again if PostgreSQL aborted it as retryable."""
    for attempt in range(attempts):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except DBAPIError as exc:
            if not isinstance(exc.orig, RETRYABLE_ERRORS) or attempt == attempts - 1:
                raise
            log.info("retrying a transaction after %s", type(exc.orig).__name__)
            await asyncio.sleep(0.005 * 2**attempt)
    raise AssertionError("unreachable")


def create_database_if_missing(database_url: str) -> None:
    url = make_url(database_url)
    admin = sa.create_engine(
        url.set(database="postgres"), isolation_level="AUTOCOMMIT", hide_parameters=True
    )
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": url.database},
            )
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
                log.info("created database %s", url.database)
    finally:
        admin.dispose()


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as a plain libpq URL, for psycopg used directly."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def migrate(service: str, database_url: str) -> None:
    """Creates the service's database if needed and upgrades it to head."""
    create_database_if_missing(database_url)
    config = Config()
    config.set_main_option("script_location", f"{service}:migrations")
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def run_migrations(target_metadata: sa.MetaData) -> None:
    """The body of every service's migrations/env.py."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True)
    with engine.connect() as connection:
        # Replicas start together; one migrates while the others wait.
        connection.execute(sa.text("SELECT pg_advisory_lock(hashtext('alembic'))"))
        connection.commit()  # the lock is per session; Alembic runs its own transaction
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


@contextlib.asynccontextmanager
async def disposing(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """Closes the engine's pool when the service stops."""
    try:
        yield engine
    finally:
        await engine.dispose()

"""Every service's migrations build exactly the tables its code declares (what
`alembic check` asks): a column, index or constraint added to a table
definition without a migration, or the other way round, fails here."""

from __future__ import annotations

import importlib

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from scripts.mesh import SERVICES, Mesh


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_match_the_table_definitions(mesh: Mesh, service: str) -> None:
    metadata = importlib.import_module(f"{service}.repository").metadata
    # The test mesh's database for the service, migrated to head at start.
    engine = sa.create_engine(mesh.env[f"{service.upper()}_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == [], f"{service}: migrations and tables disagree: {differences}"

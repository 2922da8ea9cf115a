from notification.repository import metadata
from runtime.db import run_migrations

run_migrations(metadata)

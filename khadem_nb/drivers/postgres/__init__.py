"""The PostgreSQL driver: ``driver`` (the queue), ``schema`` (its layout and statements) and
``listener`` (the LISTEN connection)."""

from .driver import PostgresDriver, check_open_connection
from .schema import SCHEMA_VERSION, channels, schema_name, schema_sql, upgrade_sql

__all__ = ["SCHEMA_VERSION", "PostgresDriver", "channels", "check_open_connection", "schema_name",
           "schema_sql", "upgrade_sql"]

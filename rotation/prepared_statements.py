"""Prepared statements on PostgreSQL, for the code paths that run the same few statements at a
high rate (the webhook endpoint).

PostgreSQL parses and plans every statement it is sent. A statement prepared on the
connection is parsed and planned once, then only executed: a relevant webhook delivery went
from 5.2-5.3 to 4.1-4.2 ms (bench/redeploy_tick.py). That needs server-side parameter binding,
which Django leaves off by default, and which limits a statement to 65,535 parameters: an
admin action or a cascade over 100,000 rows exceeds it. So it is switched on around bounded
code only, never for the whole connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connection

# Runs of the same statement on a connection before psycopg prepares it.
PREPARE_THRESHOLD = 5


@contextlib.contextmanager
def prepared_statements() -> Iterator[None]:
    """Inside the block, on PostgreSQL (unless `DATABASE_PREPARED_STATEMENTS` is off),
    parameters are bound server-side and a statement run `PREPARE_THRESHOLD` times on the
    connection is prepared; the connection keeps what it prepared for its next blocks."""
    if connection.vendor != "postgresql" or not settings.DATABASE_PREPARED_STATEMENTS:
        yield
        return
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    raw = connection.connection
    features: Any = connection.features  # PostgreSQL's, with uses_server_side_binding
    saved = raw.cursor_factory, raw.prepare_threshold, features.uses_server_side_binding
    raw.cursor_factory, raw.prepare_threshold = ServerBindingCursor, PREPARE_THRESHOLD
    # What Django reads to log a query's SQL with its values (debug, CaptureQueriesContext).
    features.uses_server_side_binding = True
    try:
        yield
    finally:
        raw.cursor_factory, raw.prepare_threshold, features.uses_server_side_binding = saved

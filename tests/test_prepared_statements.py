"""Prepared statements on PostgreSQL: around the webhook endpoint, and nowhere else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from rotation.models import Resource
from rotation.prepared_statements import PREPARE_THRESHOLD, prepared_statements
from tests.redeploy_builders import deployment_event
from tests.test_webhooks import post

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"
)


def prepared(fragment: str) -> int:
    """Statements prepared on this connection whose text holds `fragment`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            [f"%{fragment}%"],
        )
        return cursor.fetchone()[0]


def run_often(sql: str) -> None:
    with connection.cursor() as cursor:
        for number in range(PREPARE_THRESHOLD + 1):
            cursor.execute(sql, [number])


def test_a_statement_run_often_in_the_block_is_prepared_and_not_outside_it(db):
    with prepared_statements():
        run_often("SELECT 41 + %s")
    run_often("SELECT 42 + %s")
    assert prepared("SELECT 41 + $1") == 1
    assert prepared("42 +") == 0


def test_nothing_is_prepared_when_the_setting_is_off(db, settings):
    settings.DATABASE_PREPARED_STATEMENTS = False
    with prepared_statements():
        run_often("SELECT 43 + %s")
    assert prepared("43 +") == 0


def test_a_statement_past_the_protocols_parameter_cap_still_runs_after_the_block(db):
    # Server-side binding caps a statement at 65,535 parameters; outside the block values are
    # bound client-side as everywhere else in Django, so a 70,000-id filter works.
    with prepared_statements():
        run_often("SELECT 44 + %s")
    assert Resource.objects.filter(pk__in=range(1, 70_001)).count() == 0


def test_the_webhook_endpoint_prepares_its_lookup(client, resource, settings):
    settings.VERCEL_CLIENT_SECRET = "whsec_test_client_secret"
    at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    for number in range(PREPARE_THRESHOLD + 1):
        event = deployment_event(resource, "prj_a", at, f"evt_{number}")
        with CaptureQueriesContext(connection) as queries:
            assert post(client, event).json() == {"outcome": "unrelated"}
        # Still logged with its values, prepared or not.
        assert [resource.vercel_id in query["sql"] for query in queries] == [True]
    assert prepared("FROM rotation_resource r JOIN") == 1

"""The busiest changelists stay cheap as tables grow: a fixed number of queries, no full COUNT."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from rotation.admin.large_lists import CappedCountPaginator
from rotation.models import Installation, Resource, Rotation, RotationBatch

CHANGELISTS = {
    "resources": "/admin/rotation/resource/",
    "resources filtered": "/admin/rotation/resource/?status__exact=ready",
    "resources searched": "/admin/rotation/resource/?q=db",
    "resources sorted": "/admin/rotation/resource/?o=-6",
    "rotations": "/admin/rotation/rotation/",
    "rotations filtered": "/admin/rotation/rotation/?state__exact=completed",
    "rotations sorted": "/admin/rotation/rotation/?o=-8",
    "installations": "/admin/rotation/installation/",
    "batches": "/admin/rotation/rotationbatch/",
}


def grow(count: int) -> None:
    """`count` more installations, resources, batches and rotations."""
    start = Resource.objects.count()
    installations = Installation.objects.bulk_create(
        Installation(vercel_id=f"icfg_grow_{start + n}") for n in range(count)
    )
    resources = Resource.objects.bulk_create(
        Resource(
            installation=installations[n % len(installations)],
            vercel_id=f"res_{start + n}",
            product="postgres",
            name=f"db-{start + n}",
        )
        for n in range(count)
    )
    batches = RotationBatch.objects.bulk_create(
        RotationBatch(reason="grow", requested_by_username="alice") for _ in range(count)
    )
    Rotation.objects.bulk_create(
        Rotation(
            batch=batches[n],
            resource=resource,
            state=Rotation.State.COMPLETED,
            state_changed_at=timezone.now(),
        )
        for n, resource in enumerate(resources)
    )


def page_queries(client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    assert response.context["cl"].result_list, url  # the view lists rows
    return [query["sql"] for query in queries.captured_queries]


def test_it_renders_the_changelists_with_a_fixed_number_of_queries(client, root):
    client.force_login(root)
    grow(5)
    small = {name: page_queries(client, url) for name, url in CHANGELISTS.items()}
    grow(250)  # several pages of each list
    large = {name: page_queries(client, url) for name, url in CHANGELISTS.items()}
    for name in CHANGELISTS:
        assert len(small[name]) == len(large[name]) <= 10, name
        counts = [sql for sql in large[name] if "COUNT(" in sql.upper() and "LIMIT" not in sql]
        # Only the per-row counts of a page's rows (correlated subqueries) may go unbounded.
        assert all("WHERE U0" in sql or "U0." in sql for sql in counts), (name, counts)


def test_it_counts_a_page_view_only_up_to_the_cap(client, root, monkeypatch):
    client.force_login(root)
    grow(12)
    monkeypatch.setattr(CappedCountPaginator, "cap", 10)
    for url in (CHANGELISTS["resources"], CHANGELISTS["resources filtered"]):
        html = client.get(url).content.decode()
        # An estimate on PostgreSQL once the table was analyzed; otherwise "more than".
        assert "More than 10 resources" in html or "About " in html
        assert "12 resources" not in html
        assert "Select all more than 10 resources" in html or "Select all about" in html


def test_it_shows_the_exact_count_under_the_cap(client, root):
    client.force_login(root)
    grow(3)
    html = client.get(CHANGELISTS["rotations"]).content.decode()
    assert "3 rotations" in html
    assert "More than" not in html


@pytest.mark.postgres
def test_it_estimates_an_unfiltered_list_from_the_table_statistics(client, root, monkeypatch):
    assert connection.vendor == "postgresql"
    client.force_login(root)
    grow(30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE rotation_resource")
    monkeypatch.setattr(CappedCountPaginator, "cap", 10)
    assert "About 30 resources" in client.get(CHANGELISTS["resources"]).content.decode()
    filtered = client.get(CHANGELISTS["resources searched"]).content.decode()
    assert "More than 10 results" in filtered  # a filtered list is never estimated

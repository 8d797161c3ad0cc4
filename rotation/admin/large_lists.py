"""Changelist parts for large tables: a paginator that never counts every row, and counts
of related rows computed for the page's rows only."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils.functional import cached_property


def table_estimate(queryset: QuerySet) -> int | None:
    """PostgreSQL's row estimate of the queryset's table (kept by ANALYZE and autovacuum);
    None on other databases or before the table was first analyzed."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


class CappedCountPaginator(Paginator):
    """Counts at most `cap` + 1 matching rows (a LIMITed subquery), never the whole table.

    Beyond the cap an unfiltered list on PostgreSQL takes the table's estimate instead
    (`estimated`); a filtered one says "more than `cap`" (`capped`). Templates show
    `count_label`, which says which of the three the number is.
    """

    cap = 10_000
    object_list: QuerySet  # the changelist's queryset, not any sequence

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by().values("pk")[: self.cap + 1].count()
        if counted <= self.cap:
            return counted
        estimate = (
            None if self.object_list.query.has_filters() else table_estimate(self.object_list)
        )
        return max(estimate or 0, self.cap + 1)

    @property
    def capped(self) -> bool:
        return self.count > self.cap

    @cached_property
    def estimated(self) -> bool:
        return self.capped and self.count > self.cap + 1

    @property
    def count_label(self) -> str:
        if self.estimated:
            return f"about {self.count:,}"
        if self.capped:
            return f"more than {self.cap:,}"
        return f"{self.count:,}"


def page_row_count(related: QuerySet, *, to: str) -> Coalesce:
    """How many rows of `related` point at each listed row through `to`, as a correlated
    subquery: it runs for the page's rows only, unlike a GROUP BY over the whole table."""
    counted = (
        related.filter(**{to: OuterRef("pk")})
        .order_by()
        .values(to)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted), 0)

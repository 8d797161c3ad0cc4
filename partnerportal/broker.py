"""django-q2's ORM broker (the embedded default), handing tasks out in the order they were
queued.

Its own query has no ORDER BY, so PostgreSQL returns queued tasks in the order their rows lie
in the table: a task queued late but stored in space freed by done ones, or a retried task's
updated row, could be handed out before tasks queued long before it. A batch's chunk tasks
then waited behind the dashboard-notification tasks its first pushes queued. Redis, the
production broker, is a FIFO list already.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django_q.brokers.orm import ORM
from django_q.models import OrmQ


class FifoOrmBroker(ORM):
    """The ORM broker, oldest task first."""

    @staticmethod
    def get_connection(list_key: str | None = None) -> QuerySet[OrmQ]:
        return ORM.get_connection(list_key).order_by("id")

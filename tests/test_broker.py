"""The embedded ORM broker hands tasks out oldest first, on PostgreSQL as on SQLite."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from partnerportal.broker import FifoOrmBroker


@pytest.mark.django_db(transaction=True)
def test_it_hands_tasks_out_in_the_order_they_were_queued(monkeypatch):
    monkeypatch.setattr(Conf, "BULK", 10)
    broker = get_broker("pp-test-fifo")
    assert isinstance(broker, FifoOrmBroker)
    ids = [broker.enqueue(f"task-{n}") for n in range(6)]
    # The first two handed out before and given back (their lease ended): their rows are
    # rewritten, so on PostgreSQL they now lie after the others in the table.
    OrmQ.objects.filter(pk__in=ids[:2]).update(lock=timezone.now())
    if connection.vendor == "postgresql":
        stored = list(OrmQ.objects.filter(key="pp-test-fifo").values_list("pk", flat=True))
        assert stored == ids[2:] + ids[:2]  # what a query without ORDER BY returns
    assert [pk for pk, _ in broker.dequeue()] == ids


def test_it_is_the_broker_of_the_embedded_default(settings):
    assert settings.Q_CLUSTER["broker_class"] == "partnerportal.broker.FifoOrmBroker"
    assert issubclass(FifoOrmBroker, ORM)

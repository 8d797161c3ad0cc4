"""Row locks of the claim and record transactions: what a locked rotation brings along."""

from __future__ import annotations

from django.db import transaction

from rotation import services
from rotation.audit import audit_context
from rotation.models import Rotation, RotationBatch
from rotation.services.locks import rotation_lock, rotations_lock, rotations_relock
from tests.conftest import make_installation


def test_it_locks_a_chunk_in_id_order_with_one_installation_and_batch_for_all(
    alice, django_assert_num_queries
):
    installation = make_installation(resources=3)
    ids = list(installation.resources.values_list("pk", flat=True))
    batch = services.rotation_request(resource_ids=ids, actor=alice, reason="leak", ticket="T-1")
    rotation_ids = sorted(batch.rotations.values_list("pk", flat=True), reverse=True)

    with transaction.atomic(), django_assert_num_queries(3):
        rotations = rotations_lock(rotation_ids)
        # What the pipeline reads of them comes along: no query per rotation.
        seen = [
            (r.resource.vercel_id, r.resource.installation.vercel_id, audit_context(r))
            for r in rotations
        ]
    assert [r.pk for r in rotations] == sorted(rotation_ids)
    assert {r.resource.installation for r in rotations} == {installation}
    assert len({id(r.resource.installation) for r in rotations}) == 1
    assert len({id(r.batch) for r in rotations}) == 1
    assert all(context == {"reason": "leak", "ticket": "T-1"} for _, _, context in seen)


def test_it_leaves_the_refused_resources_of_a_batch_unread(alice, installation):
    resource = installation.resources.get()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    # A request that turned many resources away: decoding that list per locked rotation would
    # cost more than the rest of the chunk.
    RotationBatch.objects.filter(pk=batch.pk).update(
        refused=[{"resource": n, "reason": "already rotating"} for n in range(5000)]
    )
    rotation = batch.rotations.get()
    with transaction.atomic():
        locked = rotations_lock([rotation.pk])[0]
        single = rotation_lock(rotation.pk)
    for found in (locked, single):
        assert "refused" in found.batch.get_deferred_fields()
        assert len(found.batch.refused) == 5000  # still there for whoever asks


def test_it_asks_nothing_for_no_ids(django_assert_num_queries, db):
    with transaction.atomic(), django_assert_num_queries(0):
        assert rotations_lock([]) == []


def test_a_relock_reads_the_rotations_again_and_carries_what_the_claim_read(
    alice, django_assert_num_queries
):
    installation = make_installation(resources=3)
    ids = list(installation.resources.values_list("pk", flat=True))
    batch = services.rotation_request(resource_ids=ids, actor=alice, reason="leak", ticket="T-2")
    with transaction.atomic():
        claimed = rotations_lock(list(batch.rotations.values_list("pk", flat=True)))
    cancelled = claimed[1]
    Rotation.objects.filter(pk=cancelled.pk).update(state=Rotation.State.CANCELLED)

    with transaction.atomic(), django_assert_num_queries(1):
        relocked = rotations_relock(list(reversed(claimed)))
        seen = [(r.resource.installation.vercel_id, audit_context(r)) for r in relocked]
    assert [r.pk for r in relocked] == [r.pk for r in claimed]
    # The rows are read again (a cancel in between is seen), the rest is the claim's.
    assert relocked[1].state == Rotation.State.CANCELLED
    assert [id(r.resource) for r in relocked] == [id(r.resource) for r in claimed]
    assert seen == [(installation.vercel_id, {"reason": "leak", "ticket": "T-2"})] * 3

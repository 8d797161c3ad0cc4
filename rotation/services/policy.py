"""Rotation policies: a maximum credential age per product, enforced by a daily run.

A product's policy is its `RotationPolicy` row, else `ROTATION_MAX_AGE_DAYS` (0 = off).
Credentials count from the resource's last completed push, else from its import. A run
requests rotations (batch source "policy", the system as actor, a reason naming the policy)
for the oldest overdue resources without an open rotation, at most
`ROTATION_POLICY_MAX_PER_RUN`, so a backlog reaches Vercel over several days instead of at
once. `rotation_request` still refuses a resource whose rotation opened meanwhile.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import (
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from rotation.models import Installation, Resource, Rotation, RotationBatch, RotationPolicy
from rotation.services.request import rotation_request

logger = logging.getLogger(__name__)


@dataclass
class PolicyRun:
    """What one run found and did."""

    overdue: int = 0  # overdue resources that could be rotated, the cap aside
    requested: list[int] = field(default_factory=list)  # resource ids chosen (within the cap)
    batches: list[int] = field(default_factory=list)
    dry_run: bool = False


def policy_days(product: str) -> int:
    """The maximum credential age of `product` in days (0: no policy)."""
    policy = RotationPolicy.objects.filter(product=product).values_list("max_age_days", flat=True)
    return next(iter(policy), settings.ROTATION_MAX_AGE_DAYS)


def resources_with_credential_age() -> QuerySet[Any]:
    """Resources annotated with `last_push_at`, `credentials_since` and `policy_days`."""
    explicit = RotationPolicy.objects.filter(product=OuterRef("product")).values("max_age_days")
    return Resource.objects.annotate(
        last_push_at=Max("rotations__pushed_at"),
        credentials_since=Coalesce(Max("rotations__pushed_at"), F("created_at")),
        policy_days=Coalesce(
            Subquery(explicit[:1], output_field=IntegerField()),
            Value(settings.ROTATION_MAX_AGE_DAYS),
        ),
    )


def past_policy_q(*, now: datetime | None = None) -> Q:
    """Filter for annotated resources whose credentials are older than their policy allows."""
    now = now or timezone.now()
    policies = dict(RotationPolicy.objects.values_list("product", "max_age_days"))
    condition = Q(pk__in=[])
    for product, days in policies.items():
        if days:
            condition |= Q(product=product, credentials_since__lt=now - timedelta(days=days))
    default = settings.ROTATION_MAX_AGE_DAYS
    if default:
        condition |= ~Q(product__in=list(policies)) & Q(
            credentials_since__lt=now - timedelta(days=default)
        )
    return condition


def credential_ages_overdue_count(*, now: datetime | None = None) -> int:
    """Resources (not removed) whose credentials are past their policy: the dashboard card."""
    return (
        resources_with_credential_age()
        .filter(past_policy_q(now=now))
        .exclude(status=Resource.Status.REMOVED)
        .count()
    )


def policy_reason(product: str, days: int) -> str:
    """The batch reason, naming the policy that asked for it."""
    if RotationPolicy.objects.filter(product=product).exists():
        policy = f"rotation policy of product {product!r}"
    else:
        policy = "default rotation policy (ROTATION_MAX_AGE_DAYS)"
    return f"Credentials older than {days} days under the {policy}."


def rotations_request_overdue(
    *, product: str = "", dry_run: bool = False, now: datetime | None = None
) -> PolicyRun:
    """Request rotations for the oldest overdue resources, at most the per-run cap."""
    open_rotation = Rotation.objects.filter(resource=OuterRef("pk"), state__in=Rotation.OPEN_STATES)
    overdue = (
        resources_with_credential_age()
        .filter(past_policy_q(now=now))
        .filter(status=Resource.Status.READY, installation__status=Installation.Status.ACTIVE)
        .exclude(Exists(open_rotation))
    )
    if product:
        overdue = overdue.filter(product=product)
    run = PolicyRun(overdue=overdue.count(), dry_run=dry_run)
    chosen = list(
        overdue.order_by("credentials_since", "pk").values_list("pk", "product", "policy_days")[
            : settings.ROTATION_POLICY_MAX_PER_RUN
        ]
    )
    run.requested = [pk for pk, _, _ in chosen]
    if dry_run or not chosen:
        return run
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for pk, resource_product, days in chosen:
        groups[(resource_product, days)].append(pk)
    for (resource_product, days), ids in sorted(groups.items()):
        batch = rotation_request(
            resource_ids=ids,
            actor=None,
            reason=policy_reason(resource_product, days),
            source=RotationBatch.Source.POLICY,
        )
        run.batches.append(batch.pk)
    logger.info(
        "policy run: %s overdue, %s requested in %s batches",
        run.overdue,
        len(run.requested),
        len(run.batches),
    )
    return run

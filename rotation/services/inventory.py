"""The inventory check (CONTRACT §8): our resources compared with the list Vercel holds for
each installation, differences reported and, where safe, applied.

Applied: a name or status Vercel reports (Vercel's dashboard is where customers rename and
suspend), and `removed` for a resource Vercel no longer lists. Only reported: a resource
Vercel lists that we do not know, and a changed product (the product picks the credential
provider; staff decide). Nothing is ever deleted. Each installation is listed outside any
transaction and its changes applied in one short transaction of its own, every change
audited; a Vercel error for one installation is recorded in the report and the check goes on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from rotation import vercel
from rotation.audit import AuditAction, actor_may, audit_record, refuse
from rotation.crypto import CryptoError
from rotation.error_text import error_text
from rotation.models import AuditEvent, Installation, InventoryFinding, InventoryReport, Resource

if TYPE_CHECKING:
    import requests

    from rotation.audit import MaybeActor, Origin

logger = logging.getLogger(__name__)
Kind = InventoryFinding.Kind
PERMISSION = "rotation.sync_vercel_resources"
STATUSES = frozenset(Resource.Status.values)


def inventory_check_start(
    *,
    installation_ids: list[int] | None,
    source: str,
    actor: MaybeActor,
    origin: Origin | None,
) -> InventoryReport:
    """Record a check of these installations (None: every active one); `inventory_check_run`
    does it. Staff need the permission; the schedule and an anonymous command (whoever runs
    it holds the server) do not."""
    named = actor is not None or source == InventoryReport.Source.ADMIN
    if named and not actor_may(actor, PERMISSION):
        refuse(
            action=AuditAction.INVENTORY_CHECKED,
            message="You do not have permission to check resources against Vercel.",
            actor=actor,
            origin=origin,
        )
    wanted = None
    if installation_ids is not None:
        wanted = sorted(
            Installation.objects.filter(pk__in=installation_ids).values_list("vercel_id", flat=True)
        )
    with transaction.atomic():
        report = InventoryReport.objects.create(
            source=source,
            requested_by=actor.get_username() if actor is not None else "",
            installations=wanted,
        )
        audit_record(
            action=AuditAction.INVENTORY_CHECKED,
            actor=actor,
            origin=origin,
            details={"report": report.pk, "step": "requested", "installations": wanted},
        )
    return report


def inventory_check_run(
    *, report_id: int, session: requests.Session | None = None
) -> InventoryReport:
    """List each installation's resources on Vercel and reconcile; returns the report."""
    report = InventoryReport.objects.get(pk=report_id)
    if report.finished_at is not None:
        return report  # a second delivery of the task
    installations = Installation.objects.filter(status=Installation.Status.ACTIVE)
    if report.installations is not None:
        installations = installations.filter(vercel_id__in=report.installations)
    for installation in installations.order_by("vercel_id"):
        try:
            listed = vercel.list_resources(
                installation_id=installation.vercel_id,
                token=installation.access_token(),
                session=session,
            )
        except (vercel.VercelError, CryptoError) as exc:
            _record_error(report, installation, exc)
            continue
        _reconcile(report, installation, listed)
    with transaction.atomic():
        report.refresh_from_db()
        report.finished_at = timezone.now()
        report.save(update_fields=["finished_at"])
        audit_record(
            action=AuditAction.INVENTORY_CHECKED,
            actor_username=report.requested_by,
            details={
                "report": report.pk,
                "step": "done",
                "source": report.source,
                "installations_checked": report.installations_checked,
                "installations_failed": report.installations_failed,
                "differences": report.differences,
                "changes_applied": report.changes_applied,
            },
        )
    return report


def inventory_check(
    *,
    installation_ids: list[int] | None,
    source: str,
    actor: MaybeActor,
    origin: Origin | None,
    session: requests.Session | None = None,
) -> InventoryReport:
    """Start and run a check at once (the command and the schedule)."""
    report = inventory_check_start(
        installation_ids=installation_ids, source=source, actor=actor, origin=origin
    )
    return inventory_check_run(report_id=report.pk, session=session)


def _record_error(report: InventoryReport, installation: Installation, exc: Exception) -> None:
    message = error_text(exc)
    logger.warning("inventory check of %s failed: %s", installation.vercel_id, message)
    with transaction.atomic():
        InventoryFinding.objects.create(
            report=report,
            installation_ref=installation.vercel_id,
            kind=Kind.ERROR,
            message=message,
        )
        InventoryReport.objects.filter(pk=report.pk).update(
            installations_failed=F("installations_failed") + 1
        )
        audit_record(
            action=AuditAction.INVENTORY_INSTALLATION_FAILED,
            outcome=AuditEvent.Outcome.FAILURE,
            installation=installation,
            details={"report": report.pk, "error": message},
        )


def _reconcile(
    report: InventoryReport, installation: Installation, listed: list[vercel.VercelResource]
) -> None:
    theirs = {item.partner_id: item for item in listed}
    findings: list[InventoryFinding] = []
    applied = 0
    with transaction.atomic():
        ours = {
            resource.vercel_id: resource
            for resource in Resource.objects.select_for_update().filter(installation=installation)
        }

        def found(kind: str, resource_id: str, mine: str, vercels: str, **extra: object) -> None:
            findings.append(
                InventoryFinding(
                    report=report,
                    installation_ref=installation.vercel_id,
                    resource_ref=resource_id,
                    kind=kind,
                    ours=mine[:200],
                    theirs=vercels[:200],
                    **extra,
                )
            )

        for resource_id, listed_item in sorted(theirs.items()):
            if resource_id not in ours:
                found(
                    Kind.UNKNOWN, resource_id, "", f"{listed_item.name} ({listed_item.product_id})"
                )
        for resource_id, resource in sorted(ours.items()):
            item = theirs.get(resource_id)
            changes: dict[str, tuple[str, str]] = {}
            if item is None:
                if resource.status != Resource.Status.REMOVED:
                    changes["status"] = (resource.status, Resource.Status.REMOVED)
                    found(Kind.MISSING, resource_id, resource.status, "", applied=True)
            else:
                if item.name != resource.name:
                    changes["name"] = (resource.name, item.name)
                    found(Kind.NAME, resource_id, resource.name, item.name, applied=True)
                if item.product_id != resource.product:
                    found(
                        Kind.PRODUCT,
                        resource_id,
                        resource.product,
                        item.product_id,
                        message="Not applied: the product picks the credential provider.",
                    )
                if item.status is not None and item.status != resource.status:
                    known = item.status in STATUSES
                    if known:
                        changes["status"] = (resource.status, item.status)
                    found(
                        Kind.STATUS,
                        resource_id,
                        resource.status,
                        item.status,
                        applied=known,
                        message="" if known else "Not applied: a status we do not know.",
                    )
            if changes:
                for name, (_, new) in changes.items():
                    setattr(resource, name, new)
                resource.save(update_fields=[*changes, "updated_at"])
                applied += 1
                audit_record(
                    action=AuditAction.INVENTORY_RESOURCE_UPDATED,
                    resource=resource,
                    installation=installation,
                    details={
                        "report": report.pk,
                        "changes": {
                            name: {"from": old, "to": new} for name, (old, new) in changes.items()
                        },
                        "missing_on_vercel": item is None,
                    },
                )
        InventoryFinding.objects.bulk_create(findings)
        InventoryReport.objects.filter(pk=report.pk).update(
            installations_checked=F("installations_checked") + 1,
            differences=F("differences") + len(findings),
            changes_applied=F("changes_applied") + applied,
        )

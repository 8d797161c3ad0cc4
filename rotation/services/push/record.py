"""Recording a group of accepted pushes: the pending version becomes current."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db import transaction
from django.utils import timezone

from rotation.audit import AuditAction, audit_context, audit_record_many
from rotation.models import CredentialVersion, Rotation
from rotation.providers.retirement import versions_mark_retiring, versions_retire_after_commit
from rotation.redeploy.begin import rotations_redeploy_begin
from rotation.redeploy.notification import (
    SET,
    notification_fields,
    notifications_set_after_commit,
)
from rotation.services.locks import rotations_relock
from rotation.services.push.claim import Push, rotation_fail_locked
from rotation.vercel.endpoints import endpoint_in_effect

State = Rotation.State
Stage = CredentialVersion.Stage


def rotations_succeed(pushes: list[Push], pushed: set[int] | None = None) -> dict[int, str]:
    """pending -> current, current -> previous, for a group; then redeploy tracking begins.
    The ids it finalized are added to `pushed` once committed."""
    with transaction.atomic():
        rotations = {
            rotation.pk: rotation for rotation in rotations_relock([p.rotation for p in pushes])
        }
        states = {pk: rotation.state for pk, rotation in rotations.items()}
        live = [p for p in pushes if states.get(p.rotation.pk) == State.PUSHING]
        stages: dict[int, dict[str, CredentialVersion]] = defaultdict(dict)
        for version in CredentialVersion.objects.select_for_update().filter(
            resource_id__in=[p.rotation.resource_id for p in live],
            stage__in=[Stage.PENDING, Stage.CURRENT, Stage.PREVIOUS],
        ):
            stages[version.resource_id][version.stage] = version
        done: list[tuple[Rotation, CredentialVersion, CredentialVersion | None]] = []
        superseded: dict[int, CredentialVersion] = {}
        for push in live:
            rotation = rotations[push.rotation.pk]
            held = stages[rotation.resource_id]
            pending = held.get(Stage.PENDING)
            if pending is None or pending.pk != push.pending.pk:
                states[rotation.pk] = rotation_fail_locked(
                    rotation,
                    status=None,
                    code="pending_changed",
                    message="The pending credentials changed during the push; retry.",
                )
                continue
            previous = held.get(Stage.PREVIOUS)
            if previous is not None:
                # Two generations old: nothing may use it once the new set is live.
                superseded[rotation.pk] = previous
            done.append((rotation, pending, held.get(Stage.CURRENT)))
        # First out of `previous`, so the current version may take its place; expired at the
        # provider after the commit.
        versions_retire_after_commit(
            versions_mark_retiring(by_rotation=superseded, why="superseded twice")
        )
        now = timezone.now()
        CredentialVersion.objects.filter(
            pk__in=[current.pk for _, _, current in done if current is not None]
        ).update(stage=Stage.PREVIOUS, stage_changed_at=now)
        CredentialVersion.objects.filter(pk__in=[pending.pk for _, pending, _ in done]).update(
            stage=Stage.CURRENT, stage_changed_at=now
        )
        cleared = {"last_error": "", "last_error_code": "", "last_error_status": None}
        # Written by redeploy begin's statement below, with its deadline and reminder fields;
        # the dashboard notification is asked for there too (its tasks are queued after the
        # commit).
        written = {
            "state": State.AWAITING_REDEPLOY,
            "pushed_at": now,
            "state_changed_at": now,
            "next_attempt_at": None,
            **cleared,
            **notification_fields(SET),
        }
        entries: list[dict[str, Any]] = []
        for rotation, pending, current in done:
            rotation.state = State.AWAITING_REDEPLOY
            rotation.pushed_at = rotation.state_changed_at = now
            rotation.next_attempt_at = None
            for name, value in cleared.items():
                setattr(rotation, name, value)
            entries.append(
                {
                    "action": AuditAction.ROTATION_PUSHED,
                    "resource": rotation.resource,
                    "rotation": rotation,
                    "details": {
                        "version": str(pending.pk),
                        "previous_version": str(current.pk) if current else None,
                        "retiring_version": (
                            str(superseded[rotation.pk].pk) if rotation.pk in superseded else None
                        ),
                        "attempts": rotation.attempts,
                        "endpoint": endpoint_in_effect(rotation.resource.installation.endpoint),
                    },
                    **audit_context(rotation),
                }
            )
            states[rotation.pk] = State.AWAITING_REDEPLOY
        # One event per pushed rotation: what redeploy tracking planned goes in its details.
        plans = rotations_redeploy_begin(
            rotations=[rotation for rotation, _, _ in done], also=written
        )
        for entry, plan in zip(entries, plans, strict=True):
            entry["details"]["redeploy"] = plan
        # Last: on PostgreSQL the audit chain's lock is held from here to the commit.
        audit_record_many(entries)
        notifications_set_after_commit([rotation.pk for rotation, _, _ in done])
    if pushed is not None:
        pushed.update(rotation.pk for rotation, _, _ in done)
    return states

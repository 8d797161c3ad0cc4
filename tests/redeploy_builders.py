"""Builders for redeploy tests: a rotation already pushed, made with the ORM (no services)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import OrmQ

from rotation.models import ConnectedProject, CredentialVersion, Resource, Rotation, RotationBatch
from rotation.redeploy import rotations_redeploy_begin

DATA = Path(__file__).parent / "data"
OLD_SECRETS = [{"name": "DATABASE_URL", "value": "postgres://old-user:old-pass@db/x"}]
NEW_SECRETS = [{"name": "DATABASE_URL", "value": "postgres://new-user:new-pass@db/x"}]


def connect(resource: Resource, *project_ids: str, at: datetime | None = None) -> None:
    for project_id in project_ids:
        ConnectedProject.objects.create(
            resource=resource,
            project_id=project_id,
            source=ConnectedProject.Source.WEBHOOK,
            connected_at=at or timezone.now() - timedelta(days=30),
        )


def make_version(resource: Resource, stage: str, secrets: list[dict], rotation=None):
    version = CredentialVersion(resource=resource, stage=stage, rotation=rotation)
    version.seal(secrets)
    version.save()
    return version


def make_pushed_rotation(
    resource: Resource, *, emergency: bool = False, pushed_at: datetime | None = None
) -> Rotation:
    """What rotation_push leaves behind: old version previous, new one current, waiting."""
    pushed_at = pushed_at or timezone.now()
    with transaction.atomic():
        batch = RotationBatch.objects.create(reason="test", emergency=emergency)
        rotation = Rotation.objects.create(
            batch=batch,
            resource=resource,
            emergency=emergency,
            state=Rotation.State.AWAITING_REDEPLOY,
            state_changed_at=pushed_at,
            pushed_at=pushed_at,
        )
        make_version(resource, CredentialVersion.Stage.PREVIOUS, OLD_SECRETS)
        make_version(resource, CredentialVersion.Stage.CURRENT, NEW_SECRETS, rotation=rotation)
        rotations_redeploy_begin(rotations=[rotation])
    rotation.refresh_from_db()
    return rotation


def run_queued(func: str) -> list:
    """Take the tasks queued for `func` off the ORM broker and run them, as a worker would."""
    results = []
    for entry in OrmQ.objects.order_by("id"):
        task = entry.task
        if task["func"] == func:
            entry.delete()
            results.append(import_string(func)(*task["args"], **task["kwargs"]))
    return results


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def event(name: str, **changes) -> dict:
    """A sample delivery from tests/data, with top-level and payload fields replaced."""
    data = json.loads((DATA / f"{name}.json").read_text())
    for key, value in changes.items():
        if key in data:
            data[key] = value
        else:
            data["payload"][key] = value
    return data


def deployment_event(
    resource: Resource, project_id: str, at: datetime, event_id: str, **changes
) -> dict:
    return event(
        "deployment.succeeded",
        id=event_id,
        createdAt=int(at.timestamp() * 1000),
        project={"id": project_id},
        deployment={"id": f"dpl_{event_id}"},
        integrations=[
            {
                "installationId": resource.installation.vercel_id,
                "resources": [{"externalResourceId": resource.vercel_id}],
            }
        ],
        **changes,
    )


def post_signed(url: str, payload: dict, secret: str) -> requests.Response:
    """POST a delivery to a running server (e.g. live_server.url + "/webhooks/vercel/")."""
    from rotation.webhooks import sign_webhook

    body = json.dumps(payload).encode()
    return requests.post(
        url,
        data=body,
        headers={
            "content-type": "application/json",
            "x-vercel-signature": sign_webhook(body, secret),
        },
        timeout=10,
    )


ROLLBACK_TASK = "rotation.tasks_redeploy.rotation_rollback_task"
PUSH = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def tick() -> dict[str, int]:
    """One run of the periodic redeploy schedule."""
    from rotation.tasks_redeploy import redeploy_tick

    return redeploy_tick()


def versions_by_stage(resource: Resource) -> dict[str, CredentialVersion]:
    return {v.stage: v for v in resource.credential_versions.all()}


def run_rollback(rotation: Rotation) -> str:
    """What the rollback task does for this rotation."""
    from rotation.services import rotation_rollback_run

    return rotation_rollback_run(rotation_id=rotation.pk)


class ExpiredAtProvider:
    """Reads which versions the provider confirmed expired: stage expired, expiry time set."""

    @staticmethod
    def expired_version_ids() -> list[str]:
        confirmed = CredentialVersion.objects.filter(stage="expired", expired_at__isnull=False)
        return [str(pk) for pk in confirmed.order_by("expired_at").values_list("pk", flat=True)]
